"""Labels on a spectrogram grid: boxes drawn and pixel masks resampled onto any grid (what ingest
trains on and evaluate scores against), and time-only labels refined by the level."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

import numpy as np

from raybird.dsp.spectrogram import (
    SpecConfig,
    frame_offset_s,
    frame_times,
    freq_to_rows,
    row_freqs,
    time_to_frames,
)
from raybird.io.labels import Box, GridMask, Labels


def remap_mask(grid_mask: GridMask, cfg: SpecConfig, first_frame: int, n_frames: int) -> np.ndarray:
    """Resample a mask from its own grid onto frames ``first_frame..+n_frames`` of ``cfg`` by
    nearest neighbour: in time by frame centres (minus the mask's time shift), in frequency by
    row frequencies (for a two-sided source, its positive half, matched to ``|f|``; between two
    two-sided grids, signed frequencies). Pixels farther than half a source pixel from any source
    pixel are 0. Identical grids give the identity."""
    src, m = grid_mask.cfg, grid_mask.mask
    t = frame_times(n_frames, cfg, first_frame) - grid_mask.time_shift_s
    col = np.rint((t - frame_offset_s(src)) / src.frame_s).astype(np.int64)
    ok_t = (col >= 0) & (col < m.shape[1])

    f_src, f_dst = row_freqs(src), row_freqs(cfg)
    if src.two_sided and cfg.two_sided:
        cand = np.arange(len(f_src))
    else:
        f_dst = np.abs(f_dst)
        cand = np.flatnonzero(f_src >= 0)
    order = cand[np.argsort(f_src[cand])]
    fs = f_src[order]
    i = np.clip(np.searchsorted(fs, f_dst), 1, len(fs) - 1)
    nearer_left = np.abs(f_dst - fs[i - 1]) <= np.abs(fs[i] - f_dst)
    j = np.where(nearer_left, i - 1, i)
    row = order[j]
    ok_f = np.abs(fs[j] - f_dst) <= src.bin_hz / 2 + 1e-6

    out = np.zeros((cfg.n_rows, n_frames), np.uint8)
    out[np.ix_(ok_f, ok_t)] = m[np.ix_(row[ok_f], col[ok_t])]
    return out


def boxes_to_mask(
    boxes: Iterable[Box], cfg: SpecConfig, n_frames: int, first_frame: int = 0, channel: Optional[int] = None
) -> np.ndarray:
    """uint8 mask ``(cfg.n_rows, n_frames)`` of the boxes, on frames ``first_frame..``.
    With ``channel`` set, only boxes of that channel (or of every channel) are drawn."""
    return _draw(boxes, lambda b: 1, cfg, n_frames, first_frame, channel)


BIRD = "bird"  # the class of a labelled event without label text, beside others that have one
MAX_CLASSES = 255  # a class map is uint8, 0 the background


def class_names(label: Labels) -> list[str]:
    """The classes of a recording's labels (their label text, :data:`BIRD` where one has none)
    in the order they first occur; a pixel mask's own (the synthetic truth's call kinds); ``[]``
    when no label has text (bird/background labels) or a pixel mask has no classes."""
    if isinstance(label, GridMask):
        return list(label.class_names)
    if not any(b.label.strip() for b in label):
        return []
    names = list(dict.fromkeys(b.label.strip() or BIRD for b in label))
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} label classes in one recording; at most {MAX_CLASSES}")
    return names


def boxes_to_classes(
    boxes: Iterable[Box],
    names: list[str],
    cfg: SpecConfig,
    n_frames: int,
    first_frame: int = 0,
    channel: Optional[int] = None,
) -> np.ndarray:
    """uint8 class map ``(cfg.n_rows, n_frames)``: inside each box, 1 + the index of its class in
    ``names`` (:func:`class_names`); 0 elsewhere. Where boxes overlap, the later one's class."""
    index = {n: i + 1 for i, n in enumerate(names)}
    return _draw(boxes, lambda b: index[b.label.strip() or BIRD], cfg, n_frames, first_frame, channel)


def label_classes(
    label: Labels, names: list[str], cfg: SpecConfig, first_frame: int, n_frames: int, channel: Optional[int] = None
) -> np.ndarray:
    """The class map of frames ``first_frame..+n_frames`` on ``cfg``'s grid (see
    :func:`boxes_to_classes`; a pixel mask's classes are resampled as :func:`remap_mask` does)."""
    if isinstance(label, GridMask):
        return remap_mask(dataclasses.replace(label, mask=label.classes), cfg, first_frame, n_frames)
    return boxes_to_classes(label, names, cfg, n_frames, first_frame, channel)


def _draw(boxes: Iterable[Box], value, cfg: SpecConfig, n_frames: int, first_frame: int, channel) -> np.ndarray:
    out = np.zeros((cfg.n_rows, n_frames), np.uint8)
    for b in boxes:
        if channel is not None and b.channel is not None and b.channel != channel:
            continue
        cols = time_to_frames(b.begin_s, b.end_s, cfg, first_frame, n_frames)
        if cols.stop > cols.start:
            out[freq_to_rows(b.low_hz, b.high_hz, cfg), cols] = value(b)
    return out


def label_mask(
    label: Labels, cfg: SpecConfig, first_frame: int, n_frames: int, channel: Optional[int] = None
) -> np.ndarray:
    """The mask of frames ``first_frame..+n_frames`` on ``cfg``'s grid for either kind of label
    (a GridMask applies to every channel)."""
    if isinstance(label, GridMask):
        return remap_mask(label, cfg, first_frame, n_frames)
    return boxes_to_mask(label, cfg, n_frames, first_frame, channel)


def refine_by_energy(mask: np.ndarray, spec: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Narrow full-band columns (what time-only labels produce) to the rows that carry the call.

    In every column whose mask is set on all rows, keep only the rows whose spectrogram value
    exceeds the column's noise floor (its median: a call occupies a minority of the rows) by
    ``margin`` (spectrogram units; 0.1 = 6 dB with the default 60 dB range). A column where
    nothing passes keeps its loudest row, so no labelled event disappears. Other columns (box
    labels) are unchanged. Ingest applies it to time-only labels by default
    (``--time-labels energy``, :func:`raybird.pipelines.ingest.recording_rows`).
    """
    out = mask.copy()
    full = np.flatnonzero(mask.all(axis=0))
    if full.size == 0:
        return out
    sub = spec[:, full]
    keep = sub > np.median(sub, axis=0, keepdims=True) + margin
    empty = ~keep.any(axis=0)
    keep[sub.argmax(axis=0)[empty], np.flatnonzero(empty)] = True
    out[:, full] = keep
    return out
