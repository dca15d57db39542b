"""Evaluation: a segment run's predictions (``masks/`` + ``segments/``) against reference labels.

**Which reference belongs to which prediction.** References are found the way ingest finds
labels: ``--ref`` takes what ``raybird segment`` takes (folders, globs, archives, ``s3://``
prefixes, manifests) and each recording's labels are looked up next to it
(:func:`raybird.io.labels.load_labels`); label files can also be named directly (a Raven table,
``<stem>.truth.npz``, ``JSON/<stem>.JSON``, ``Masks/<stem>.png`` ...), for predictions made on
audio that lives elsewhere. A predicted recording is matched to a reference by its ``source``
URI when that is the same recording, else by file stem where that is unambiguous
(:class:`ReferenceIndex`). Predictions without a reference, references without a prediction
and referenced recordings the segment run failed on are listed in the report, not scored.

**Pixel metrics** (:func:`evaluate_masks`, :mod:`raybird.training.metrics`): the reference is drawn onto
the prediction's grid (its ``spec_config``) with :func:`raybird.io.labels.label_mask`; foreground
IoU, mean IoU, Dice and pixel accuracy. Time-only references are full-band columns there.
:func:`error_anatomy` sorts the pixel errors: within ``EDGE_PX`` pixels of the other mask (a
boundary traced a little differently), in regions the other mask does not touch (a call missed,
a false alarm), or neither (a region found in part); ``iou_edge_tolerant`` is the IoU with the
first kind forgiven, how much of the shortfall is where the edges are drawn.

**Event metrics.** References with frequencies are matched to predicted segments one-to-one by
time-frequency box IoU >= ``iou`` (:func:`match_events`); time-only references (Audacity,
time-only Raven rows) by onset and offset both within ``tolerance_s`` (:func:`match_onsets`, in
the manner of ``mir_eval.transcription``), the predictions first projected onto the time axis (overlapping
segments merged: a time-only label cannot tell two bands of one call apart). Both maximise the
*number* of matched pairs (maximum bipartite matching, as mir_eval does), closeness only
breaking ties. Reference events are the label boxes; a pixel-mask reference (synthetic truth,
BirdSoundsDenoising) uses the box table next to it when there is one (the synthetic Raven
table: one box per call, all harmonics inside), else the mask's 8-connected regions, boxed like
the segment job's (``events_from="mask"`` always takes the regions: a perfect pixel mask then
scores F1 1, whereas against per-call boxes the separate regions of a call's harmonics count
as misses).
``detected`` counts the reference events that some prediction overlaps at all: a lenient
recall for coarse labels (one box per song) that IoU matching cannot credit. Matched, covered
and detected events are also counted per reference label (:func:`label_counts`, pooled by
:func:`pool_labels`): recall per species or call type, whatever the label files name.

**Coverage** (:func:`coverage`), for coarse labels: a reference event is *covered* when the
predictions overlapping it in frequency cover at least ``min_cover`` (default half) of its time
span, and a prediction is *covered* when the reference events overlapping it in frequency cover
that much of its span (time-only references: time alone). ``covered / n_ref`` is a recall that a
whole-song box earns from the song's syllables, and ``pred_covered / n_pred`` the matching
precision: a prediction mostly outside every labelled box is a false alarm. Not one-to-one, so
for tight per-call labels the IoU and onset matching above remain the measure.

**The field's measures** (:mod:`raybird.evaluation.field_scores`, ``field`` in every row and in the pooled
scores): frame precision/recall/F1 on 10-ms frames, segment F1 with onset and offset within
20 ms, onset F1 within 10 ms, median onset/offset errors, and box recall/precision (a
prediction at least half inside a label), the measures published segmenters report.

**Pooling.** Per recording and channel, and pooled: confusion counts summed (micro average),
TP/FP/FN summed. "Nothing there, nothing found" scores 1 (as in :mod:`raybird.training.metrics`).
The report is a JSON file (settings, pooled scores, per-recording rows and the lists above) and
a Parquet table of the per-recording rows (:data:`REPORT_SCHEMA`).
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.ndimage

from raybird.dsp.spectrogram import SpecConfig
from raybird.evaluation import field_scores
from raybird.evaluation.field_scores import event_scores, match_events, match_onsets, merge_intervals
from raybird.inference.postprocess import segments_of
from raybird.io import labels, storage
from raybird.io.labels import Box, GridMask, Labels
from raybird.training.metrics import confusion, scores

_MASK_SUFFIXES = (".npz", ".png")  # label files that are pixel masks, not boxes
REPORT_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source", pa.string()),
        ("reference", pa.string()),
        ("channel", pa.int16()),
        ("event_mode", pa.string()),
        ("n_pred", pa.int32()),
        ("n_ref", pa.int32()),
        ("tp", pa.int32()),
        ("fp", pa.int32()),
        ("fn", pa.int32()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("f1", pa.float64()),
        ("detected", pa.int32()),
        ("covered", pa.int32()),
        ("pred_covered", pa.int32()),
        ("px_tp", pa.int64()),
        ("px_fp", pa.int64()),
        ("px_fn", pa.int64()),
        ("px_tn", pa.int64()),
        ("iou", pa.float64()),
        ("miou", pa.float64()),
        ("dice", pa.float64()),
        ("pixel_acc", pa.float64()),
        ("px_fn_edge", pa.int64()),
        ("px_fp_edge", pa.int64()),
        ("px_fn_missed", pa.int64()),
        ("px_fp_invented", pa.int64()),
        ("iou_edge_tolerant", pa.float64()),
        ("model_id", pa.string()),
    ]
)
EDGE_PX = 2  # an error this close to the other mask (8-neighbour steps) counts as a boundary error
_EIGHT = np.ones((3, 3), bool)


# ---- metrics ------------------------------------------------------------------------------------
def evaluate_masks(pred_mask, ref_mask, valid=None) -> dict:
    """Confusion counts ``px_tp, px_fp, px_fn, px_tn`` and the pixel scores of one mask pair."""
    counts = confusion(pred_mask, ref_mask, valid)
    return {**dict(zip(("px_tp", "px_fp", "px_fn", "px_tn"), counts.tolist())), **scores(counts)}


def _pixel_scores(pred_mask, ref_mask) -> dict:
    """:func:`evaluate_masks` and :func:`error_anatomy` of one mask pair."""
    m = {**evaluate_masks(pred_mask, ref_mask), **error_anatomy(pred_mask, ref_mask)}
    return {**m, "iou_edge_tolerant": _edge_tolerant_iou(m)}


def error_anatomy(pred_mask, ref_mask, edge_px: int = EDGE_PX) -> dict:
    """Where one mask pair's pixel errors lie, in disjoint counts: ``px_fn_edge`` / ``px_fp_edge``
    within ``edge_px`` pixels of the other mask; ``px_fn_missed`` / ``px_fp_invented`` farther,
    in an 8-connected region the other mask does not touch at all. The remaining errors lie
    farther inside regions found only in part."""
    pred, ref = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)

    def near(m):
        # (iterations=0 would mean 'until nothing changes' to scipy)
        return scipy.ndimage.binary_dilation(m, _EIGHT, iterations=edge_px) if m.any() and edge_px > 0 else m

    def untouched(m, other):
        lab, n = scipy.ndimage.label(m, structure=_EIGHT)
        touched = np.zeros(n + 1, bool)
        touched[lab[m & other]] = True
        return m & ~touched[lab]

    near_pred, near_ref = near(pred), near(ref)
    fn, fp = ref & ~pred, pred & ~ref
    return dict(
        px_fn_edge=int((fn & near_pred).sum()),
        px_fp_edge=int((fp & near_ref).sum()),
        px_fn_missed=int((untouched(ref, pred) & ~near_pred).sum()),
        px_fp_invented=int((untouched(pred, ref) & ~near_ref).sum()),
    )


def error_shares(c: dict) -> dict[str, float]:
    """Shares of all pixel errors (FP + FN) of pooled counts ``c``: on ``edges``, in regions
    ``missed`` whole, in ``invented`` regions (false alarms), and the ``rest`` (inside regions
    found in part)."""
    errors = c["px_fp"] + c["px_fn"]
    parts = dict(edges=c["px_fn_edge"] + c["px_fp_edge"], missed=c["px_fn_missed"], invented=c["px_fp_invented"])
    parts["rest"] = errors - sum(parts.values())
    return {k: v / errors if errors else 0.0 for k, v in parts.items()}


def _edge_tolerant_iou(c: dict) -> float:
    far = c["px_fp"] + c["px_fn"] - c["px_fp_edge"] - c["px_fn_edge"]
    return c["px_tp"] / (c["px_tp"] + far) if c["px_tp"] + far else 1.0


def detected_events(pred, ref, time_only: bool) -> np.ndarray:
    """Per reference event: overlapped (in time, and in frequency unless ``time_only``) by any prediction."""
    p, r = np.asarray(pred, float).reshape(-1, 4), np.asarray(ref, float).reshape(-1, 4)
    if not len(p) or not len(r):
        return np.zeros(len(r), bool)
    hit = (p[:, None, 0] < r[None, :, 1]) & (r[None, :, 0] < p[:, None, 1])
    if not time_only:
        hit &= (p[:, None, 2] < r[None, :, 3]) & (r[None, :, 2] < p[:, None, 3])
    return hit.any(axis=0)


def covered_fraction(boxes, others, time_only: bool = False) -> np.ndarray:
    """For each box ``(start_s, end_s, low_hz, high_hz)``, the fraction of its time span covered by
    the union of the spans of ``others`` that overlap it in frequency (any of them if ``time_only``)."""
    a, o = np.asarray(boxes, float).reshape(-1, 4), np.asarray(others, float).reshape(-1, 4)
    out = np.zeros(len(a))
    for i, (t0, t1, f0, f1) in enumerate(a):
        near = (o[:, 0] < t1) & (t0 < o[:, 1])
        if not time_only:
            near &= (o[:, 2] < f1) & (f0 < o[:, 3])
        spans = merge_intervals(np.clip(o[near, :2], t0, t1))
        out[i] = (spans[:, 1] - spans[:, 0]).sum() / (t1 - t0) if t1 > t0 else float(near.any())
    return out


def coverage(pred, ref, min_cover: float = 0.5, time_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(covered, pred_covered)``, per event: reference events whose time span the predictions
    cover by at least ``min_cover``, and predictions the reference events cover by as much (see
    the module docstring)."""
    return (
        covered_fraction(ref, pred, time_only) >= min_cover - 1e-9,
        covered_fraction(pred, ref, time_only) >= min_cover - 1e-9,
    )


def label_counts(
    events: Sequence[Box], matched: np.ndarray, covered: np.ndarray, detected: np.ndarray
) -> dict[str, list[int]]:
    """``{label: [events, matched, covered, detected]}`` of one recording's reference events."""
    out: dict[str, list[int]] = {}
    for box, *flags in zip(events, matched, covered, detected):
        counts = out.setdefault(box.label, [0, 0, 0, 0])
        out[box.label] = [counts[0] + 1] + [n + int(f) for n, f in zip(counts[1:], flags)]
    return out


def mask_events(grid: GridMask, min_duration_s: float = 0.02, min_pixels: int = 10) -> list[Box]:
    """The 8-connected regions of a reference mask as boxes, by the segment job's rules (its box
    convention and, by default, its default minimum duration and size): a perfect mask makes
    exactly these segments."""
    segs = segments_of(grid.mask.astype(np.float32), grid.cfg, 0.5, min_duration_s, min_pixels)
    return [Box(s.start_s + grid.time_shift_s, s.end_s + grid.time_shift_s, s.low_hz, s.high_hz) for s in segs]


def _box_array(boxes: Sequence[Box]) -> np.ndarray:
    return np.array(
        [
            [
                b.begin_s,
                b.end_s,
                b.low_hz if b.low_hz is not None else 0.0,
                b.high_hz if b.high_hz is not None else np.inf,
            ]
            for b in boxes
        ],
        float,
    ).reshape(-1, 4)


def evaluate_recording(
    pred_mask: np.ndarray,
    pred_boxes,
    ref: "Reference",
    cfg: SpecConfig,
    channel: Optional[int] = None,
    iou: float = 0.5,
    tolerance_s: float = 0.05,
    offsets: bool = True,
    min_cover: float = 0.5,
) -> dict:
    """Pixel and event metrics of one recording (channel): ``pred_mask`` ``(rows, frames)`` on
    ``cfg``'s grid from frame 0, ``pred_boxes`` ``(K, 4)`` (start_s, end_s, low_hz, high_hz).
    ``channel`` None: the prediction is of the mixed-down recording, every label applies."""
    ref_mask = labels.label_mask(ref.pixels, cfg, 0, pred_mask.shape[1], channel)
    events = [b for b in ref.events if channel is None or b.channel is None or b.channel == channel]
    pred = np.asarray(pred_boxes, float).reshape(-1, 4)
    field = field_scores.recording_counts(events, pred, (pred_mask.shape[1] - 1) * cfg.frame_s)
    time_only = any(b.low_hz is None or b.high_hz is None for b in events)
    r = _box_array(events)
    if time_only:
        t = merge_intervals(pred[:, :2])
        m = match_onsets(t, r, tolerance_s, offsets)
        pred = np.c_[t, np.zeros((len(t), 2))]
    else:
        m = match_events(pred, r, iou)
    covered, pred_covered = coverage(pred, r, min_cover, time_only)
    detected, matched = detected_events(pred, r, time_only), np.zeros(len(r), bool)
    matched[[j for _, j in m["pairs"]]] = True
    return dict(
        event_mode="onset" if time_only else "box",
        n_pred=len(pred),
        n_ref=len(r),
        **{k: m[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")},
        detected=int(detected.sum()),
        covered=int(covered.sum()),
        pred_covered=int(pred_covered.sum()),
        **_pixel_scores(pred_mask, ref_mask),
        labels=label_counts(events, matched, covered, detected),
        field=field,
    )


# ---- references ---------------------------------------------------------------------------------
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
    pixels = labels.load_labels(source, side, read)
    if pixels is None:
        return None
    events = pixels
    if isinstance(pixels, GridMask):
        boxes = None
        if events_from == "labels":
            boxes = labels.load_labels(source, [s for s in side if not s.lower().endswith(_MASK_SUFFIXES)], read)
        events = boxes if isinstance(boxes, list) else mask_events(pixels)
    return Reference(source, _stem(source), pixels, events)


def _pattern(rel_name: str) -> re.Pattern:
    parts = re.split(r"(\{stem\}|\*)", rel_name)
    return re.compile("".join("(?P<stem>.+)" if p == "{stem}" else ".*" if p == "*" else re.escape(p) for p in parts))


def label_file_reference(path: str, events_from: str = "labels") -> Reference:
    """The reference held by one label file named directly, by the conventions of
    :data:`raybird.io.labels.LABEL_PATTERNS` read backwards (``XC1.Table.1.selections.txt`` is
    recording ``XC1``; ``JSON/<stem>.JSON`` belongs to ``WAV/<stem>.wav``)."""
    scheme = "s3://" if path.startswith("s3://") else ""
    folder, name = posixpath.split(path[len(scheme) :])
    for rel, parent, _kind in labels.LABEL_PATTERNS:
        rel_dir, rel_name = posixpath.split(rel)
        m = _pattern(rel_name).fullmatch(name)
        if not m or (rel_dir and posixpath.basename(folder) != posixpath.basename(rel_dir)):
            continue
        audio_dir = posixpath.join(posixpath.dirname(folder), parent) if rel_dir else folder
        ref = _reference(f"{scheme}{audio_dir}/{m['stem']}.wav", [path], storage.read_bytes, events_from)
        if ref is not None:
            return Reference(path, ref.stem, ref.pixels, ref.events)
    raise ValueError(f"{path}: not a label file name raybird knows (see labels.LABEL_PATTERNS)")


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


# ---- predictions --------------------------------------------------------------------------------
# The only code that knows the segment job's output tables (raybird.pipelines.segment writes one Parquet
# file per recording in each; we read the contract's columns and stream the masks).
def _table(pred_dir: str, name: str, columns: list[str]) -> pa.Table:
    """Columns of one output table; empty when the run wrote none."""
    import pyarrow.dataset as pads

    from raybird.io.tables import ERROR_SCHEMA, MASK_SCHEMA, SEGMENT_SCHEMA

    schema = dict(segments=SEGMENT_SCHEMA, masks=MASK_SCHEMA, errors=ERROR_SCHEMA)[name]
    fs, root = storage.arrow_filesystem(pred_dir)
    folder = storage.join(root, name)
    if fs.get_file_info(folder).type.name == "NotFound":
        return schema.empty_table().select(columns)
    return pads.dataset(folder, filesystem=fs, format="parquet", schema=schema).to_table(columns=columns)


def _predictions(pred_dir: str) -> Iterator[dict]:
    """One dict per masks-table row (recording x channel): ids, grid, decoded mask, segment boxes,
    and ``split`` (several channels of one recording)."""
    import pyarrow.dataset as pads

    from raybird.io.tables import MASK_SCHEMA, read_mask

    seg = _table(pred_dir, "segments", ["recording_id", "channel", "start_s", "end_s", "low_hz", "high_hz"])
    cols = {c: seg.column(c).to_numpy() for c in seg.column_names}
    arr = np.c_[cols["start_s"], cols["end_s"], cols["low_hz"], cols["high_hz"]].astype(float)
    rows: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(cols["recording_id"].tolist(), cols["channel"].tolist())):
        rows.setdefault(key, []).append(i)
    boxes = {key: arr[idx] for key, idx in rows.items()}
    n_channels: dict[str, int] = {}
    for rid in _table(pred_dir, "masks", ["recording_id"]).column("recording_id").to_pylist():
        n_channels[rid] = n_channels.get(rid, 0) + 1
    if not n_channels:
        return
    fs, root = storage.arrow_filesystem(pred_dir)
    ds = pads.dataset(storage.join(root, "masks"), filesystem=fs, format="parquet", schema=MASK_SCHEMA)
    columns = ["recording_id", "source", "channel", "n_rows", "n_frames", "mask", "spec_config", "model_id"]
    for batch in ds.to_batches(columns=columns, batch_size=16):
        for row in batch.to_pylist():
            key = (row["recording_id"], row["channel"])
            yield dict(
                row,
                mask=read_mask(row),
                cfg=SpecConfig.from_json(row["spec_config"]),
                boxes=boxes.get(key, np.zeros((0, 4))),
                split=n_channels[row["recording_id"]] > 1,
            )


# ---- the run ------------------------------------------------------------------------------------
def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def pool(rows: Sequence[dict]) -> dict:
    """Pooled scores of per-recording rows: summed confusion counts and summed TP/FP/FN."""
    px = [sum(r[k] for r in rows) for k in ("px_tp", "px_fp", "px_fn", "px_tn")]
    anatomy = {k: sum(r[k] for r in rows) for k in ("px_fn_edge", "px_fp_edge", "px_fn_missed", "px_fp_invented")}
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    n_ref, n_pred = sum(r["n_ref"] for r in rows), sum(r["n_pred"] for r in rows)
    covered, pred_covered = sum(r["covered"] for r in rows), sum(r["pred_covered"] for r in rows)
    return dict(
        recordings=len({r["recording_id"] for r in rows}),
        rows=len(rows),
        n_pred=n_pred,
        n_ref=n_ref,
        tp=tp,
        fp=fp,
        fn=fn,
        **event_scores(tp, fp, fn),
        detected=sum(r["detected"] for r in rows),
        detected_frac=sum(r["detected"] for r in rows) / n_ref if n_ref else 1.0,
        covered=covered,
        pred_covered=pred_covered,
        cover_recall=covered / n_ref if n_ref else 1.0,
        cover_precision=pred_covered / n_pred if n_pred else 1.0,
        **dict(zip(("px_tp", "px_fp", "px_fn", "px_tn"), px)),
        **scores(px),
        **anatomy,
        iou_edge_tolerant=_edge_tolerant_iou(dict(zip(("px_tp", "px_fp", "px_fn"), px), **anatomy)),
        labels=pool_labels(rows),
        field=field_scores.pooled([r["field"] for r in rows]),
    )


def pool_labels(rows: Sequence[dict]) -> dict[str, dict]:
    """Per reference label (species, call type: what the label files name), summed over the
    rows: ``events``, and how many were ``matched`` (one-to-one), ``covered`` and ``detected``,
    with each as a share of the events. Sorted by events, most first."""
    sums: dict[str, np.ndarray] = {}
    for r in rows:
        for label, counts in r["labels"].items():
            sums[label] = sums.get(label, 0) + np.asarray(counts)
    out = {}
    for label, (n, matched, covered, detected) in sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0])):
        out[label] = dict(
            events=int(n),
            matched=int(matched),
            covered=int(covered),
            detected=int(detected),
            recall=matched / n,
            cover_recall=covered / n,
            detected_frac=detected / n,
        )
    return out


@dataclass
class Report:
    rows: list[dict]  # per recording and channel (REPORT_SCHEMA)
    pooled: dict
    settings: dict
    unmatched: list[dict] = field(default_factory=list)  # predictions without a reference
    missing: list[str] = field(default_factory=list)  # references without a prediction
    errors: list[dict] = field(default_factory=list)  # referenced recordings the run failed on
    reference_errors: list[dict] = field(default_factory=list)  # unreadable label files

    def to_dict(self) -> dict:
        return _finite(
            dict(
                settings=self.settings,
                pooled=self.pooled,
                recordings=self.rows,
                unmatched=self.unmatched,
                missing=self.missing,
                errors=self.errors,
                reference_errors=self.reference_errors,
            )
        )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=REPORT_SCHEMA)

    def format(self, max_rows: int = 40) -> str:
        head = (
            f"{'recording':<28} {'ch':>2} {'mode':<5} {'ref':>4} {'pred':>4} {'P':>5} {'R':>5} {'F1':>5} "
            f"{'det':>5} {'cP':>5} {'cR':>5} {'IoU':>5} {'mIoU':>5} {'Dice':>5} {'acc':>5}"
        )

        def line(name, ch, r):
            det, c_r = (r[k] / r["n_ref"] if r["n_ref"] else 1.0 for k in ("detected", "covered"))
            c_p = r["pred_covered"] / r["n_pred"] if r["n_pred"] else 1.0
            return (
                f"{name[-28:]:<28} {ch:>2} {r.get('event_mode', ''):<5} {r['n_ref']:>4} {r['n_pred']:>4} "
                f"{r['precision']:5.3f} {r['recall']:5.3f} {r['f1']:5.3f} {det:5.3f} {c_p:5.3f} {c_r:5.3f} "
                f"{r['iou']:5.3f} {r['miou']:5.3f} {r['dice']:5.3f} {r['pixel_acc']:5.3f}"
            )

        rows = sorted(self.rows, key=lambda r: (r["source"], r["channel"]))
        out = [head] + [line(_stem(r["source"]), r["channel"], r) for r in rows[:max_rows]]
        if len(rows) > max_rows:
            out.append(f"... {len(rows) - max_rows} more rows in the report")
        out.append(line(f"POOLED ({self.pooled['recordings']} recordings)", "", self.pooled))
        by_label = self.pooled["labels"]
        if len(by_label) > 1:
            out.append(f"{'label':<28} {'events':>6} {'R':>5} {'cR':>5} {'det':>5}")
            out += [
                f"{(label or '(none)')[-28:]:<28} {c['events']:>6} {c['recall']:5.3f} {c['cover_recall']:5.3f} "
                f"{c['detected_frac']:5.3f}"
                for label, c in list(by_label.items())[:max_rows]
            ]
            if len(by_label) > max_rows:
                out.append(f"... {len(by_label) - max_rows} more labels in the report")
        out.append(field_line(self.pooled["field"]))
        if self.pooled["px_fp"] + self.pooled["px_fn"]:
            share = error_shares(self.pooled)
            out.append(
                f"pixel errors: {share['edges']:.0%} within {EDGE_PX} px of the other mask (IoU with those "
                f"forgiven {self.pooled['iou_edge_tolerant']:.3f}), {share['missed']:.0%} in regions missed "
                f"whole, {share['invented']:.0%} in false alarms"
            )
        notes = [
            (self.unmatched, "predictions without a reference"),
            (self.missing, "references not segmented"),
            (self.errors, "recordings the segment run failed on"),
            (self.reference_errors, "unreadable labels"),
        ]
        out += [f"{len(items)} {what}" for items, what in notes if items]
        return "\n".join(out)


def field_line(f: dict) -> str:
    """The pooled measures of :mod:`raybird.evaluation.field_scores` in one line."""

    def num(x, spec=".3f"):
        return "—" if x is None else format(x, spec)

    line = (
        f"field measures: frame P/R/F1 {num(f['frame_precision'])}/{num(f['frame_recall'])}/{num(f['frame_f1'])} "
        f"(10-ms frames), segment F1 {num(f['segment_f1'])} (onset and offset within 20 ms), onset F1 "
        f"{num(f['onset_f1'])} (10 ms), median onset/offset error {num(f['onset_error_ms'], '+.1f')}/"
        f"{num(f['offset_error_ms'], '+.1f')} ms"
    )
    if f["box_recall"] is not None:
        line += f", box recall/precision {num(f['box_recall'])}/{num(f['box_precision'])} (half inside)"
    return line


def evaluate_run(
    pred_dir: str,
    refs: Union[Sequence[str], Sequence[Reference]],
    iou: float = 0.5,
    tolerance_s: float = 0.05,
    offsets: bool = True,
    events_from: str = "labels",
    min_cover: float = 0.5,
) -> Report:
    """Evaluate a segment run's output folder against references (label inputs as for
    ``--ref``, read with :func:`load_references`, or :class:`Reference` objects)."""
    problems: list[dict] = []
    if refs and isinstance(refs[0], str):
        refs, problems = load_references(refs, events_from)
    index = ReferenceIndex(refs)
    failed = _table(pred_dir, "errors", ["recording_id", "source", "stage", "reason"]).to_pylist()
    sources = _table(pred_dir, "masks", ["source"]).column("source").to_pylist()
    assigned = index.assign(sources + [e["source"] for e in failed])
    rows, unmatched, used = [], [], set()
    for p in _predictions(pred_dir):
        ref, why = assigned[p["source"]]
        if ref is None:
            unmatched.append(dict(recording_id=p["recording_id"], source=p["source"], channel=p["channel"], reason=why))
            continue
        used.add(id(ref))
        ch = p["channel"] if p["split"] else None
        m = evaluate_recording(p["mask"], p["boxes"], ref, p["cfg"], ch, iou, tolerance_s, offsets, min_cover)
        rows.append(
            dict(
                recording_id=p["recording_id"],
                source=p["source"],
                reference=ref.source,
                channel=p["channel"],
                **m,
                model_id=p["model_id"],
            )
        )
    errors = [e for e in failed if assigned[e["source"]][0] is not None]  # the others are not evaluated
    used |= {id(assigned[e["source"]][0]) for e in errors}
    missing = sorted(r.source for r in index.refs if id(r) not in used)
    settings = dict(
        pred=str(pred_dir),
        iou=iou,
        tolerance_s=tolerance_s,
        offsets=offsets,
        events_from=events_from,
        min_cover=min_cover,
    )
    return Report(rows, pool(rows), settings, unmatched, missing, errors, problems)


def write_report(report: Report, out: str) -> tuple[str, str]:
    """``out`` ending in ``.json``: that file and the Parquet table beside it (same stem);
    otherwise a folder (local or ``s3://``) receiving ``report.json`` and ``report.parquet``."""
    if out.endswith(".json"):
        json_path, parquet_path = out, out[: -len(".json")] + ".parquet"
    else:
        json_path, parquet_path = storage.join(out, "report.json"), storage.join(out, "report.parquet")
    fs, path = storage.filesystem(json_path)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "w") as f:
        json.dump(report.to_dict(), f, indent=1)
    afs, apath = storage.arrow_filesystem(parquet_path)
    pq.write_table(report.table(), apath, filesystem=afs)
    return json_path, parquet_path


# ---- command line -------------------------------------------------------------------------------
def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="pixel and event metrics of a segment run against reference labels")
    p.add_argument("--pred", required=True, help="the segment run's output folder or s3:// prefix")
    p.add_argument(
        "--ref",
        required=True,
        nargs="+",
        help="labelled recordings (folders, globs, archives, s3://, manifests) or label files",
    )
    p.add_argument("--out", help="report folder, or a .json path (default: PRED/evaluation)")
    p.add_argument("--iou", type=float, default=0.5, help="box IoU for a matched event")
    p.add_argument("--tolerance", type=float, default=0.05, help="onset/offset tolerance (s), time-only labels")
    p.add_argument("--onsets-only", action="store_true", help="time-only labels: do not require matching offsets")
    p.add_argument(
        "--ref-events",
        choices=("labels", "mask"),
        default="labels",
        help="events of a pixel-mask reference: the box table beside it, or the mask's regions",
    )
    p.add_argument(
        "--min-cover",
        type=float,
        default=0.5,
        help="coverage scores (cP, cR): fraction of an event's time span the other side must cover",
    )
    p.add_argument("--max-rows", type=int, default=40, help="recordings printed in the table")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(a) -> int:
    report = evaluate_run(a.pred, a.ref, a.iou, a.tolerance, not a.onsets_only, a.ref_events, a.min_cover)
    json_path, parquet_path = write_report(report, a.out or storage.join(a.pred, "evaluation"))
    print(report.format(a.max_rows))
    print(f"evaluate: report in {json_path} and {parquet_path}")
    if not report.rows:
        print("evaluate: no prediction matched a reference")
        return 1
    return 0
