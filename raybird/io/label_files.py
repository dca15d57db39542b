"""Finding the label file of a recording: the side-file conventions (:data:`LABEL_PATTERNS`) and
the reader for each kind."""

from __future__ import annotations

import fnmatch
import functools
import glob
import io
import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional

import soundfile as sf

from raybird.io.labels import (
    CROWSETTA_FORMATS,
    Labels,
    _read_local,
    read_audacity,
    read_bsd_mask,
    read_crowsetta,
    read_kanto_json,
    read_raven,
    read_sonic_visualiser,
    read_truth,
)
from raybird.io.storage import MEMBER_SEP

# (path relative to the recording's folder, folder name the recording must sit in, kind).
# First match wins.
LABEL_PATTERNS: tuple[tuple[str, Optional[str], str], ...] = (
    ("{stem}.truth.npz", None, "truth"),
    ("{stem}.Table.*.selections.txt", None, "raven"),
    ("{stem}.selections.txt", None, "raven"),
    ("{stem}.txt", None, "audacity"),
    ("../JSON/{stem}.JSON", "WAV", "kanto"),
    ("../JSON/{stem}.json", "WAV", "kanto"),
    ("{stem}.xml", None, "sonic_visualiser"),
    ("{stem}.TextGrid", None, "textgrid"),
    ("{stem}.textgrid", None, "textgrid"),
    ("{name}.not.mat", None, "notmat"),
    ("{stem}.csv", None, "simple_seq"),
    ("../Masks/{stem}.png", "Raw_audios", "bsd"),
)
_READERS = {
    "truth": read_truth,
    "raven": read_raven,
    "audacity": read_audacity,
    "sonic_visualiser": read_sonic_visualiser,
    **{kind: functools.partial(read_crowsetta, fmt=kind) for kind in CROWSETTA_FORMATS},
}


def _split_scheme(key: str) -> tuple[str, str]:
    return ("s3://", key[5:]) if key.startswith("s3://") else ("", key)


def _candidate(audio_key: str, rel: str) -> str:
    scheme, path = _split_scheme(audio_key)
    return scheme + posixpath.normpath(posixpath.join(posixpath.dirname(path), rel))


def _normalised(key: str) -> str:
    scheme, path = _split_scheme(key)
    return scheme + posixpath.normpath(path)


def load_labels(
    source: str, side_files: Iterable[str], read: Callable[[str], bytes], label_column: Optional[str] = None
) -> Optional[Labels]:
    """Labels of the recording ``source`` (a path, ``s3://`` URI or ``archive::member``), looked
    up among ``side_files`` (in the same name space as ``read``: full URIs, or member names for
    an archive) by :data:`LABEL_PATTERNS`, on their own grid (drawn per tile by
    :mod:`raybird.io.label_masks`). None when no pattern matches. ``label_column``: the Raven
    column holding each label's text (:func:`raybird.io.labels.read_raven`)."""
    key = source.split(MEMBER_SEP, 1)[1] if MEMBER_SEP in source else source
    name = PurePosixPath(_split_scheme(key)[1])
    side = {_normalised(s): s for s in side_files}
    for rel, parent, kind in LABEL_PATTERNS:
        if parent is not None and name.parent.name != parent:
            continue
        label_dir = posixpath.dirname(_candidate(key, rel.format(stem=name.stem, name=name.name)))
        base = posixpath.basename(rel).format(stem=glob.escape(name.stem), name=glob.escape(name.name))
        hits = sorted(
            s for s in side if posixpath.dirname(s) == label_dir and fnmatch.fnmatchcase(posixpath.basename(s), base)
        )
        if not hits:
            continue
        path = side[hits[0]]
        if kind == "bsd":
            return read_bsd_mask(_candidate(key, ".."), name.stem, lambda p: read(side.get(_normalised(p), p)))
        if kind == "kanto":
            return read_kanto_json(path, read(path), _duration(key, read))
        if kind == "raven":
            return read_raven(path, read(path), label_column)
        return _READERS[kind](path, read(path))
    return None


def _duration(key: str, read: Callable[[str], bytes]) -> Optional[float]:
    """The recording's real duration, or None when it cannot be read through ``read``."""
    try:
        return sf.info(io.BytesIO(read(key))).duration
    except (KeyError, OSError, RuntimeError, sf.LibsndfileError):
        return None


def find_labels(audio_path: str | Path) -> Optional[Labels]:
    """Labels of a local audio file by the conventions of :data:`LABEL_PATTERNS`, or None."""
    audio_path = os.path.abspath(audio_path)
    folder, stem = os.path.dirname(audio_path), Path(audio_path).stem
    name = glob.escape(os.path.basename(audio_path))
    side = [
        os.path.normpath(p)
        for rel, _, _ in LABEL_PATTERNS
        for p in glob.glob(os.path.join(glob.escape(folder), rel.format(stem=glob.escape(stem), name=name)))
    ]
    return load_labels(audio_path, side, _read_local)
