"""Synthetic birds: syllables of nine kinds, species with a repertoire and a style, and their
songs, rendered from parameters alone (see docs/synthetic.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIRD_BAND_HZ = (1000.0, 10000.0)
CALL_DURATION_S = (0.02, 2.0)
KINDS = ("sweep", "chirp", "whistle", "warble", "trill", "stack", "buzz", "rasp", "purr")
NOISE_LIKE = ("rasp", "purr")  # kinds made of band noise (:func:`_band_noise`), not of harmonics
KIND_P = (0.17, 0.11, 0.15, 0.10, 0.12, 0.13, 0.08, 0.08, 0.06)
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


def random_species(rng: np.random.Generator, fmax: float) -> dict:
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


def sing(rng, species, singer: int, duration: float, level_db: float, fmax: float, gains) -> list[Call]:
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
