"""Synthetic bird-sound archive with exact truth, deterministic from a seed.

Every recording mixes birds singing (:mod:`raybird.synth.calls`) into a background built to be
hard (:mod:`raybird.synth.noise`), and comes with a Raven selection table (one box per audible
call) and an exact pixel mask (each call's audible core: within ``TRUTH_DB`` of its own peak and
at least the background's power over a 3 x 3 patch). Recording ``i`` of seed ``s`` is generated
from ``numpy.random.default_rng([s, i])`` alone, so an archive of N+1 recordings starts with the
same N files (byte for byte) as an archive of N. docs/synthetic.md describes every choice and why.

Files per recording in ``out_dir``: ``<name>.flac`` or ``<name>.wav`` (16-bit; WAV sometimes
24-bit or float), ``<name>.Table.1.selections.txt`` and ``<name>.truth.npz`` (``mask`` and
``spec_config`` = ``cfg.to_json()``).
"""

from __future__ import annotations

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
from raybird.flags import flag
from raybird.io.labels import Box, write_raven, write_truth
from raybird.synth.calls import BIRD_BAND_HZ, Call, random_species, render_call, sing
from raybird.synth.noise import NOISE_P, NOISES, make_background, shaped_noise

# Bumped whenever the same seed would give other audio or truth: caches of generated test sets
# (benchmarks/accuracy.py) are keyed by it; CHANGELOG.md says what each version changed.
GENERATOR_VERSION = 9
TRUTH_DB = 40.0
AUDIBLE_PATCH = (3, 3)  # rows x frames over which call and background power are compared


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
    classes: Optional[np.ndarray] = None  # uint8 like mask: each pixel's call kind, k = class_names[k - 1], 0 outside
    class_names: Optional[list] = None


# ---- calls ------------------------------------------------------------------------------------


# ---- truth -----------------------------------------------------------------------------------
def call_magnitude(samples: np.ndarray, offset: int, cfg: SpecConfig, n_frames: int) -> tuple[np.ndarray, int]:
    """|STFT| of one clean call starting at sample ``offset`` (at ``cfg.sample_rate``) over the
    frames it reaches: ``(magnitude, first_frame)``."""
    c = cfg.win_length // 2 if cfg.center else 0
    first = max(0, (offset + c - cfg.win_length) // cfg.hop_length + 1)
    last = min(n_frames - 1, -(-(offset + len(samples) + c) // cfg.hop_length) - 1)
    return magnitude(samples, cfg, first_frame=first, n_frames=last - first + 1, sample_offset=offset), first


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
            species = random_species(call_rng, fmax)
            for s in range(n_singers):
                if s and call_rng.random() > 0.3:
                    species = random_species(call_rng, fmax)
                gains = (1.0,)
                if stereo:
                    g = call_rng.choice([0.0, call_rng.uniform(0.3, 1.0), 1.0])
                    gains = (1.0, g) if call_rng.random() < 0.5 else (g, 1.0)
                level = 0.0 if s == 0 else call_rng.uniform(-10.0, 0.0)
                calls += sing(call_rng, species, s, duration, level, fmax, gains)
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
    bg, parts = make_background(bg_rng, n, sr, kinds, real)
    background = bg[:, None].repeat(n_ch, axis=1)
    if stereo:
        delay = int(bg_rng.integers(1, max(2, sr // 500)))
        background[:, 1] = np.roll(bg, delay) + 0.3 * shaped_noise(bg_rng, n, sr, lambda f: f**-0.5)

    snr = band = None
    mask = np.zeros((cfg.n_rows, n_frames), np.uint8)
    classes, kinds = np.zeros_like(mask), []  # the kind of call of each pixel (a later call's where two overlap)
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
                kinds += [c.kind] if c.kind not in kinds else []
                classes[:, first : first + m.shape[1]][m > 0] = kinds.index(c.kind) + 1
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
    return Recording(audio, vocals, background, sr, calls, boxes, mask, meta, classes, kinds)


# ---- the archive -----------------------------------------------------------------------------
def _write_audio(path: Path, audio: np.ndarray, sr: int, subtype: str) -> None:
    if subtype == "FLOAT":  # libsndfile stamps float WAVs with the time (PEAK chunk); scipy does not
        scipy.io.wavfile.write(path, sr, audio.astype(np.float32))
    else:
        sf.write(path, audio, sr, subtype=subtype, format=path.suffix[1:].upper())


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
    """The recordings of :func:`generate_archive`, in memory: ``(index, recording, format,
    subtype)``. ``sample_rate``: one rate, a choice of rates (drawn per recording), or None for the
    SpecConfig's rate."""
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
    spec_config: SpecConfig | str | None = None,
    prefix: str = "syn",
    **options,
) -> list[dict]:
    """Write ``n_recordings`` recordings (audio, Raven table, truth mask) into ``out_dir``, named
    ``<prefix><index>``; ``options``: the other arguments of :func:`archive_recordings` (duration,
    sample rates, SNR, formats, defects, noises, real backgrounds). Returns one record per
    recording: its paths and metadata.
    """
    cfg = get_config(spec_config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    recordings = archive_recordings(n_recordings, seed, spec_config=cfg, **options)
    for i, rec, fmt, subtype in recordings:
        name = f"{prefix}{i:05d}"
        audio_path = out / f"{name}.{fmt}"
        _write_audio(audio_path, rec.audio, rec.sample_rate, subtype)
        table_path = out / f"{name}.Table.1.selections.txt"
        write_raven(table_path, rec.boxes)
        truth_path = out / f"{name}.truth.npz"
        write_truth(truth_path, rec.mask, cfg, rec.classes, rec.class_names)
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


@dataclass
class SynthConfig:
    """``raybird synth``."""

    out: str = flag(help="folder for the recordings, their Raven tables and truth masks")
    recordings: int = flag(20, "how many recordings", short="-n")
    seed: int = flag(0, "the same seed writes the same archive")
    min_duration: float = flag(5.0, "shortest recording (s)")
    max_duration: float = flag(15.0, "longest recording (s)")
    backgrounds: Optional[str] = flag(
        None, "a folder of real background clips (raybird backgrounds) mixed under the calls", metavar="DIR"
    )
    p_real: float = flag(0.5, "share of recordings on a real background (with --backgrounds)")


def cmd_synth(c: SynthConfig) -> int:
    from raybird.synth.backgrounds import BackgroundBank

    records = generate_archive(
        c.out,
        c.recordings,
        seed=c.seed,
        duration_s=(c.min_duration, c.max_duration),
        backgrounds=BackgroundBank(c.backgrounds) if c.backgrounds else None,
        p_real=c.p_real,
    )
    print(f"synth: {len(records)} recordings in {c.out}")
    return 0
