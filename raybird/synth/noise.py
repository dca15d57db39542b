"""Synthetic backgrounds: coloured noise plus wind, rain, insects, engines, clicks and frogs (the
hard negatives), or a window of real background clips (see docs/synthetic.md)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft
import scipy.io.wavfile
import scipy.ndimage
import scipy.signal

NOISES = ("wind", "rain", "insect", "engine", "clicks", "frog")
NOISE_P = (0.3, 0.15, 0.35, 0.15, 0.2, 0.15)
# level of each noise relative to the coloured base noise (dB, RMS)
NOISE_LEVEL_DB = {
    "wind": (0, 15),
    "rain": (-10, 5),
    "insect": (-6, 12),
    "engine": (-6, 10),
    "clicks": (-15, 0),
    "frog": (-6, 10),
}


def shaped_noise(rng, n: int, sr: int, gain) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``gain(f)``, unit RMS."""
    f = scipy.fft.rfftfreq(n, 1.0 / sr)
    f[0] = f[1]
    spec = (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) * gain(f)
    x = scipy.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _slow(rng, n: int, sr: int, step_s: float) -> np.ndarray:
    """Smooth random curve (zero mean, unit SD) with knots every ``step_s`` seconds."""
    knots = rng.standard_normal(int(n / sr / step_s) + 2)
    return np.interp(np.arange(n) / sr / step_s, np.arange(len(knots)), knots)


def _gate(rng, n: int, sr: int, on_s, off_s, ramp_s: float = 0.02) -> np.ndarray:
    """0/1 envelope of bursts (durations drawn from ``on_s``, pauses from ``off_s``), smoothed."""
    g = np.zeros(n)
    t = rng.uniform(-on_s[1], off_s[1])
    while t < n / sr:
        on = rng.uniform(*on_s)
        g[max(0, int(t * sr)) : max(0, int((t + on) * sr))] = 1.0
        t += on + rng.uniform(*off_s)
    w = np.hanning(max(1, int(ramp_s * sr)) + 2)[1:-1]
    return scipy.signal.oaconvolve(g, w / w.sum(), mode="same")


def _impulses(rng, n: int, sr: int, rate: float, click_ms: float, spread_db: float) -> np.ndarray:
    x = np.zeros(n)
    k = rng.poisson(rate * n / sr)
    np.add.at(x, rng.integers(0, n, k), rng.choice([-1.0, 1.0], k) * 10 ** (rng.normal(0, spread_db / 20, k)))
    m = max(2, int(click_ms * sr / 1000))
    kernel = rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 5))
    return scipy.signal.oaconvolve(x, kernel)[:n]


def _noise(rng, kind: str, n: int, sr: int) -> tuple[np.ndarray, dict]:
    t = np.arange(n) / sr
    nyq = sr / 2
    u = rng.uniform
    if kind == "wind":
        fc = u(100.0, 700.0)
        x = shaped_noise(rng, n, sr, lambda f: f**-0.5 / np.sqrt(1 + (f / fc) ** 4))
        x *= np.exp(u(0.5, 1.5) * _slow(rng, n, sr, u(0.3, 2.0)))
        info = dict(cutoff_hz=fc)
    elif kind == "rain":
        rate = u(20.0, 400.0)
        x, info = _impulses(rng, n, sr, rate, u(1.0, 4.0), 6.0), dict(rate_hz=rate)
    elif kind == "clicks":
        rate = u(0.3, 3.0)
        x, info = _impulses(rng, n, sr, rate, u(0.3, 2.0), 4.0), dict(rate_hz=rate)
    elif kind == "insect":
        # Calls last at most 2 s; insects sing for longer (continuous, or bouts of 5-12 s), and a
        # tonal insect is always pulsed (a cricket's pulse train) at a steady pitch, so duration
        # tells them apart -- a gated pure tone of 0.3-3 s would be a bird whistle by every cue,
        # and a pulsed tone of 3 s a bird's trill of flat notes.
        fc = u(4000.0, min(10000.0, 0.9 * nyq))
        if rng.random() < 0.4:  # pulsed tone (cricket-like)
            bw, x = 0.0, np.sin(2 * np.pi * fc * t + u(0, 2 * np.pi))
        else:  # narrow-band noise (cicada-like buzz)
            bw = u(80.0, 1500.0)
            x = shaped_noise(rng, n, sr, lambda f: np.exp(-0.5 * ((f - fc) / (bw / 2)) ** 2))
        pulse = u(20.0, 250.0) if bw == 0.0 or rng.random() < 0.6 else 0.0
        if pulse:
            x *= (0.5 + 0.5 * np.cos(2 * np.pi * pulse * t)) ** u(1.0, 4.0)
        if rng.random() < 0.4:
            x *= _gate(rng, n, sr, (5.0, 12.0), (0.5, 3.0))
        info = dict(freq_hz=fc, bandwidth_hz=bw, pulse_hz=pulse)
    elif kind == "engine":
        f0 = u(25.0, 120.0)
        cycles = np.cumsum(f0 * (1 + 0.03 * _slow(rng, n, sr, u(0.5, 3.0)))) / sr
        n_harm = int(min(20, 2500 // f0))
        amps = np.arange(1, n_harm + 1) ** -u(0.5, 1.5) * u(0.2, 1.0, n_harm)
        theta = np.linspace(0.0, 1.0, 1024, endpoint=False)  # one period, looked up (fast)
        h = np.arange(1, n_harm + 1)[:, None]
        period = (amps[:, None] * np.sin(2 * np.pi * h * theta + u(0, 2 * np.pi, (n_harm, 1)))).sum(axis=0)
        x = np.interp(cycles, theta, period, period=1.0)
        info = dict(f0_hz=f0)
    else:  # frog: pulsed croaks whose energy stays below the birds' band (a 100-500 Hz fundamental
        # and its harmonics up to 1.2 kHz). Croaks with harmonics up into the band taught a model
        # to reject storm-petrel purrs (coverage recall 1.00 -> 0.18): they are the same sound.
        fc = u(100.0, 500.0)
        rate = u(10.0, 80.0)
        decay = u(0.4, 0.8)
        x = sum(decay**k * np.sin(2 * np.pi * (k + 1) * fc * t + u(0, 2 * np.pi)) for k in range(int(1200.0 // fc)))
        x *= np.sin(np.pi * np.mod(t * rate, 1.0)) ** 4
        x *= _gate(rng, n, sr, (0.1, 0.8), (0.4, 2.5), ramp_s=0.005)
        info = dict(freq_hz=fc, pulse_hz=rate)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12), dict(kind=kind, **info)


def make_background(rng, n: int, sr: int, kinds: Sequence[str], real=None) -> tuple[np.ndarray, list[dict]]:
    """The background: coloured base noise, or ``real`` (a window of real background clips,
    unit RMS, with their names), plus the noises ``kinds``."""
    if real is not None:
        x, parts = real[0], [dict(kind="real", clips=real[1])]
    else:
        exponent, roll = rng.uniform(0.0, 2.0), rng.uniform(3000.0, sr / 2)
        x = shaped_noise(rng, n, sr, lambda f: f ** (-exponent / 2) / np.sqrt(1 + (f / roll) ** 4))
        parts = [dict(kind="colored", exponent=exponent, rolloff_hz=roll)]
    for kind in kinds:
        y, info = _noise(rng, kind, n, sr)
        level = rng.uniform(*NOISE_LEVEL_DB[kind])
        x += 10 ** (level / 20) * y
        parts.append(dict(info, level_db=level))
    return x, parts
