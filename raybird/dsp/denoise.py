"""Denoising: keep the STFT where the mask says bird, zero it elsewhere, and invert (librosa).

The STFT is taken on exactly the spectrogram grid of :mod:`raybird.dsp.spectrogram` (frame ``g``
is the window starting at ``g * hop - lead``), so mask pixel ``(row, g)`` gates FFT bin
``row`` of frame ``g``; rows outside the kept band (below ``fmin``) are removed. Long
recordings stream through in chunks of frames: an output sample depends only on the frames
overlapping it, so each chunk is inverted from exactly those frames, and the concatenated
chunks equal inverting the whole recording at once.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import soundfile as sf

from raybird.dsp.spectrogram import SpecConfig, n_frames_for, row_freqs
from raybird.extras import require

MaskFrames = Callable[[int, int], np.ndarray]  # (g0, g1) -> (channels, rows, g1 - g0)


def row_bins(cfg: SpecConfig) -> np.ndarray:
    """One-sided FFT bin (0 .. n_fft // 2) of every spectrogram row (both mirrored rows of a
    two-sided config map to the same bin)."""
    return np.round(np.abs(row_freqs(cfg)) / cfg.bin_hz).astype(int)


def bin_gain(mask: np.ndarray, cfg: SpecConfig) -> np.ndarray:
    """``(rows, n)`` mask -> ``(n_fft // 2 + 1, n)`` 0/1 gain per FFT bin."""
    gain = np.zeros((cfg.n_fft // 2 + 1, mask.shape[1]), np.float32)
    np.maximum.at(gain, row_bins(cfg), mask.astype(np.float32))
    return gain


def _lead(cfg: SpecConfig) -> int:
    return cfg.win_length // 2 if cfg.center else 0


def _chunk(
    buf: np.ndarray, buf_start: int, a: int, b: int, n_frames: int, mask_frames: MaskFrames, cfg: SpecConfig
) -> np.ndarray:
    """Denoised samples ``[a, b)`` of every channel; ``buf[:, 0]`` is sample ``buf_start``."""
    librosa = require("librosa")
    hop, win, n_fft = cfg.hop_length, cfg.win_length, cfg.n_fft
    g0 = max(0, (a + _lead(cfg) - win) // hop + 1)
    g1 = min(n_frames, (b - 1 + _lead(cfg)) // hop + 1)
    out = np.zeros((buf.shape[0], b - a), np.float32)
    if g1 <= g0:
        return out
    # librosa centres a short window in the n_fft frame: start the segment so that its frame j
    # is our frame g0 + j.
    start = g0 * hop - _lead(cfg) - (n_fft - win) // 2
    length = (g1 - g0 - 1) * hop + n_fft
    seg = np.zeros((buf.shape[0], length), np.float32)
    lo, hi = max(start, buf_start), min(start + length, buf_start + buf.shape[1])
    if hi > lo:
        seg[:, lo - start : hi - start] = buf[:, lo - buf_start : hi - buf_start]
    masks = mask_frames(g0, g1)
    for c in range(buf.shape[0]):
        spec = librosa.stft(seg[c], n_fft=n_fft, hop_length=hop, win_length=win, window=cfg.window, center=False)
        spec *= bin_gain(masks[c], cfg)
        y = librosa.istft(
            spec, hop_length=hop, win_length=win, n_fft=n_fft, window=cfg.window, center=False, length=length
        )
        out[c] = y[a - start : b - start]
    return out


def iter_denoised(
    blocks: Iterable[np.ndarray], mask_frames: MaskFrames, cfg: SpecConfig, chunk_frames: int = 2048
) -> Iterator[np.ndarray]:
    """Denoise a stream of audio blocks ``(C, n)`` at ``cfg.sample_rate``. ``mask_frames(g0, g1)``
    returns the masks ``(C, rows, g1 - g0)`` of frames ``g0..g1``. Yields ``(C, m)`` float32 blocks
    whose concatenation is as long as the input."""
    hop, step = cfg.hop_length, chunk_frames * cfg.hop_length
    pad = (cfg.n_fft - cfg.win_length) // 2

    def needed(b: int) -> int:  # samples the frames reaching into [.., b) read
        return ((b - 1 + _lead(cfg)) // hop) * hop - _lead(cfg) - pad + cfg.n_fft

    buf, buf_start, total, a = None, 0, 0, 0
    for block in blocks:
        block = np.asarray(block, np.float32)
        buf = block if buf is None else np.concatenate([buf, block], axis=1)
        total += block.shape[1]
        while needed(a + step) <= total:
            yield _chunk(buf, buf_start, a, a + step, np.iinfo(np.int64).max, mask_frames, cfg)
            a += step
            keep = max(0, (a + _lead(cfg) - cfg.win_length) // hop + 1) * hop - _lead(cfg) - pad
            if keep > buf_start:
                buf, buf_start = buf[:, keep - buf_start :], keep
    n_frames = n_frames_for(total, cfg)
    while a < total:
        b = min(a + step, total)
        yield _chunk(buf, buf_start, a, b, n_frames, mask_frames, cfg)
        a = b


def denoise(samples: np.ndarray, mask: np.ndarray, cfg: SpecConfig, chunk_frames: int = 2048) -> np.ndarray:
    """Whole-signal convenience: ``samples`` ``(n,)`` or ``(C, n)``, ``mask`` ``(rows, frames)`` or
    ``(C, rows, frames)``; returns the denoised signal of the same shape."""
    x = np.atleast_2d(samples)
    m = mask[None] if mask.ndim == 2 else mask
    y = np.concatenate(list(iter_denoised([x], lambda g0, g1: _frames(m, g0, g1), cfg, chunk_frames)), axis=1)
    return y[0] if np.ndim(samples) == 1 else y


def _frames(mask: np.ndarray, g0: int, g1: int) -> np.ndarray:
    """Frames ``g0..g1`` of ``(C, rows, frames)``, zero past the end."""
    out = np.zeros(mask.shape[:2] + (g1 - g0,), mask.dtype)
    got = mask[..., g0 : min(g1, mask.shape[-1])]
    out[..., : got.shape[-1]] = got
    return out


def write_denoised(path, blocks: Iterable[np.ndarray], mask_frames: MaskFrames, cfg: SpecConfig, channels: int) -> int:
    """Stream the denoised audio into a 16-bit WAV file (path or file object); returns the
    number of samples written."""
    n = 0
    with sf.SoundFile(path, "w", samplerate=cfg.sample_rate, channels=channels, subtype="PCM_16", format="WAV") as f:
        for y in iter_denoised(blocks, mask_frames, cfg):
            f.write(np.clip(y.T, -1.0, 1.0))
            n += y.shape[1]
    return n
