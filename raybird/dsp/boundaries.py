"""Segment edges where the sound starts and ends, measured on the audio every millisecond.

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
* the onset moves to just after the last run of at least :data:`MIN_GAP_S` below the threshold
  before that loudest point, the offset to just before the first step below it after that point;
  an edge moves at most :data:`MAX_SHIFT_S` outwards, and stays put where no crossing lies in
  reach (a neighbour too close, or no contrast: less than :data:`MIN_CONTRAST_DB` above the noise).

*Why a minimum gap before onsets only.* A syllable may open softly and dip for a few
milliseconds before its loud part (the shared Bengalese finch's syllable "a": 20 dB above the
noise for 10 ms, a 2-4 ms dip to 2-6 dB of which at most 2 steps in a row fall under the
threshold, then 30 dB); the dip is amplitude modulation inside one sound, not the silence before
it, which lasts longer (the finch's labelled gaps: at least 6.8 ms, 1st percentile 9 ms). So a
quiet run counts when it holds :data:`MIN_GAP_S` of steps (3 in a row at 1 ms). Measured with
the shipped model: finch onset F1 within 10 ms 0.916 -> 0.939; monk parakeet 0.715 either way
(its segment F1 0.438 -> 0.423). Offsets take the first quiet step: after a sound its echo
decays with ripples around the threshold, and a minimum gap there moved offsets into that tail
(finch segment F1 within 20 ms -0.012 with it on both edges).

Edges are refined on the recording's audio as a stream of blocks (:func:`refine`), holding a
window of audio around one edge at a time, so memory does not grow with the recording: the blocks
its tiles were made from, or for a long recording a second decode
(:func:`raybird.inference.recording.finish_with_edges`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Sequence

import numpy as np
import scipy.fft

WINDOW_S = 0.004  # short enough to resolve a 10-ms gap, long enough for ~250 Hz bins
STEP_S = 0.001
CONTEXT_S = 0.1  # either side of an edge, for the noise level
PEAK_S = 0.05  # inside the segment, for the sound's level
MAX_SHIFT_S = 0.04  # the mask is late or early by about half a 23-ms window, rarely much more
MIN_GAP_S = 0.003  # a quiet run before an onset: longer than a dip inside a syllable (see the docstring)
MIN_CONTRAST_DB = 10.0  # above the noise; noise alone (4-ms window, 3-5 kHz) never moved an edge in 50 trials
FRACTION = 0.15  # see the docstring of refine


def band_power(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectra ``(frames, bins)`` of the :data:`WINDOW_S` Hann windows starting at samples
    ``0, hop, ..`` of ``x`` (1-D float32), and the bins' frequencies."""
    x = np.asarray(x, np.float32)
    if x.ndim != 1:
        raise ValueError(f"band_power takes one channel (1-D), got shape {x.shape}")
    n, hop = _window_samples(sr), _hop(sr)
    count, step = max(0, (len(x) - n) // hop + 1), x.strides[0]
    # the windows as a strided view (sliding_window_view(x, n)[::hop], at a third of its cost per edge)
    frames = np.lib.stride_tricks.as_strided(x, (count, n), (step * hop, step), writeable=False) * _hann(n)
    spec = scipy.fft.rfft(frames, axis=1)  # float32 in, complex64 out: half numpy's cost
    return spec.real**2 + spec.imag**2, _bin_freqs(n, sr)


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return _read_only(np.hanning(n).astype(np.float32))


@functools.lru_cache(maxsize=8)
def _bin_freqs(n: int, sr: int) -> np.ndarray:
    return _read_only(np.fft.rfftfreq(n, 1.0 / sr))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # cached and shared: no caller may change it
    return a


def band_level_db(power: np.ndarray, freqs: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """dB of the power in the bins inside ``[low_hz, high_hz]`` (the nearest bin for a narrower band)."""
    band = (freqs >= low_hz) & (freqs <= high_hz)
    if not band.any():
        band = np.abs(freqs - (low_hz + high_hz) / 2) == np.abs(freqs - (low_hz + high_hz) / 2).min()
    return 10.0 * np.log10(power[:, band].sum(axis=1) + 1e-20)


def _window_samples(sr: int) -> int:
    return max(8, int(round(WINDOW_S * sr)))


def _hop(sr: int) -> int:
    return max(1, int(round(STEP_S * sr)))


def edge_time(level: np.ndarray, t: np.ndarray, edge_s: float, onset: bool, fraction: float = FRACTION) -> float:
    """The refined time of one edge from the band level ``level`` at times ``t`` (evenly
    spaced, covering about :data:`CONTEXT_S` either side of ``edge_s``, the mask's edge)."""
    step = float(t[1] - t[0]) if len(t) > 1 else STEP_S
    k = len(level) // 10
    noise = np.partition(level, k)[k]  # the 10th percentile (np.percentile costs 5x more here)
    inside = (t >= edge_s) & (t <= edge_s + PEAK_S) if onset else (t <= edge_s) & (t >= edge_s - PEAK_S)
    if not inside.any():
        return edge_s
    peak = int(np.flatnonzero(inside)[np.argmax(level[inside])])
    if level[peak] - noise < MIN_CONTRAST_DB:
        return edge_s
    below = level < noise + fraction * (level[peak] - noise)
    if onset:  # the last step of the last run of at least MIN_GAP_S below the threshold, if in reach
        g = max(1, int(round(MIN_GAP_S / step)))
        quiet = below[:peak]  # none when the peak is the first step (a sound at the recording's start)
        runs = np.flatnonzero(np.convolve(quiet, np.ones(g), "valid") >= g) if len(quiet) >= g else []
        last = runs[-1] + g - 1 if len(runs) else -1  # runs: the starts of g quiet steps in a row
        return float(t[last] + step / 2) if last >= 0 and t[last] >= edge_s - MAX_SHIFT_S else edge_s
    quiet = peak + np.flatnonzero(below[peak:] & (t[peak:] <= edge_s + MAX_SHIFT_S))
    return float(t[quiet[0]] - step / 2) if len(quiet) else edge_s


def refine(
    segments: Sequence[Sequence], blocks: Iterable[np.ndarray], sr: int, fraction: float = FRACTION
) -> list[list]:
    """Each channel's segments (objects with ``start_s, end_s, low_hz, high_hz``, e.g.
    :class:`raybird.inference.postprocess.Segment`) with refined edges, in time order and numbered
    0.. again; ``blocks`` are the recording's audio ``(channels, n)`` at ``sr``, in order.

    ``fraction`` (0.15) was chosen on the two shared sets with labelled syllable times, with the
    shipped model (segment F1 within 20 ms / onset F1 within 10 ms, unrefined -> 0.1 -> 0.15 ->
    0.3, with a 6-dB contrast floor): Bengalese finch 0.808/0.740 -> 0.939/0.927 -> 0.934/0.909
    -> 0.884/0.771, monk parakeet 0.214/0.412 -> 0.424/0.727 -> 0.451/0.752 -> 0.451/0.752; lower
    favours the finch, higher the parakeet, so the value between them. As built (10-dB floor,
    1-ms steps, 100-ms context, 3-ms quiet runs before onsets), with the model shipped now: finch
    0.939/0.939 (median onset error -0.4 ms, offset +0.9 ms), parakeet 0.423/0.715."""
    jobs = sorted(
        (edge, ch, k, onset)
        for ch, segs in enumerate(segments)
        for k, s in enumerate(segs)
        for edge, onset in ((s.start_s, True), (s.end_s, False))
    )
    edges = [[[s.start_s, s.end_s] for s in segs] for segs in segments]
    context, hop, win = int(round(CONTEXT_S * sr)), _hop(sr), _window_samples(sr)
    half = win // 2 + 1
    buf, buf_start, n, next_job = np.zeros((0, 0), np.float32), 0, 0, 0

    def run(final: bool) -> None:
        """The edges whose context the buffer holds, from one set of spectra per channel."""
        nonlocal next_job
        while next_job < len(jobs):
            edge, ch, k, onset = jobs[next_job]
            centre = int(round(edge * sr))
            if not final and centre + context + half > n:
                return
            # windows centred on the global grid of hops (the same whatever the blocks), within the
            # context and the recording (zero where a window reaches past its start or end)
            g0, g1 = max(-(-(centre - context) // hop), 0) * hop, min(centre + context, n - 1) // hop * hop
            lo = g0 - win // 2
            x = np.zeros(g1 - g0 + win, np.float32)
            a, b = max(lo, buf_start), min(lo + len(x), buf_start + buf.shape[1])
            if b > a:
                x[a - lo : b - lo] = buf[ch, a - buf_start : b - buf_start]
            power, freqs = band_power(x, sr)
            s = segments[ch][k]
            level = band_level_db(power[: (g1 - g0) // hop + 1], freqs, s.low_hz, s.high_hz)
            if len(level):
                t = (g0 + hop * np.arange(len(level))) / sr
                edges[ch][k][0 if onset else 1] = edge_time(level, t, edge, onset, fraction)
            next_job += 1

    for block in blocks:
        block = np.asarray(block, np.float32)
        buf = block if buf.size == 0 else np.concatenate([buf, block], axis=1)
        n += block.shape[1]
        run(final=False)
        start = int(round(jobs[next_job][0] * sr)) - context - half if next_job < len(jobs) else n
        keep = min(start - buf_start, buf.shape[1])
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
