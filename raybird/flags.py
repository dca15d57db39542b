"""Command-line flags declared on config dataclasses. Each command's settings are one dataclass,
kept beside the code they configure; a field's default and help are written once, in its
:func:`flag`, and :mod:`raybird.cli` builds the command's parser from them (:func:`add_flags`)
and the config from the parsed arguments (:func:`from_args`)."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, field, fields
from typing import Any, Callable, Optional, Sequence


def flag(
    default: Any = MISSING,
    help: str = "",
    *,
    name: Optional[str] = None,
    short: Optional[str] = None,
    positional: bool = False,
    nargs: Optional[str] = None,
    choices: Optional[Sequence] = None,
    parse: Optional[Callable[[str], Any]] = None,
    metavar: Optional[str] = None,
):
    """A dataclass field that is also a flag: ``--field-name`` unless ``name`` says otherwise; a
    field without a default is a required flag (or a positional argument); a bool is a switch;
    ``parse`` turns the text into the value (default: the default's type)."""
    meta = dict(help=help, name=name, short=short, positional=positional, nargs=nargs, choices=choices, parse=parse)
    meta["metavar"] = metavar
    return field(default=default, metadata={"flag": meta})


def off_or_float(text: str) -> Optional[float]:
    """A number, or ``off`` (None): for settings that can be switched off."""
    return None if text == "off" else float(text)


def add_flags(parser: argparse.ArgumentParser, config: type) -> None:
    """One argument per field of ``config`` declared with :func:`flag`."""
    for f in fields(config):
        m = f.metadata.get("flag")
        if m is None:
            continue
        kw: dict[str, Any] = dict(help=m["help"])
        if m["positional"]:
            names = [f.name]
        else:
            names = [n for n in (m["short"], m["name"] or "--" + f.name.replace("_", "-")) if n]
            kw["dest"] = f.name
            if f.default is MISSING:
                kw["required"] = True
            else:
                kw["default"] = f.default
        if isinstance(f.default, bool):
            kw["action"] = "store_true"
        else:
            parse = m["parse"] or (type(f.default) if isinstance(f.default, (int, float, str)) else None)
            kw.update({k: v for k, v in (("type", parse), ("nargs", m["nargs"]), ("choices", m["choices"])) if v})
            if m["metavar"] or not (m["positional"] or m["choices"]):
                kw["metavar"] = m["metavar"] or names[-1].lstrip("-").upper().replace("-", "_")
        parser.add_argument(*names, **kw)


def from_args(config: type, args: argparse.Namespace):
    """The ``config`` dataclass filled from parsed arguments (its fields without a flag keep their defaults)."""
    return config(**{f.name: getattr(args, f.name) for f in fields(config) if "flag" in f.metadata})
