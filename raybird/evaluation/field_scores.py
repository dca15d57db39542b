"""Segmentation scored as the bioacoustics field scores it, against reference events.

One recording: reference events (:class:`raybird.io.labels.Box`, time-only when ``low_hz`` /
``high_hz`` are None) and predicted segments ``(start_s, end_s, low_hz, high_hz)``.
:func:`recording_counts` counts; :func:`pooled` sums the counts of a set's recordings (micro
average) and turns them into scores. The measures, and why each:

* **Frame scores on 10-ms frames** (the frame-wise score of TweetyNet, DAS and WhisperSeg): the
  time axis cut into 10-ms frames, a frame positive when an event covers its centre (in the
  prediction: any segment, so the time union of the segments); precision, recall and
  F1 = 2TP / (2TP + FP + FN) over frames. It needs no matching, credits partial overlap in
  proportion, and ignores frequency.
* **Segment F1, onset and offset both within 20 ms** (WhisperSeg's): predictions projected on
  the time axis (overlapping segments merged, :func:`merge_intervals`: a
  time-only label cannot tell two bands of one call apart) and matched one-to-one to the
  events (:func:`match_onsets`, maximum bipartite matching). Strict: a call
  found but cut 30 ms late counts as a miss and a false alarm.
* **Onset F1 within 10 ms** (DAS's): the same matching on onsets alone.
* **Timing errors**: over events matched one-to-one with onset and offset both within
  ``TIMING_TOLERANCE_S`` (50 ms, so gross misses do not dominate), the median of predicted minus
  reference onset and offset, signed (negative onset error: the segment starts early) and
  absolute, in ms. The signed medians show a bias that a fixed shift of the boundaries would fix.
* **Box recall and precision** (events with frequencies only): an event is *found* when some
  predicted box lies at least half inside it (intersection area >= half the predicted box's
  area), a prediction is *right* when it lies at least half inside some event. Not one-to-one:
  a song box is found by any one of its syllables, so coarse boxes (one per song) still measure
  something; a prediction straddling two calls is right if half of it is in one.

Pooling sums TP/FP/FN (and found/right counts) over recordings, so long recordings weigh more.
As in :func:`event_scores`, precision is 1 with nothing predicted and recall 1
with nothing to find; box scores are None for a set without boxes.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import scipy.optimize

from raybird.io.labels import Box

FRAME_S = 0.010
SEGMENT_TOLERANCE_S = 0.020
ONSET_TOLERANCE_S = 0.010
TIMING_TOLERANCE_S = 0.050
MIN_INSIDE = 0.5

_SUMS = (
    "n_frames",
    "frame_tp",
    "frame_fp",
    "frame_fn",
    "segment_tp",
    "n_segments",
    "onset_tp",
    "n_labels",
    "n_pred",
    "box_labels",
    "box_found",
    "box_pred",
    "box_right",
)


# ---- one-to-one matching (also the event metrics of raybird.evaluation.evaluate) -------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Time-frequency IoU of boxes ``(N, 4)`` x ``(M, 4)``: (start, end, low, high)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    dt = np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])
    df = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 2], b[None, :, 2])
    inter = np.clip(dt, 0, None) * np.clip(df, 0, None)
    area = lambda x: (x[:, 1] - x[:, 0]) * (x[:, 3] - x[:, 2])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def event_scores(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall, F1; precision (recall) is 1 with nothing predicted (nothing to find)."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=f1)


def _max_matching(feasible: np.ndarray, closeness: np.ndarray) -> list[tuple[int, int]]:
    """Most pairs (i, j) with ``feasible[i, j]``, each index used once; among those, the largest
    total ``closeness`` (in [0, 1]). Its weight share is below 1 in total, so it never trades a
    pair away."""
    if not feasible.any():
        return []
    w = np.where(feasible, 1.0 + np.clip(closeness, 0, 1) / (min(feasible.shape) + 1), 0.0)
    rows, cols = scipy.optimize.linear_sum_assignment(w, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if feasible[i, j]]


def _result(pairs: list, n_pred: int, n_ref: int) -> dict:
    tp = len(pairs)
    return dict(tp=tp, fp=n_pred - tp, fn=n_ref - tp, **event_scores(tp, n_pred - tp, n_ref - tp), pairs=pairs)


def match_events(pred_boxes, ref_boxes, iou: float = 0.5) -> dict:
    """One-to-one matching of boxes ``(start_s, end_s, low_hz, high_hz)`` with IoU >= ``iou``.
    Returns tp, fp, fn, precision, recall, f1 and the matched (pred, ref) index pairs."""
    p, r = np.asarray(pred_boxes, float).reshape(-1, 4), np.asarray(ref_boxes, float).reshape(-1, 4)
    m = box_iou(p, r)
    return _result(_max_matching(m >= iou, m), len(p), len(r))


def match_onsets(pred, ref, tolerance_s: float = 0.05, offsets: bool = True) -> dict:
    """One-to-one matching of intervals (first two columns: start_s, end_s): onsets within
    ``tolerance_s`` and, with ``offsets``, offsets too. Same result dict as :func:`match_events`."""
    p, r = (np.asarray(x, float).reshape(len(x), -1)[:, :2] if len(x) else np.zeros((0, 2)) for x in (pred, ref))
    d_on = np.abs(p[:, None, 0] - r[None, :, 0])
    d_off = np.abs(p[:, None, 1] - r[None, :, 1]) if offsets else np.zeros_like(d_on)
    tol = tolerance_s + 1e-9
    feasible = (d_on <= tol) & (d_off <= tol)
    return _result(_max_matching(feasible, 1 - (d_on + d_off) / (2 * tol)), len(p), len(r))


def merge_intervals(intervals) -> np.ndarray:
    """Union of overlapping ``(start, end)`` intervals, sorted: ``(K, 2)``."""
    iv = np.asarray(intervals, float).reshape(-1, 2)
    out: list[list[float]] = []
    for a, b in iv[np.argsort(iv[:, 0], kind="stable")]:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.array(out, float).reshape(-1, 2)


# ---- the measures ---------------------------------------------------------------------------------
def frame_positives(intervals, n_frames: int, frame_s: float = FRAME_S) -> np.ndarray:
    """Bool per frame ``k`` (``n_frames`` frames of ``frame_s`` seconds): some interval
    ``[start, end)`` covers the frame's centre ``(k + 1/2) * frame_s``."""
    centres = (np.arange(n_frames) + 0.5) * frame_s
    out = np.zeros(n_frames, bool)
    for a, b in np.asarray(intervals, float).reshape(-1, 2):
        out[np.searchsorted(centres, a) : np.searchsorted(centres, b)] = True
    return out


def inside_fraction(pred, ref) -> np.ndarray:
    """``(P, R)``: the share of each predicted box's area that lies inside each reference box
    (boxes ``(start_s, end_s, low_hz, high_hz)``; a box without area is inside nothing)."""
    p, r = np.asarray(pred, float).reshape(-1, 4), np.asarray(ref, float).reshape(-1, 4)
    dt = np.minimum(p[:, None, 1], r[None, :, 1]) - np.maximum(p[:, None, 0], r[None, :, 0])
    df = np.minimum(p[:, None, 3], r[None, :, 3]) - np.maximum(p[:, None, 2], r[None, :, 2])
    inter = np.clip(dt, 0, None) * np.clip(df, 0, None)
    area = ((p[:, 1] - p[:, 0]) * (p[:, 3] - p[:, 2]))[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def recording_counts(ref: Sequence[Box], pred, duration_s: float, frame_s: float = FRAME_S) -> dict:
    """The counts of one recording (see the module docstring): frame TP/FP/FN over the
    ``floor(duration_s / frame_s)`` whole frames, matched segments and onsets, the timing errors
    (s) of the events matched within ``TIMING_TOLERANCE_S``, and, when there are events and every
    one has a band, found events and right predictions (else ``box_labels`` is None)."""
    p = np.asarray(pred, float).reshape(-1, 4)
    r = np.array([[b.begin_s, b.end_s] for b in ref], float).reshape(-1, 2)
    n_frames = int(np.floor(duration_s / frame_s + 1e-9))
    f_ref, f_pred = frame_positives(r, n_frames, frame_s), frame_positives(p[:, :2], n_frames, frame_s)
    segs = merge_intervals(p[:, :2])
    timed = match_onsets(segs, r, TIMING_TOLERANCE_S)["pairs"]
    counts = dict(
        n_frames=n_frames,
        frame_tp=int((f_ref & f_pred).sum()),
        frame_fp=int((~f_ref & f_pred).sum()),
        frame_fn=int((f_ref & ~f_pred).sum()),
        segment_tp=match_onsets(segs, r, SEGMENT_TOLERANCE_S)["tp"],
        n_segments=len(segs),
        onset_tp=match_onsets(segs, r, ONSET_TOLERANCE_S, offsets=False)["tp"],
        onset_errors=[float(segs[i, 0] - r[j, 0]) for i, j in timed],
        offset_errors=[float(segs[i, 1] - r[j, 1]) for i, j in timed],
        n_labels=len(r),
        n_pred=len(p),
        box_labels=None,
        box_found=0,
        box_pred=0,
        box_right=0,
    )
    if ref and all(b.low_hz is not None and b.high_hz is not None for b in ref):
        inside = inside_fraction(p, [(b.begin_s, b.end_s, b.low_hz, b.high_hz) for b in ref]) >= MIN_INSIDE
        counts.update(
            box_labels=len(r),
            box_found=int(inside.any(axis=0).sum()),
            box_pred=len(p),
            box_right=int(inside.any(axis=1).sum()),
        )
    return counts


def _median_ms(x: list[float], absolute: bool = False) -> Optional[float]:
    return float(np.median(np.abs(x) if absolute else x) * 1000) if x else None


def _f1(tp: int, n_pred: int, n_ref: int) -> dict:
    return event_scores(tp, n_pred - tp, n_ref - tp)


def pooled(rows: Sequence[dict]) -> dict:
    """Scores of a set from its recordings' :func:`recording_counts`, counts summed: frame
    precision/recall/F1, the share of frames predicted (what a frame recall costs, where
    precision cannot be known), segment (20 ms) and onset (10 ms) precision/recall/F1, median timing
    errors in ms, box recall and precision (None when no recording has boxes), and the sums."""
    s = {k: sum(r[k] or 0 for r in rows) for k in _SUMS}
    on = [e for r in rows for e in r["onset_errors"]]
    off = [e for r in rows for e in r["offset_errors"]]
    frame = _f1(s["frame_tp"], s["frame_tp"] + s["frame_fp"], s["frame_tp"] + s["frame_fn"])
    seg = _f1(s["segment_tp"], s["n_segments"], s["n_labels"])
    onset = _f1(s["onset_tp"], s["n_segments"], s["n_labels"])
    boxes = any(r["box_labels"] is not None for r in rows)
    return dict(
        s,
        recordings=len(rows),
        n_timed=len(on),
        predicted_share=(s["frame_tp"] + s["frame_fp"]) / s["n_frames"] if s["n_frames"] else None,
        **{f"frame_{k}": v for k, v in frame.items()},
        **{f"segment_{k}": v for k, v in seg.items()},
        **{f"onset_{k}": v for k, v in onset.items()},
        onset_error_ms=_median_ms(on),
        onset_abs_error_ms=_median_ms(on, True),
        offset_error_ms=_median_ms(off),
        offset_abs_error_ms=_median_ms(off, True),
        box_recall=s["box_found"] / s["box_labels"] if boxes and s["box_labels"] else None,
        box_precision=s["box_right"] / s["box_pred"] if boxes and s["box_pred"] else None,
    )
