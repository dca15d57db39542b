"""One recording's scores against its reference: pixel metrics and the anatomy of pixel errors,
event matching, coverage and the field's measures (see :mod:`raybird.evaluation.evaluate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import scipy.ndimage

from raybird.dsp.spectrogram import SpecConfig
from raybird.evaluation import field_scores
from raybird.evaluation.field_scores import match_events, match_onsets, merge_intervals
from raybird.inference.postprocess import segments_of
from raybird.io import label_masks
from raybird.io.labels import Box, GridMask
from raybird.training.metrics import confusion, scores

EDGE_PX = 2  # an error this close to the other mask (8-neighbour steps) counts as a boundary error
_EIGHT = np.ones((3, 3), bool)

if TYPE_CHECKING:  # a type only: references import mask_events from here
    from raybird.evaluation.references import Reference


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
    ref: Reference,
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
    ref_mask = label_masks.label_mask(ref.pixels, cfg, 0, pred_mask.shape[1], channel)
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
