"""Synthetic bird-sound archive with exact truth, deterministic from a seed.

Every recording mixes birds singing into a background built to be hard, and comes with a
Raven selection table and an exact pixel mask. Recording ``i`` of seed ``s`` is generated
from ``numpy.random.default_rng([s, i])`` alone, so an archive of N+1 recordings starts with
the same N files (byte for byte) as an archive of N.

**Birds.** A recording holds 0-3 singers. A singer is a random "species": a frequency centre, a
repertoire of 1-4 syllable types and a style -- songs (a motif of 1-5 syllables repeated 1-5 times
with short gaps) or calls (single syllables at irregular intervals). Renditions of a syllable type
vary slightly (duration, pitch, level). Singers are placed independently, the others 0-10 dB quieter
than the first, so songs overlap now and then. Syllable types: FM ``sweep`` (linear or exponential,
up or down), ``chirp`` (short, fast, curved sweep), ``whistle`` (near-flat tone), ``warble``
(sinusoidal FM), ``trill`` (repeated short notes, swept or near flat), ``stack`` (a 1-2.5 kHz fundamental plus 1-8
harmonics, as many as fit below the band's top, of decaying amplitude with +-4 dB jitter each: up to
the broadband harmonic stacks of finches), ``buzz`` (an amplitude-modulated stack), ``rasp`` (a
harsh call: noise-like energy filling a 0.4-2.5 octave band for 40-500 ms, sometimes pulsed --
corvids, parrots, gulls, the noisy notes of finches; made of many tones at random frequencies, so
its waveform is fixed by its parameters) and ``purr`` (a regular train of short noise-like pulses,
15-60 per second, over a 1-3 octave band tilted towards its low end, for 0.3-2 s: the purr of a
storm-petrel, measured on XC46092 and XC663885 at 30-38 pulses per second, 22-33 dB deep, for
1.4-1.7 s). Every frequency component of every call lies in ``BIRD_BAND_HZ`` (1-10 kHz; at most 0.45
x the sample rate) and every call lasts ``CALL_DURATION_S`` (20 ms to 2 s), with a Hann, Tukey or
attack-decay envelope. A fraction ``p_empty`` of the recordings has no bird.

**Background** (never in the truth): coloured noise (white to brown, random high-frequency roll-off),
or with ``backgrounds`` a window of real background clips (:mod:`raybird.synth.backgrounds`), plus a random
subset of ``NOISES``: wind (low-passed noise in slow gusts), rain (dense random
clicks), insect (a 4-10 kHz narrow-band noise or pure tone: cicadas, crickets; tones always pulsed
at 20-250 Hz, sounding throughout or in bouts of 5-12 s), engine (low hum with harmonics), clicks
(sparse loud broadband impulses) and frog (pulsed croaks of a 100-500 Hz fundamental, harmonics up
to 1.2 kHz); insect, clicks and frog are the hard negatives -- each with a cue that tells it apart
from the birds (duration and pulsing; broadband; energy below 1.2 kHz). Rain's clicks are broadband
too, but come at random (Poisson) times all through the recording, where a purr's pulses keep a
regular rhythm for at most 2 s. A negative that shares every cue with some real bird teaches a model
to miss that bird: version 1 gated pure tones for 0.3-3 s and pulsed 0.3-2.5 kHz croaks (bird
whistles and stacks by every cue); version 2's croaks with harmonics up to 8 kHz are storm-petrel
purrs, and a model trained on them found 2 of 11 petrel songs. Until version 8 a long train of
broadband pulses was never a bird (rasps last at most 0.5 s), and a model trained longer learnt to
leave petrel purrs half covered, as if they were rain.

**Truth mask.** For each call, ``c`` = the clean call alone (rendered at the SpecConfig's
sample rate, placed at its start, at its level in the mono mix-down), ``M = magnitude(c, cfg)``
on the global frame grid, and ``B = magnitude(background, cfg)`` of the recording's background
(mono mix-down, the same scale). The call's pixels are its *audible core*: ``M >= max(M) *
10 ** (-TRUTH_DB / 20)`` (within ``TRUTH_DB`` = 40 dB of that call's own peak) **and**
``local(M**2) >= local(B**2)``, ``local`` the mean over the pixel's 3 x 3 neighbourhood
(:data:`AUDIBLE_PATCH`): the call carries at least the background's power around that pixel,
the ideal binary mask of source separation with a 0 dB local criterion, taken over a patch.
Until version 6 the test was per pixel, ``M >= B``, which made the truth depend on the noise's
draw at each pixel (speckle no segmenter can predict) and, for rasps, on their own speckle.
The mask is the union over calls (uint8, ``(cfg.n_rows, frames)`` with
``frames = n_frames_for(round(n_samples * cfg.sample_rate / sample_rate), cfg)``). It does not
depend on the overall level, DC offset or clipping. Why the audibility term: without it, 34 % of
the truth pixels of recordings at SNR <= 0 dB lay under the background (measured on 30 recordings),
where no segmenter can see them -- an IoU ceiling of ~0.66 there, and labels that taught a model
to paint around every call.

**Boxes.** One Raven box per audible call (one with at least one truth pixel; the others are
in ``meta["calls"]`` with ``audible: False``): the bounding rectangle of that call's pixels, with
its edges on the pixel edges (first/last frame centre -/+ half a hop, lowest/highest bin
frequency -/+ half a bin, clamped to the recording), so ``label_masks.boxes_to_mask`` of a box
is exactly that rectangle. Label ``sp<NN>-<kind>``.

**SNR** (drawn uniformly from ``snr_db`` per recording, exact up to float rounding):
``10 log10(P_v / P_b)`` where ``P_v`` is the mean square of the clean vocal track over the
samples inside at least one call (from its start to its end: :meth:`Call.span`), and
``P_b`` the mean square, over the whole recording, of the background band-passed (ideal
FFT filter) to the calls' band -- from the lowest to the highest frequency of the truth
mask. See :func:`measure_snr`.

**Level and defects.** The mix is scaled to an RMS level drawn from ``level_dbfs``
(lowered where the peak would reach full scale); a fraction ``p_dc`` gets a DC offset, a
fraction ``p_clip`` is driven 1.3-4x past full scale and clipped (the returned ``vocals``
and ``background`` are before DC offset and clipping).

**Stereo** (a fraction ``p_stereo``): each call is in the left, the right or both channels
(at different gains); the right background is a slightly delayed copy of the left plus
independent noise. The truth mask and the SNR refer to the mono mix-down (mean of the
channels): the mask is the union over all calls whatever their channel; each box carries the
channel where its call is loudest.

Files per recording in ``out_dir``: ``<name>.flac`` or ``<name>.wav`` (16-bit; WAV sometimes
24-bit or float), ``<name>.Table.1.selections.txt`` and ``<name>.truth.npz`` (``mask`` and
``spec_config`` = ``cfg.to_json()``).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import scipy.fft
import scipy.io.wavfile
import scipy.ndimage
import scipy.signal
import soundfile as sf

from raybird.dsp.spectrogram import SpecConfig, frame_times, get_config, magnitude, n_frames_for, row_freqs
from raybird.io.labels import Box, write_raven

# Bumped whenever the same seed would give other audio or truth: caches of generated test sets
# (benchmarks/accuracy.py) are keyed by it. 2: pulsed, longer insects; low frogs; audible truth.
# 3: frogs below 1.2 kHz. 4: a call's core reaches 40 dB below its peak (was 20). 5: stacks and
# buzzes with up to 9 harmonics. 6: rasps (noise-like harsh calls). 7: audibility over a 3 x 3 patch.
# 8: purrs (regular trains of noise-like pulses). 9: trills of near-flat notes; insect bouts of 5-12 s.
GENERATOR_VERSION = 9
TRUTH_DB = 40.0
AUDIBLE_PATCH = (3, 3)  # rows x frames over which call and background power are compared
BIRD_BAND_HZ = (1000.0, 10000.0)
CALL_DURATION_S = (0.02, 2.0)
KINDS = ("sweep", "chirp", "whistle", "warble", "trill", "stack", "buzz", "rasp", "purr")
NOISE_LIKE = ("rasp", "purr")  # kinds made of band noise (:func:`_band_noise`), not of harmonics
KIND_P = (0.17, 0.11, 0.15, 0.10, 0.12, 0.13, 0.08, 0.08, 0.06)
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
_MARGIN_S = 0.02  # calls start and end at least this far from the recording's edges


@dataclass(frozen=True)
class Call:
    """One rendered syllable: ``params`` fixes its waveform (see :func:`render_call`)."""

    kind: str
    start_s: float
    dur_s: float
    amp: float
    params: dict
    f_lo: float  # lowest / highest frequency of any of its components (Hz)
    f_hi: float
    gains: tuple  # per channel
    singer: int
    label: str

    def span(self, sr: int) -> tuple[int, int]:
        """Sample range [start, stop) of the call at sample rate ``sr``."""
        a = int(round(self.start_s * sr))
        return a, a + max(1, int(round(self.dur_s * sr)))


@dataclass
class Recording:
    audio: np.ndarray  # float32 (n,) or (n, 2), as written: gain, DC offset, clipping
    vocals: np.ndarray  # the clean vocal track, same shape and scale, before DC/clipping
    background: np.ndarray  # everything else, same shape and scale, before DC/clipping
    sample_rate: int
    calls: list
    boxes: list  # one per audible call (meta["calls"][i]["audible"]), in call order
    mask: np.ndarray  # uint8 (cfg.n_rows, frames)
    meta: dict


# ---- calls ------------------------------------------------------------------------------------
def _f0(p: dict, tau: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Fundamental frequency (Hz); ``tau`` is the position in the call (or note) in [0, 1]."""
    c = p["contour"]
    if c == "lin":
        return p["fa"] + (p["fb"] - p["fa"]) * tau
    if c == "exp":
        return p["fa"] * (p["fb"] / p["fa"]) ** tau
    if c == "pow":
        return p["fb"] + (p["fa"] - p["fb"]) * (1.0 - tau) ** p["shape"]
    if c == "sine":
        return p["fa"] + p["dev"] * np.sin(2 * np.pi * p["fm"] * t + p["phi"])
    return p["fa"] * (1.0 + p["drift"] * tau + 4.0 * p["bend"] * tau * (1.0 - tau))  # flat


def _envelope(p: dict, tau: np.ndarray) -> np.ndarray:
    e = p["env"]
    if e == "hann":
        return np.sin(np.pi * tau) ** 2
    if e == "tukey":
        a = p["env_p"]
        edge = np.minimum(tau, 1.0 - tau)
        return np.where(edge < a / 2, 0.5 * (1 - np.cos(2 * np.pi * np.minimum(edge / a, 0.5))), 1.0)
    a = p["env_p"]  # attack-decay: sin^2 rise over a, then (1 - x)^k fall
    rise = np.sin(0.5 * np.pi * np.minimum(tau / a, 1.0)) ** 2
    return rise * np.clip((1.0 - tau) / (1.0 - a), 0.0, 1.0) ** p["decay"]


def _pulses(p: dict, t: np.ndarray, dur: float) -> tuple[np.ndarray, np.ndarray]:
    """``(tau, env)`` of the call: per note for trills, over the whole call otherwise."""
    if p["note_rate"]:
        period = 1.0 / p["note_rate"]
        local = np.mod(t, period)
        note = p["note_duty"] * period
        tau = np.clip(local / note, 0.0, 1.0)
        return tau, np.where(local < note, np.sin(np.pi * tau) ** 2, 0.0)
    tau = t / dur
    return tau, _envelope(p, tau)


def render_call(call: Call, sr: int) -> np.ndarray:
    """The call's waveform at sample rate ``sr`` (float32, ``call.span(sr)`` long, mono)."""
    p = call.params
    start, stop = call.span(sr)
    t = np.arange(stop - start) / sr
    tau, env = _pulses(p, t, call.dur_s)
    if p["am_depth"]:
        env = env * (1.0 - p["am_depth"] * (0.5 + 0.5 * np.cos(2 * np.pi * p["am_rate"] * t)))
    if call.kind in NOISE_LIKE:  # its f0 contour only spans the band (for band fitting): no phase to follow
        x = _band_noise(p, t)
    else:
        phase = 2 * np.pi * np.cumsum(_f0(p, tau, t)) / sr
        x = sum(a * np.sin(h * phase + ph) for h, (a, ph) in enumerate(zip(p["harm"], p["harm_phase"]), start=1))
    return (call.amp * env * x).astype(np.float32)


def _band_noise(p: dict, t: np.ndarray) -> np.ndarray:
    """Noise-like sound over ``[fa, fb]``: ``n_tones`` tones at random frequencies and phases drawn
    from ``p["seed"]`` (the same at every sample rate), tilted by ``tilt_db`` across the band, at the
    RMS of a unit sine."""
    rng = np.random.default_rng(p["seed"])
    pos = rng.random(p["n_tones"])
    phases = rng.uniform(0, 2 * np.pi, p["n_tones"])
    amps = 10 ** (p["tilt_db"] * (pos - 0.5) / 20)
    x = np.zeros(len(t))
    for f, ph, a in zip(p["fa"] + (p["fb"] - p["fa"]) * pos, phases, amps):
        x += a * np.sin(2 * np.pi * f * t + ph)
    return x / np.sqrt(np.sum(amps**2))


def _f0_range(p: dict, dur: float) -> tuple[float, float]:
    t = np.linspace(0.0, min(dur, 1.0 / p["note_rate"]) if p["note_rate"] else dur, 2001)
    f = _f0(p, t / t[-1], t)
    return float(f.min()), float(f.max())


def _fit_band(p: dict, dur: float, fmax: float) -> tuple[float, float]:
    """Scale the call's frequencies so that all components lie in [1 kHz, fmax]; drop
    harmonics that cannot fit. Returns the components' (lowest, highest) frequency."""
    lo_band, hi_band = BIRD_BAND_HZ[0] * 1.005, fmax * 0.995  # margin: f0 sampled, not exact
    for _ in range(2):
        lo, hi = _f0_range(p, dur)
        n_harm = max(1, min(len(p["harm"]), int(hi_band // hi)))
        p["harm"], p["harm_phase"] = p["harm"][:n_harm], p["harm_phase"][:n_harm]
        top = hi * n_harm
        scale = lo_band / lo if lo < lo_band else (hi_band / top if top > hi_band else 1.0)
        for k in ("fa", "fb", "dev"):
            p[k] *= scale
    lo, hi = _f0_range(p, dur)
    return lo, hi * len(p["harm"])


def _syllable(rng: np.random.Generator, kind: str, centre: float, fmax: float) -> tuple[dict, float]:
    """A syllable type of a species: its parameters and nominal duration."""

    def freq(spread=0.8):
        return float(np.clip(centre * 2 ** rng.uniform(-spread, spread), BIRD_BAND_HZ[0], fmax))

    u = rng.uniform
    p = dict(
        contour="flat",
        fa=freq(),
        fb=0.0,
        dev=0.0,
        fm=0.0,
        phi=u(0, 2 * np.pi),
        drift=0.0,
        bend=0.0,
        shape=1.0,
        note_rate=0.0,
        note_duty=0.0,
        am_rate=0.0,
        am_depth=0.0,
        env=str(rng.choice(["hann", "tukey", "ad"])),
        env_p=u(0.1, 0.6),
        decay=u(1.0, 3.0),
    )
    octaves = u(0.3, 1.5) * rng.choice([-1, 1])
    if kind == "sweep":
        dur = u(0.03, 0.4)
        p.update(contour=str(rng.choice(["lin", "exp"])), fb=p["fa"] * 2**octaves)
    elif kind == "chirp":
        dur = u(0.02, 0.08)
        p.update(contour="pow", fa=freq(0.5) * 1.6, fb=freq(0.5) / 1.6, shape=u(0.3, 3.0), env="hann")
        if rng.random() < 0.3:
            p.update(fa=p["fb"], fb=p["fa"])
    elif kind == "whistle":
        dur = u(0.08, 0.8)
        p.update(drift=u(-0.1, 0.1), bend=u(-0.05, 0.05))
    elif kind == "warble":
        dur = u(0.15, 1.5)
        p.update(contour="sine", dev=p["fa"] * u(0.04, 0.3), fm=u(4.0, 40.0))
    elif kind == "trill":
        dur = u(0.2, 2.0)
        p.update(
            contour=str(rng.choice(["lin", "exp"])),
            fb=p["fa"] * 2 ** (octaves * u(0.05, 0.7)),
            note_rate=u(8.0, 35.0),
            note_duty=u(0.35, 0.75),
        )
    elif kind == "rasp":  # the band's edges are fa < fb, so band fitting and renditions scale it
        dur = u(0.04, 0.5)
        p.update(contour="lin", fb=p["fa"] * 2 ** u(0.4, 2.5), tilt_db=u(-12.0, 12.0), seed=int(rng.integers(0, 2**31)))
        if rng.random() < 0.4:
            p.update(am_rate=u(20.0, 80.0), am_depth=u(0.5, 1.0))
    elif kind == "purr":  # pulses are notes (as in a trill) of band noise, at a steady rate
        dur = u(0.3, 2.0)
        fa = max(BIRD_BAND_HZ[0], freq(0.5) / 2 ** u(0.5, 1.0))
        p.update(
            contour="lin",
            fa=fa,
            fb=fa * 2 ** u(1.0, 3.0),
            tilt_db=u(-20.0, 0.0),
            seed=int(rng.integers(0, 2**31)),
            note_rate=u(15.0, 60.0),
            note_duty=u(0.3, 0.7),
        )
    else:  # stack, buzz: low fundamental with harmonics
        dur = u(0.05, 0.6) if kind == "stack" else u(0.1, 0.8)
        p.update(fa=u(1000.0, 2500.0), drift=u(-0.15, 0.15), bend=u(-0.1, 0.1))
        if kind == "buzz":
            p.update(am_rate=u(40.0, 150.0), am_depth=u(0.6, 1.0))
    if kind in NOISE_LIKE:  # one band of noise-like tones
        p["n_tones"] = int(np.clip((p["fb"] - p["fa"]) / 15.0, 24, 500))  # ~3 per frequency bin
        n_harm, decay = 1, 1.0
    elif kind in ("stack", "buzz"):  # 2-9 harmonics, a random formant-like tilt: some reach 10 kHz
        n_harm = int(rng.integers(2, 10))
        decay = u(0.4, 0.95)
    else:  # mostly pure, sometimes a weak second/third harmonic
        n_harm = int(rng.integers(2, 4)) if rng.random() < 0.35 else 1
        decay = u(0.1, 0.4)
    jitter_db = rng.normal(0.0, 4.0, n_harm)  # overtones only: the fundamental keeps level 1
    jitter_db[0] = 0.0
    p["harm"] = tuple(float(decay**h * 10 ** (jitter_db[h] / 20)) for h in range(n_harm))
    p["harm_phase"] = tuple(float(x) for x in u(0, 2 * np.pi, n_harm))
    _fit_band(p, dur, fmax)
    return p, dur


def _species(rng: np.random.Generator, fmax: float) -> dict:
    centre = float(np.exp(rng.uniform(np.log(1500.0), np.log(min(7000.0, 0.7 * fmax)))))
    n_types = int(rng.integers(1, 5))
    kinds = rng.choice(KINDS, size=n_types, p=KIND_P)
    return dict(
        id=int(rng.integers(0, 100)),
        kinds=[str(k) for k in kinds],
        types=[_syllable(rng, str(k), centre, fmax) for k in kinds],
        song=rng.random() < 0.65,
        motif=rng.integers(0, n_types, size=int(rng.integers(1, 6))),
        gap_s=rng.uniform(0.01, 0.15),
        pause_s=(rng.uniform(0.3, 1.5), rng.uniform(1.5, 5.0)),
    )


def _rendition(rng, species, k: int, start: float, amp: float, fmax: float, singer: int, gains) -> Call:
    p, dur = dict(species["types"][k][0]), species["types"][k][1]
    kind = species["kinds"][k]
    dur = float(np.clip(dur * np.exp(rng.normal(0, 0.06)), *CALL_DURATION_S))
    scale = float(np.exp(rng.normal(0, 0.02)))
    for key in ("fa", "fb", "dev"):
        p[key] *= scale
    f_lo, f_hi = _fit_band(p, dur, fmax)
    return Call(
        kind,
        round(start, 6),
        dur,
        float(amp * 10 ** (rng.normal(0, 2) / 20)),
        p,
        f_lo,
        f_hi,
        gains,
        singer,
        f"sp{species['id']:02d}-{kind}",
    )


def _sing(rng, species, singer: int, duration: float, level_db: float, fmax: float, gains) -> list[Call]:
    """Calls of one singer over the recording: songs (motif repeats) or single calls."""
    calls = []
    t = rng.uniform(-0.5, 0.5 * duration)
    amp = 10 ** (level_db / 20)
    while t < duration:
        if species["song"]:
            seq = list(species["motif"]) * int(rng.integers(1, 6))
        else:
            seq = [int(rng.integers(len(species["types"])))]
        for k in seq:
            c = _rendition(rng, species, k, t, amp, fmax, singer, gains)
            if c.start_s >= _MARGIN_S and c.start_s + c.dur_s <= duration - _MARGIN_S:
                calls.append(c)
            t += c.dur_s + species["gap_s"] * np.exp(rng.normal(0, 0.2))
        t += rng.uniform(*species["pause_s"]) if species["song"] else rng.uniform(0.15, 2.5)
    return calls


# ---- truth -----------------------------------------------------------------------------------
def call_magnitude(samples: np.ndarray, offset: int, cfg: SpecConfig, n_frames: int) -> tuple[np.ndarray, int]:
    """|STFT| of one clean call starting at sample ``offset`` (at ``cfg.sample_rate``) over the
    frames it reaches: ``(magnitude, first_frame)``."""
    c = cfg.win_length // 2 if cfg.center else 0
    first = max(0, (offset + c - cfg.win_length) // cfg.hop_length + 1)
    last = min(n_frames - 1, -(-(offset + len(samples) + c) // cfg.hop_length) - 1)
    return magnitude(samples, cfg, first_frame=first, n_frames=last - first + 1, sample_offset=offset), first


def call_mask(samples: np.ndarray, offset: int, cfg: SpecConfig, n_frames: int) -> tuple[np.ndarray, int]:
    """The pixels of one clean call within :data:`TRUTH_DB` of its peak (its core, before the
    audibility test of the module docstring): ``(mask, first_frame)`` over the frames it reaches."""
    mag, first = call_magnitude(samples, offset, cfg, n_frames)
    return core_of(mag), first


def core_of(mag: np.ndarray) -> np.ndarray:
    return (mag >= mag.max() * 10 ** (-TRUTH_DB / 20)).astype(np.uint8)


def audible_core(core: np.ndarray, mag: np.ndarray, background_power: np.ndarray) -> np.ndarray:
    """The truth rule for one call (module docstring): the pixels of its ``core`` where its local
    power (of ``mag``, silent beyond its frames) reaches ``background_power`` over the same frames."""
    return core & (local_power(mag, "constant") >= background_power)


def local_power(mag: np.ndarray, mode: str) -> np.ndarray:
    """Mean power over each pixel's :data:`AUDIBLE_PATCH` neighbourhood (the audibility test)."""
    return scipy.ndimage.uniform_filter(np.square(mag, dtype=np.float64), size=AUDIBLE_PATCH, mode=mode)


def _box(m: np.ndarray, first: int, cfg: SpecConfig, duration: float, call: Call) -> Box:
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0)) + first
    t = frame_times(cols[-1] - cols[0] + 1, cfg, first_frame=cols[0])
    f = np.abs(row_freqs(cfg))[rows]
    half_t, half_f = cfg.frame_s / 2, cfg.bin_hz / 2
    return Box(
        max(0.0, float(t[0]) - half_t),
        min(duration, float(t[-1]) + half_t),
        max(0.0, float(f.min()) - half_f),
        float(f.max()) + half_f,
        call.label,
        int(np.argmax(call.gains)),
    )


def measure_snr(
    vocals: np.ndarray, background: np.ndarray, sr: int, active: np.ndarray, band: tuple[float, float]
) -> float:
    """SNR (dB) as defined in the module docstring; stereo input is mixed down first.
    ``active``: boolean per sample, True where a call sounds; ``band``: (low, high) Hz."""
    v = vocals.mean(axis=1) if vocals.ndim == 2 else vocals
    b = background.mean(axis=1) if background.ndim == 2 else background
    p_v = float(np.mean(np.square(v[active], dtype=np.float64)))
    spec = scipy.fft.rfft(b.astype(np.float64))
    f = scipy.fft.rfftfreq(len(b), 1.0 / sr)
    sel = (f >= band[0]) & (f <= band[1])
    p_b = 2.0 * float(np.sum(np.abs(spec[sel]) ** 2)) / len(b) ** 2
    return 10 * np.log10(p_v / p_b)


# ---- background ------------------------------------------------------------------------------
def _shaped_noise(rng, n: int, sr: int, gain) -> np.ndarray:
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
        x = _shaped_noise(rng, n, sr, lambda f: f**-0.5 / np.sqrt(1 + (f / fc) ** 4))
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
            x = _shaped_noise(rng, n, sr, lambda f: np.exp(-0.5 * ((f - fc) / (bw / 2)) ** 2))
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


def _background(rng, n: int, sr: int, kinds: Sequence[str], real=None) -> tuple[np.ndarray, list[dict]]:
    """The background: coloured base noise, or ``real`` (a window of real background clips,
    unit RMS, with their names), plus the noises ``kinds``."""
    if real is not None:
        x, parts = real[0], [dict(kind="real", clips=real[1])]
    else:
        exponent, roll = rng.uniform(0.0, 2.0), rng.uniform(3000.0, sr / 2)
        x = _shaped_noise(rng, n, sr, lambda f: f ** (-exponent / 2) / np.sqrt(1 + (f / roll) ** 4))
        parts = [dict(kind="colored", exponent=exponent, rolloff_hz=roll)]
    for kind in kinds:
        y, info = _noise(rng, kind, n, sr)
        level = rng.uniform(*NOISE_LEVEL_DB[kind])
        x += 10 ** (level / 20) * y
        parts.append(dict(info, level_db=level))
    return x, parts


# ---- one recording --------------------------------------------------------------------------
def generate_recording(
    rng: np.random.Generator,
    duration_s: float = 10.0,
    sample_rate: Optional[int] = None,
    spec_config: SpecConfig | str | None = None,
    snr_db: tuple = (-5.0, 20.0),
    empty: bool = False,
    stereo: bool = False,
    noises: Optional[Sequence[str]] = None,
    level_dbfs: tuple = (-45.0, -12.0),
    p_clip: float = 0.05,
    p_dc: float = 0.1,
    backgrounds=None,
    p_real: float = 0.5,
) -> Recording:
    """One recording (see the module docstring). ``noises`` forces the background components
    (default: each of ``NOISES`` with its probability). Calls and background come from separate
    streams of ``rng``, so forcing the background does not change the birds or the mask.
    ``backgrounds`` (a :class:`raybird.synth.backgrounds.BackgroundBank`): with probability ``p_real``
    a window of its real clips replaces the coloured base noise."""
    cfg = get_config(spec_config)
    sr = int(sample_rate or cfg.sample_rate)
    if min(sr, cfg.sample_rate) < 16000:
        raise ValueError("synthetic birds need a sample rate of at least 16 kHz")
    call_rng, bg_rng, mix_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 3))
    n = int(round(duration_s * sr))
    duration = n / sr
    n_ch = 2 if stereo else 1
    fmax = min(BIRD_BAND_HZ[1], 0.45 * sr, 0.45 * cfg.sample_rate)

    calls: list[Call] = []
    if not empty:
        while not calls:
            n_singers = int(call_rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
            species = _species(call_rng, fmax)
            for s in range(n_singers):
                if s and call_rng.random() > 0.3:
                    species = _species(call_rng, fmax)
                gains = (1.0,)
                if stereo:
                    g = call_rng.choice([0.0, call_rng.uniform(0.3, 1.0), 1.0])
                    gains = (1.0, g) if call_rng.random() < 0.5 else (g, 1.0)
                level = 0.0 if s == 0 else call_rng.uniform(-10.0, 0.0)
                calls += _sing(call_rng, species, s, duration, level, fmax, gains)
        calls.sort(key=lambda c: c.start_s)

    # vocal track (file rate) and each call's magnitude on the SpecConfig grid (its rate)
    vocals = np.zeros((n, n_ch), np.float32)
    active = np.zeros(n, bool)
    n_frames = n_frames_for(int(round(n * cfg.sample_rate / sr)), cfg)
    mags = []
    for c in calls:
        a, b = c.span(sr)
        x = render_call(c, sr)
        vocals[a:b] += x[:, None] * np.asarray(c.gains, np.float32)
        active[a:b] = True
        y = x if sr == cfg.sample_rate else render_call(c, cfg.sample_rate)
        mag, first = call_magnitude(y, c.span(cfg.sample_rate)[0], cfg, n_frames)
        mags.append((mag * np.float32(np.mean(c.gains)), core_of(mag), first))  # level in the mono mix-down

    kinds = [k for k, p in zip(NOISES, NOISE_P) if bg_rng.random() < p] if noises is None else list(noises)
    real = backgrounds.draw(bg_rng, n, sr) if backgrounds is not None and bg_rng.random() < p_real else None
    bg, parts = _background(bg_rng, n, sr, kinds, real)
    background = bg[:, None].repeat(n_ch, axis=1)
    if stereo:
        delay = int(bg_rng.integers(1, max(2, sr // 500)))
        background[:, 1] = np.roll(bg, delay) + 0.3 * _shaped_noise(bg_rng, n, sr, lambda f: f**-0.5)

    snr = band = None
    mask = np.zeros((cfg.n_rows, n_frames), np.uint8)
    boxes, audible = [], []
    if calls:
        snr = float(mix_rng.uniform(*snr_db))
        f = np.abs(row_freqs(cfg))[np.any([core.any(axis=1) for _, core, _ in mags], axis=0)]
        band = (float(f.min()), float(f.max()))
        now = measure_snr(vocals, background, sr, active, band)
        gain = np.float32(10 ** ((snr - now) / 20))
        vocals *= gain
        bg_mono = background.mean(axis=1)
        if sr != cfg.sample_rate:
            bg_mono = scipy.signal.resample_poly(bg_mono, cfg.sample_rate, sr)
        bg_power = local_power(magnitude(bg_mono, cfg, n_frames=n_frames), "nearest")
        for c, (mag, core, first) in zip(calls, mags):
            # the call is silent outside its frames: zeros beyond them ("constant")
            m = audible_core(core, gain * mag, bg_power[:, first : first + mag.shape[1]])
            audible.append(bool(m.any()))
            if audible[-1]:
                mask[:, first : first + m.shape[1]] |= m
                boxes.append(_box(m, first, cfg, duration, c))
    mix = vocals + background
    dc = float(mix_rng.uniform(0.001, 0.05) * mix_rng.choice([-1, 1])) if mix_rng.random() < p_dc else 0.0
    peak = np.abs(mix).max()
    if mix_rng.random() < p_clip:
        gain = mix_rng.uniform(1.3, 4.0) / peak
    else:  # the drawn level, but no louder than full scale
        rms = np.sqrt(np.mean(np.square(mix.mean(axis=1))))
        gain = min(10 ** (mix_rng.uniform(*level_dbfs) / 20) / rms, 0.99 * (1 - abs(dc)) / peak)
    vocals = (vocals * gain).astype(np.float32)
    background = (background * gain).astype(np.float32)
    audio = vocals + background + np.float32(dc)
    level = float(10 * np.log10(np.mean(np.square((vocals + background).mean(axis=1), dtype=np.float64))))
    clipped = bool(np.abs(audio).max() >= 1.0)
    audio = np.clip(audio, -1.0, 1.0)
    if not stereo:
        audio, vocals, background = audio[:, 0], vocals[:, 0], background[:, 0]
    meta = dict(
        duration_s=duration,
        sample_rate=sr,
        channels=n_ch,
        empty=not calls,
        n_calls=len(calls),
        snr_db=snr,
        snr_band_hz=band,
        level_dbfs=level,
        clipped=clipped,
        dc_offset=dc,
        noises=parts,
        calls=[
            dict(
                kind=c.kind,
                start_s=c.start_s,
                dur_s=c.dur_s,
                f_lo=c.f_lo,
                f_hi=c.f_hi,
                singer=c.singer,
                label=c.label,
                gains=list(c.gains),
                audible=a,
            )
            for c, a in zip(calls, audible)
        ],
    )
    return Recording(audio, vocals, background, sr, calls, boxes, mask, meta)


# ---- the archive -----------------------------------------------------------------------------
def _write_audio(path: Path, audio: np.ndarray, sr: int, subtype: str) -> None:
    if subtype == "FLOAT":  # libsndfile stamps float WAVs with the time (PEAK chunk); scipy does not
        scipy.io.wavfile.write(path, sr, audio.astype(np.float32))
    else:
        sf.write(path, audio, sr, subtype=subtype, format=path.suffix[1:].upper())


def _save_npz(path: Path, **arrays) -> None:
    """Like ``np.savez_compressed``, but with fixed zip timestamps so that the bytes depend on
    the content only (numpy stamps each member with the current time)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())


def archive_recordings(
    n_recordings: int,
    seed: int = 0,
    duration_s: tuple = (4.0, 12.0),
    sample_rate: int | Sequence[int] | None = None,
    spec_config: SpecConfig | str | None = None,
    snr_db: tuple = (-5.0, 20.0),
    p_empty: float = 0.1,
    formats: Sequence[str] = ("flac", "wav"),
    p_stereo: float = 0.05,
    p_clip: float = 0.05,
    p_dc: float = 0.1,
    noises: Optional[Sequence[str]] = None,
    backgrounds=None,
    p_real: float = 0.5,
) -> Iterator[tuple[int, Recording, str, str]]:
    """The recordings of :func:`generate_archive` (same arguments), in memory:
    ``(index, recording, format, subtype)``."""
    cfg = get_config(spec_config)
    rates = [cfg.sample_rate] if sample_rate is None else np.atleast_1d(sample_rate).tolist()
    for i in range(n_recordings):
        rng = np.random.default_rng([seed, i])
        dur = float(rng.uniform(*duration_s))
        sr, fmt = int(rng.choice(rates)), str(rng.choice(list(formats)))
        empty, stereo = bool(rng.random() < p_empty), bool(rng.random() < p_stereo)
        subtype = "PCM_16" if fmt == "flac" else str(rng.choice(["PCM_16", "PCM_24", "FLOAT"], p=[0.7, 0.15, 0.15]))
        yield (
            i,
            generate_recording(
                rng,
                dur,
                sr,
                cfg,
                snr_db,
                empty,
                stereo,
                noises,
                p_clip=p_clip,
                p_dc=p_dc,
                backgrounds=backgrounds,
                p_real=p_real,
            ),
            fmt,
            subtype,
        )


def generate_archive(
    out_dir: str | Path,
    n_recordings: int,
    seed: int = 0,
    duration_s: tuple = (4.0, 12.0),
    sample_rate: int | Sequence[int] | None = None,
    spec_config: SpecConfig | str | None = None,
    snr_db: tuple = (-5.0, 20.0),
    p_empty: float = 0.1,
    formats: Sequence[str] = ("flac", "wav"),
    p_stereo: float = 0.05,
    p_clip: float = 0.05,
    p_dc: float = 0.1,
    noises: Optional[Sequence[str]] = None,
    prefix: str = "syn",
    backgrounds=None,
    p_real: float = 0.5,
) -> list[dict]:
    """Write ``n_recordings`` recordings (audio, Raven table, truth mask) into ``out_dir``.

    ``sample_rate``: one rate, a choice of rates (drawn per recording), or None for the
    SpecConfig's rate. Returns one record per recording: its paths and metadata.
    """
    cfg = get_config(spec_config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    recordings = archive_recordings(
        n_recordings,
        seed,
        duration_s=duration_s,
        sample_rate=sample_rate,
        spec_config=cfg,
        snr_db=snr_db,
        p_empty=p_empty,
        formats=formats,
        p_stereo=p_stereo,
        p_clip=p_clip,
        p_dc=p_dc,
        noises=noises,
        backgrounds=backgrounds,
        p_real=p_real,
    )
    for i, rec, fmt, subtype in recordings:
        name = f"{prefix}{i:05d}"
        audio_path = out / f"{name}.{fmt}"
        _write_audio(audio_path, rec.audio, rec.sample_rate, subtype)
        table_path = out / f"{name}.Table.1.selections.txt"
        write_raven(table_path, rec.boxes)
        truth_path = out / f"{name}.truth.npz"
        _save_npz(truth_path, mask=rec.mask, spec_config=np.array(cfg.to_json()))
        meta = {k: v for k, v in rec.meta.items() if k not in ("calls", "noises")}
        records.append(
            dict(
                name=name,
                index=i,
                seed=seed,
                audio=str(audio_path),
                table=str(table_path),
                truth=str(truth_path),
                format=fmt,
                subtype=subtype,
                noise=",".join(p["kind"] for p in rec.meta["noises"]),
                **meta,
            )
        )
    return records
