"""Segment edges where the sound starts and ends, measured on the audio at sub-millisecond steps.

The mask's edges come from 23-ms STFT frames (default preset): a frame reaches half a window
before and after its centre, so a call shows in frames whose centre lies up to ~12 ms outside
it, and a mask drawn on those frames starts early and ends late (measured with the shipped
model: onsets a median 7 ms early and offsets 6 ms late on the shared Bengalese finch song,
offsets 17 ms late on the monk parakeet calls). Each edge is moved to where the level in the
segment's own frequency band crosses a threshold:

* the level: band power (the FFT bins inside ``[low_hz, high_hz]``) of a short Hann window
  (:data:`WINDOW_S`) every :data:`STEP_S`, in dB;
* around each edge (within :data:`CONTEXT_S`), the noise is the 10th percentile of that level
  and the sound's level is the loudest point within :data:`PEAK_S` inside the segment; the
  threshold lies ``fraction`` of the way from the noise up to the sound (in dB);
* the onset moves to the first step of the last run below the threshold before that loudest
  point, the offset to the last step of the first run after it; an edge moves at most
  :data:`MAX_SHIFT_S` outwards, and stays put where no crossing lies in reach (a neighbour too
  close, or no contrast: less than :data:`MIN_CONTRAST_DB` above the noise).

Edges are refined from a second streaming decode of the recording (:func:`refine`), holding a
window of audio around one edge at a time, so memory does not grow with the recording.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

WINDOW_S = 0.004      # short enough to resolve a 10-ms gap, long enough for ~250 Hz bins
STEP_S = 0.0005
CONTEXT_S = 0.2       # either side of an edge, for the noise level
PEAK_S = 0.05         # inside the segment, for the sound's level
MAX_SHIFT_S = 0.04    # the mask is late or early by about half a 23-ms window, rarely much more
MIN_CONTRAST_DB = 10.0  # above the noise; noise alone (4-ms window, 3-5 kHz) never moved an edge in 50 trials
FRACTION = 0.15       # see the docstring of refine


def band_level_db(x: np.ndarray, sr: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Band power in dB of ``x`` every :data:`STEP_S` (window centred on each step)."""
    n = max(8, int(round(WINDOW_S * sr)))
    hop = max(1, int(round(STEP_S * sr)))
    w = np.hanning(n).astype(np.float32)
    pad = np.pad(np.asarray(x, np.float32), (n // 2, n // 2))
    if len(pad) < n:
        return np.full(1, -200.0)
    frames = np.lib.stride_tricks.sliding_window_view(pad, n)[::hop] * w
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    f = np.fft.rfftfreq(n, 1.0 / sr)
    band = (f >= low_hz) & (f <= high_hz)
    if not band.any():
        band = np.abs(f - (low_hz + high_hz) / 2) == np.abs(f - (low_hz + high_hz) / 2).min()
    return 10.0 * np.log10(spec[:, band].sum(axis=1) + 1e-20)


def edge_time(level: np.ndarray, t0: float, edge_s: float, onset: bool, fraction: float = FRACTION) -> float:
    """The refined time of one edge. ``level[i]`` is the band level at ``t0 + i * STEP_S``,
    covering :data:`CONTEXT_S` either side of ``edge_s`` (the mask's edge)."""
    t = t0 + np.arange(len(level)) * STEP_S
    noise = np.percentile(level, 10)
    inside = (t >= edge_s) & (t <= edge_s + PEAK_S) if onset else (t <= edge_s) & (t >= edge_s - PEAK_S)
    if not inside.any():
        return edge_s
    peak = int(np.flatnonzero(inside)[np.argmax(level[inside])])
    if level[peak] - noise < MIN_CONTRAST_DB:
        return edge_s
    below = level < noise + fraction * (level[peak] - noise)
    if onset:
        quiet = np.flatnonzero(below[:peak] & (t[:peak] >= edge_s - MAX_SHIFT_S))
        return float(t[quiet[-1]] + STEP_S / 2) if len(quiet) else edge_s
    quiet = peak + np.flatnonzero(below[peak:] & (t[peak:] <= edge_s + MAX_SHIFT_S))
    return float(t[quiet[0]] - STEP_S / 2) if len(quiet) else edge_s


def refine(segments: Sequence[Sequence], blocks: Iterable[np.ndarray], sr: int,
           fraction: float = FRACTION) -> list[list]:
    """Each channel's segments (objects with ``start_s, end_s, low_hz, high_hz``, e.g.
    :class:`raybird.postprocess.Segment`) with refined edges, in time order and numbered
    0.. again; ``blocks`` are the recording's audio ``(channels, n)`` at ``sr``, in order.

    ``fraction`` (0.15) was chosen on the two shared sets with labelled syllable times, with the
    shipped model (segment F1 within 20 ms / onset F1 within 10 ms, unrefined -> 0.1 -> 0.15 ->
    0.3, with a 6-dB contrast floor): Bengalese finch 0.808/0.740 -> 0.939/0.927 -> 0.934/0.909
    -> 0.884/0.771, monk parakeet 0.214/0.412 -> 0.424/0.727 -> 0.451/0.752 -> 0.451/0.752; lower
    favours the finch, higher the parakeet, so the value between them. With the 10-dB floor:
    finch 0.934/0.909 (median onset error +0.1 ms, offset +1.5 ms), parakeet 0.436/0.752."""
    jobs = sorted((edge, ch, k, onset) for ch, segs in enumerate(segments) for k, s in enumerate(segs)
                  for edge, onset in ((s.start_s, True), (s.end_s, False)))
    edges = [[[s.start_s, s.end_s] for s in segs] for segs in segments]
    context = int(round(CONTEXT_S * sr))
    buf, buf_start, n = np.zeros((0, 0), np.float32), 0, 0

    def run(final: bool) -> None:
        nonlocal jobs
        while jobs:
            edge, ch, k, onset = jobs[0]
            centre = int(round(edge * sr))
            if not final and centre + context > n:
                return
            a, b = max(0, centre - context - buf_start), max(0, centre + context - buf_start)
            s = segments[ch][k]
            level = band_level_db(buf[ch, a:b], sr, s.low_hz, s.high_hz)
            edges[ch][k][0 if onset else 1] = edge_time(level, (buf_start + a) / sr, edge, onset, fraction)
            jobs = jobs[1:]

    for block in blocks:
        block = np.asarray(block, np.float32)
        buf = block if buf.size == 0 else np.concatenate([buf, block], axis=1)
        n += block.shape[1]
        run(final=False)
        keep = min((int(round(jobs[0][0] * sr)) - context if jobs else n) - buf_start, buf.shape[1])
        if keep > 0:
            buf, buf_start = buf[:, keep:], buf_start + keep
    if buf.size:
        run(final=True)
    out = []
    for segs, new in zip(segments, edges):
        moved = [dataclasses.replace(s, start_s=a, end_s=b) if b > a else s for s, (a, b) in zip(segs, new)]
        moved.sort(key=lambda s: (s.start_s, s.low_hz, s.end_s, s.high_hz))
        out.append([dataclasses.replace(s, segment_id=i) for i, s in enumerate(moved)])
    return out
