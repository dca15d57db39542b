"""The record of the runs that wrote an output folder (``OUT/run.json``), and the check that a
re-run into it uses the same settings.

A segment run resumes: it skips the recordings already complete in OUT. Had the earlier run
used another model or threshold, the tables would mix two settings with nothing to tell. So
the settings that change results (model, spectrogram, every segment option) are recorded with
the first run, and a later run with others is refused before it does anything, unless it is
told to ``overwrite`` (which deletes the folder's tables and starts afresh). Each run also
appends what it ran on (raybird, torch, Ray and Python versions, the arithmetic requested),
when it started and finished, and its counts. A folder written before records existed has
none; the first run that finds it writes one.
"""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Iterable, Optional

from raybird import __version__
from raybird.io import storage
from raybird.io.tables import write_file

RECORD = "run.json"


def versions() -> dict:
    """raybird's and its main dependencies' versions (from their installed metadata: importing
    Ray is the pipelines' business)."""
    from importlib.metadata import version

    return dict(
        raybird=__version__,
        torch=version("torch"),
        ray=version("ray"),
        numpy=version("numpy"),
        python=platform.python_version(),
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read(out: str) -> Optional[dict]:
    fs, root = storage.filesystem(out)
    path = f"{root.rstrip('/')}/{RECORD}"
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)


def _write(out: str, record: dict) -> None:
    data = json.dumps(record, indent=1, sort_keys=True).encode()
    write_file(out, RECORD, lambda path: Path(path).write_bytes(data))


def differences(recorded: dict, settings: dict, prefix: str = "") -> list[str]:
    """``name: recorded -> now`` for every setting that differs (nested dicts flattened). A
    setting the record lacks (added to raybird since that run) that is off now (False, None,
    empty) is no difference: the earlier run had it off too."""
    out = []
    for key in sorted(set(recorded) | set(settings)):
        a, b = recorded.get(key), settings.get(key)
        if key not in recorded and b in (False, None, (), []):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def start(
    out: str, job: str, settings: dict, overwrite: bool = False, tables: Iterable[str] = (), run: Optional[dict] = None
) -> dict:
    """Check ``settings`` against OUT's record (refuse others with ``ValueError``, unless
    ``overwrite``: then the ``tables`` folders and the record are deleted first), record this
    run's start and return the record for :func:`finish`."""
    record = read(out)
    if record is not None and overwrite:
        fs, root = storage.filesystem(out)
        for name in [*tables, RECORD]:
            path = f"{root.rstrip('/')}/{name}"
            if fs.exists(path):
                fs.rm(path, recursive=True)
        record = None
    if record is not None:
        changed = (
            differences(record["settings"], settings)
            if record.get("job") == job
            else [f"job: {record.get('job')!r} -> {job!r}"]
        )
        if changed:
            raise ValueError(
                f"{out} holds the output of a {record.get('job')} run with other settings ("
                + "; ".join(changed)
                + "): resuming would mix them. Use another --out, or "
                "--overwrite to delete that output and start again"
            )
    record = begin(job, settings, run, record)
    _write(out, record)
    return record


def begin(job: str, settings: dict, run: Optional[dict] = None, record: Optional[dict] = None) -> dict:
    """A run's start, appended to ``record`` (a new one by default), not written yet."""
    record = record or dict(job=job, settings=settings, runs=[])
    record["runs"].append(dict(started=_now(), finished=None, versions=versions(), run=run or {}, counts=None))
    return record


def finish(out: str, record: dict, counts: dict) -> None:
    """Record the end of the run :func:`start` or :func:`begin` began, with its counts."""
    record["runs"][-1].update(finished=_now(), counts=counts)
    _write(out, record)
