"""Reference labels for evaluation: found next to the audio the way ingest finds them, or named
directly, and matched to predicted recordings by source or stem (:class:`ReferenceIndex`)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Iterable, Iterator, Optional, Sequence

from raybird.evaluation.scores import mask_events
from raybird.io import label_files, storage
from raybird.io.labels import Box, GridMask, Labels

_MASK_SUFFIXES = (".npz", ".png")  # label files that are pixel masks, not boxes


@dataclass
class Reference:
    """A recording's labels: ``pixels`` for the pixel metrics, ``events`` for the event metrics.
    ``source`` is the audio URI, or the label file when the reference was named directly."""

    source: str
    stem: str
    pixels: Labels
    events: list[Box]


def _stem(source: str) -> str:
    name = source.split(storage.MEMBER_SEP, 1)[-1]
    return PurePosixPath(name.replace("\\", "/")).stem


def _reference(
    source: str, side: list[str], read: Callable[[str], bytes], events_from: str = "labels"
) -> Optional[Reference]:
    pixels = label_files.load_labels(source, side, read)
    if pixels is None:
        return None
    events = pixels
    if isinstance(pixels, GridMask):
        boxes = None
        if events_from == "labels":
            boxes = label_files.load_labels(source, [s for s in side if not s.lower().endswith(_MASK_SUFFIXES)], read)
        events = boxes if isinstance(boxes, list) else mask_events(pixels)
    return Reference(source, _stem(source), pixels, events)


def _pattern(rel_name: str) -> re.Pattern:
    parts = re.split(r"(\{stem\}|\*)", rel_name)
    return re.compile("".join("(?P<stem>.+)" if p == "{stem}" else ".*" if p == "*" else re.escape(p) for p in parts))


def label_file_reference(path: str, events_from: str = "labels") -> Reference:
    """The reference held by one label file named directly, by the conventions of
    :data:`raybird.io.label_files.LABEL_PATTERNS` read backwards (``XC1.Table.1.selections.txt`` is
    recording ``XC1``; ``JSON/<stem>.JSON`` belongs to ``WAV/<stem>.wav``)."""
    scheme = "s3://" if path.startswith("s3://") else ""
    folder, name = posixpath.split(path[len(scheme) :])
    for rel, parent, _kind in label_files.LABEL_PATTERNS:
        rel_dir, rel_name = posixpath.split(rel)
        m = _pattern(rel_name).fullmatch(name)
        if not m or (rel_dir and posixpath.basename(folder) != posixpath.basename(rel_dir)):
            continue
        audio_dir = posixpath.join(posixpath.dirname(folder), parent) if rel_dir else folder
        ref = _reference(f"{scheme}{audio_dir}/{m['stem']}.wav", [path], storage.read_bytes, events_from)
        if ref is not None:
            return Reference(path, ref.stem, ref.pixels, ref.events)
    raise ValueError(f"{path}: not a label file name raybird knows (see raybird.io.label_files.LABEL_PATTERNS)")


def _archive_references(uri: str, events_from: str) -> Iterator[Reference]:
    side, members = {}, []
    for name, data in storage.iter_archive(uri):
        if storage.is_hidden(name) or isinstance(data, Exception):
            continue
        if storage.is_side_file(name):
            side[name] = data
        else:
            members.append(name)
    for name in members:
        ref = _reference(f"{uri}{storage.MEMBER_SEP}{name}", list(side), side.__getitem__, events_from)
        if ref is not None:
            yield ref


def load_references(inputs: Sequence[str], events_from: str = "labels") -> tuple[list[Reference], list[dict]]:
    """References of every labelled recording under ``inputs`` (recordings without labels are
    left out: unlabelled is not "no bird"), and ``{"source", "reason"}`` for label files that
    could not be read. ``events_from="mask"``: a pixel-mask reference's events are its connected
    regions even where a box table lies beside it (what a perfect pixel segmenter would yield)."""
    if events_from not in ("labels", "mask"):
        raise ValueError(f"events_from must be 'labels' or 'mask', got {events_from!r}")
    refs, problems = [], []
    direct = [i for i in inputs if storage.is_side_file(i) and not any(c in i for c in "*?[")]
    for path in direct:
        try:
            refs.append(label_file_reference(path, events_from))
        except (ValueError, OSError) as e:
            problems.append(dict(source=path, reason=str(e)))
    audio_inputs = [i for i in inputs if i not in direct]
    for unit in storage.discover(audio_inputs) if audio_inputs else []:
        try:
            if unit.kind == "archive":
                refs += list(_archive_references(unit.uri, events_from))
            else:
                ref = _reference(unit.uri, unit.side_files, storage.read_bytes, events_from)
                refs += [ref] if ref is not None else []
        except (ValueError, KeyError, OSError) as e:
            problems.append(dict(source=unit.uri, reason=str(e)))
    return refs, problems


class ReferenceIndex:
    """Pairs predicted recordings with references: the same source URI first; then, for the
    rest, by file stem, where exactly one reference left and exactly one such recording share
    the stem (so ``a/x.wav`` is not scored against ``b/x.wav``'s labels when ``b/x.wav`` has its
    own prediction)."""

    def __init__(self, refs: Iterable[Reference]):
        self.refs = list(refs)
        self.by_source = {r.source: r for r in self.refs}
        self.by_stem: dict[str, list[Reference]] = {}
        for r in self.refs:
            self.by_stem.setdefault(r.stem, []).append(r)

    def assign(self, sources: Iterable[str]) -> dict[str, tuple[Optional[Reference], str]]:
        """``{source: (reference, "")}``, or ``(None, why not)``."""
        sources = list(dict.fromkeys(sources))
        out = {s: (self.by_source[s], "") for s in sources if s in self.by_source}
        taken = {id(ref) for ref, _ in out.values()}
        rest: dict[str, list[str]] = {}
        for s in sources:
            if s not in out:
                rest.setdefault(_stem(s), []).append(s)
        for stem, group in rest.items():
            free = [r for r in self.by_stem.get(stem, []) if id(r) not in taken]
            if len(free) == 1 and len(group) == 1:
                out[group[0]] = (free[0], "")
                continue
            why = (
                "no reference"
                if stem not in self.by_stem
                else f"the references with stem {stem!r} belong to other sources"
                if not free
                else f"{len(free)} references with stem {stem!r}"
                if len(free) > 1
                else f"{len(group)} predicted recordings with stem {stem!r}"
            )
            out.update({s: (None, why) for s in group})
        return out
