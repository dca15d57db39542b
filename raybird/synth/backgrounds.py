"""Real backgrounds for the generator: stretches of real recordings where a segment run found no
bird, cut into clips (``raybird backgrounds``) and mixed under synthetic calls
(``raybird synth --backgrounds DIR``).

**Why.** The generator's own backgrounds are models of noise (coloured noise, wind, rain, insects,
engines, clicks, frogs). Real soundscapes hold what none of them has: distant traffic, recorder
self-noise, reverberation, choruses of insects, wind in leaves. A model trained only on the models
meets those first in a user's recordings.

**Which stretches.** Every stretch of a recording at least ``min_s`` long that lies at least
``guard_s`` away from every segment of a segment run (:func:`quiet_windows`). Run with a model of
high recall (the shipped one marks 98 % of the labelled bellbird calls' time), what remains is
mostly free of birds; a faint bird it missed becomes background, and the trained model learns to
leave such birds alone, so choose the recordings (night hours, empty habitats) and the model with
that in mind. Labelled data's licences apply to the clips: cut them only from recordings you may
train on.

**Mixing** (:class:`BackgroundBank`). A recording's background is, with probability
``p_real``, a window of the clips (resampled to the recording's rate, clips joined end to end with
20-ms crossfades where one is too short, started at a random point) in place of the generator's
coloured base noise; the generator's other noises are added to it as usual.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from raybird.flags import flag
from raybird.io.outputs import read_outputs
from raybird.io.storage import MEMBER_SEP, source_bytes

CROSSFADE_S = 0.02


def quiet_windows(segments_out: str, min_s: float = 3.0, guard_s: float = 0.5) -> list[tuple[str, float, float]]:
    """``(source, start_s, end_s)`` of the stretches of every recording of a segment run that lie
    ``guard_s`` or more from all its segments and last at least ``min_s``."""
    durations = {r["source"]: r["duration_s"] for r in read_outputs(segments_out, "summary").to_pylist()}
    busy: dict[str, list] = {s: [] for s in durations}
    for r in read_outputs(segments_out, "segments").select(["source", "start_s", "end_s"]).to_pylist():
        busy[r["source"]].append((r["start_s"] - guard_s, r["end_s"] + guard_s))
    out = []
    for source in sorted(durations):
        t = 0.0
        for a, b in sorted(busy[source]) + [(durations[source], durations[source])]:
            if a - t >= min_s:
                out.append((source, t, a))
            t = max(t, b)
    return out


def write_clips(windows: list[tuple[str, float, float]], out_dir: str | Path) -> list[Path]:
    """Each window as a mono FLAC at its recording's rate: ``<stem>_<start ms>.flac``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for source, a, b in windows:
        src = source_bytes(source)  # a path, or bytes (S3 objects, archive members)
        with sf.SoundFile(io.BytesIO(src) if isinstance(src, bytes) else src) as f:
            f.seek(int(a * f.samplerate))
            x = f.read(int((b - a) * f.samplerate), dtype="float32", always_2d=True).mean(axis=1)
            sr = f.samplerate
        path = out / f"{Path(source.split(MEMBER_SEP)[-1]).stem}_{int(a * 1000):07d}.flac"
        sf.write(path, x, sr, subtype="PCM_16")
        paths.append(path)
    return paths


class BackgroundBank:
    """The clips of a folder (``.flac``/``.wav``, in name order), drawn as backgrounds."""

    def __init__(self, folder: str | Path):
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".flac", ".wav"))
        if not self.paths:
            raise ValueError(f"no .flac or .wav clips in {folder}")
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def _clip(self, i: int, sr: int) -> np.ndarray:
        if (i, sr) not in self._cache:
            x, rate = sf.read(self.paths[i], dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            self._cache[(i, sr)] = x if rate == sr else soxr.resample(x, rate, sr).astype(np.float32)
        return self._cache[(i, sr)]

    def draw(self, rng: np.random.Generator, n: int, sr: int) -> tuple[np.ndarray, list[str]]:
        """``n`` samples at ``sr`` (float64, unit RMS) and the names of the clips they came from."""
        fade = int(CROSSFADE_S * sr)
        i = int(rng.integers(len(self.paths)))
        x = self._clip(i, sr)
        x, names = x[int(rng.integers(max(1, len(x) - n + 1))) :], [self.paths[i].name]
        while len(x) < n:
            i = int(rng.integers(len(self.paths)))
            y, ramp = self._clip(i, sr), np.linspace(0.0, 1.0, fade)
            k = min(fade, len(x), len(y))
            joined = x[len(x) - k :] * ramp[::-1][:k] + y[:k] * ramp[:k] if k else x[:0]
            x = np.concatenate([x[: len(x) - k], joined, y[k:]])
            names.append(self.paths[i].name)
        x = np.asarray(x[:n], np.float64)
        return x / (np.sqrt(np.mean(x**2)) + 1e-12), names


@dataclass
class BackgroundsConfig:
    """``raybird backgrounds``."""

    segments: str = flag(help="a segment run's --out folder (its summary and segments tables)", positional=True)
    out: str = flag(help="folder for the clips")
    min_duration: float = flag(3.0, "shortest clip (s)")
    guard: float = flag(0.5, "seconds kept clear of every segment")


def cmd_backgrounds(c: BackgroundsConfig) -> int:
    windows = quiet_windows(c.segments, c.min_duration, c.guard)
    paths = write_clips(windows, c.out)
    print(f"backgrounds: {len(paths)} clips, {sum(b - s for _, s, b in windows):.0f} s, in {os.path.abspath(c.out)}")
    return 0
