"""Label readers and writers, and label -> pixel-mask conversion on a spectrogram grid.

Labels come in two shapes: a list of :class:`Box` (Raven, Audacity, pykanto JSON, Sonic
Visualiser; Praat TextGrid, evsonganaly ``.not.mat`` and simple-seq CSV through crowsetta, the
library vak and OpenSoundscape read them with), drawn onto any grid with :func:`boxes_to_mask`,
or a :class:`GridMask` (a pixel mask on a known grid: BirdSoundsDenoising PNGs, the synthetic
generator's truth), resampled onto any grid with :func:`remap_mask`. :func:`label_mask` does either.

Every reader takes a path and, optionally, the file's bytes (for ``s3://`` objects and archive
members); malformed files raise ``ValueError`` naming the file and the problem.
:func:`load_labels` finds the label file of a recording among candidate side files by the
conventions in :data:`LABEL_PATTERNS`; :func:`find_labels` does the same on local disk.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import glob
import io
import json
import os
import posixpath
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import scipy.signal
import soundfile as sf
import soxr
from PIL import Image

from raybird.dsp.spectrogram import (
    PRESETS,
    SpecConfig,
    frame_offset_s,
    frame_times,
    freq_to_rows,
    row_freqs,
    time_to_frames,
)
from raybird.extras import require
from raybird.io.storage import MEMBER_SEP

RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)"]


@dataclass(frozen=True)
class Box:
    """A labelled event. ``low_hz``/``high_hz`` None means time-only (full band);
    ``channel`` None means every channel (formats that do not name one)."""

    begin_s: float
    end_s: float
    low_hz: Optional[float] = None
    high_hz: Optional[float] = None
    label: str = ""
    channel: Optional[int] = None


@dataclass(frozen=True, eq=False)
class GridMask:
    """A uint8 mask ``(cfg.n_rows, frames)`` on the grid of ``cfg``. Column times are
    ``frame_times(.., cfg) + time_shift_s`` in the recording's own time (the BSD masks are
    drawn on audio that starts 528 samples later than the decoded MP3)."""

    mask: np.ndarray
    cfg: SpecConfig
    time_shift_s: float = 0.0


Labels = Union[list[Box], GridMask]


def _text(path: str | Path, data: Optional[bytes]) -> str:
    raw = Path(path).read_bytes() if data is None else data
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None


def _float(value: str, path, where: str, what: str) -> float:
    try:
        x = float(value.strip().replace(",", "."))
    except (ValueError, AttributeError):
        raise ValueError(f"{path}, {where}: {what} is not a number: {value!r}") from None
    if not np.isfinite(x):
        raise ValueError(f"{path}, {where}: {what} is not finite: {value!r}")
    return x


def _checked(box: Box, path, where: str) -> Box:
    if box.end_s < box.begin_s:
        raise ValueError(f"{path}, {where}: end {box.end_s} s before begin {box.begin_s} s")
    if box.low_hz is not None and box.high_hz is not None and box.high_hz < box.low_hz:
        raise ValueError(f"{path}, {where}: high frequency {box.high_hz} Hz below low {box.low_hz} Hz")
    return box


# ---- Raven ---------------------------------------------------------------------------------
def write_raven(path: str | Path, boxes: Iterable[Box], extra: Optional[dict[str, Sequence]] = None) -> None:
    """Raven Pro selection table (tab-separated, Raven's exact column names, 1-based channel),
    rows in time order, the label in ``Annotation`` (OpenSoundscape's convention); ``extra``:
    further columns (name -> one value per box, in the order of ``boxes``). Times and
    frequencies are written with full precision so that a round trip keeps every pixel; a
    time-only box is written with 0-0 Hz, which :func:`read_raven` reads back as time-only."""
    boxes = list(boxes)
    extra = extra or {}
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i].begin_s, boxes[i].end_s))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(RAVEN_COLUMNS + ["Annotation", *extra])
        for n, i in enumerate(order, start=1):
            b = boxes[i]
            time_only = b.low_hz is None and b.high_hz is None
            w.writerow(
                [
                    n,
                    "Spectrogram 1",
                    (b.channel or 0) + 1,
                    repr(float(b.begin_s)),
                    repr(float(b.end_s)),
                    "0.0" if time_only else repr(float(b.low_hz or 0.0)),
                    "0.0" if time_only else repr(float(b.high_hz if b.high_hz is not None else 0.0)),
                    b.label,
                    *(values[i] for values in extra.values()),
                ]
            )


def read_raven(path: str | Path, data: Optional[bytes] = None) -> list[Box]:
    """Raven selection table. Waveform-view rows (Raven writes each selection once per view) are
    skipped; Channel is 1-based in the file, 0-based in the Box; a box with 0-0 Hz (or without
    frequency columns) is time-only."""
    reader = csv.DictReader(io.StringIO(_text(path, data)), delimiter="\t")
    header = reader.fieldnames or []
    for col in ("Begin Time (s)", "End Time (s)"):
        if col not in header:
            raise ValueError(f"{path}: not a Raven selection table (no {col!r} column; header {header})")
    has_freq = "Low Freq (Hz)" in header and "High Freq (Hz)" in header
    boxes = []
    for r in reader:
        where = f"line {reader.line_num}"
        if r["End Time (s)"] is None or (has_freq and r["High Freq (Hz)"] is None):
            raise ValueError(f"{path}, {where}: fewer fields than the header's {len(header)}")
        if r.get("View", "Spectrogram 1").startswith("Waveform"):
            continue
        low = high = None
        if has_freq:
            low = _float(r["Low Freq (Hz)"], path, where, "Low Freq (Hz)")
            high = _float(r["High Freq (Hz)"], path, where, "High Freq (Hz)")
            if low == 0.0 and high == 0.0:
                low = high = None
        channel = int(_float(r.get("Channel") or "1", path, where, "Channel"))
        if channel < 1:
            raise ValueError(f"{path}, {where}: Channel must be >= 1, got {channel}")
        label = r.get("Annotation") or r.get("Species") or ""
        boxes.append(
            _checked(
                Box(
                    _float(r["Begin Time (s)"], path, where, "Begin Time (s)"),
                    _float(r["End Time (s)"], path, where, "End Time (s)"),
                    low,
                    high,
                    label,
                    channel - 1,
                ),
                path,
                where,
            )
        )
    return boxes


# ---- Audacity ------------------------------------------------------------------------------
def read_audacity(path: str | Path, data: Optional[bytes] = None) -> list[Box]:
    """Audacity label track export: ``start<TAB>end<TAB>label`` lines (a missing end makes a point
    label, as Audacity reads it), each optionally followed by continuation lines starting with a
    backslash. The first one is the spectral selection, written by Audacity as
    ``\\<TAB>low<TAB>high`` (-1 = undefined); ``\\t low high`` with a literal ``\\t`` is accepted
    too. Labels without a frequency line are time-only."""
    boxes: list[Box] = []
    freq_done = True
    for n, line in enumerate(_text(path, data).splitlines(), start=1):
        where = f"line {n}"
        if not line.strip():
            continue
        if line.startswith("\\"):
            if not boxes:
                raise ValueError(f"{path}, {where}: frequency line before any label")
            if freq_done:  # later continuation lines are reserved for future formats
                continue
            rest = line[1:]
            if rest.startswith("t") and not rest.startswith("\t"):
                rest = rest[1:]
            parts = rest.split()
            if len(parts) < 2:
                raise ValueError(f"{path}, {where}: frequency line needs low and high: {line!r}")
            f0, f1 = (_float(p, path, where, "frequency") for p in parts[:2])
            boxes[-1] = _checked(
                replace(boxes[-1], low_hz=f0 if f0 >= 0 else None, high_hz=f1 if f1 >= 0 else None), path, where
            )
            freq_done = True
            continue
        parts = line.split("\t")
        if len(parts) == 1:  # tolerate space-separated files (numpy.savetxt and friends)
            parts = line.split(None, 2)
        t0 = _float(parts[0], path, where, "start time")
        try:
            t1 = float(parts[1].replace(",", ".")) if len(parts) > 1 else t0
            label = parts[2] if len(parts) > 2 else ""
        except ValueError:  # second field is the label: a point label
            t1, label = t0, "\t".join(parts[1:])
        boxes.append(_checked(Box(t0, t1, label=label.strip()), path, where))
        freq_done = False
    return boxes


def write_audacity(path: str | Path, boxes: Iterable[Box]) -> None:
    """Audacity label track (File > Import > Labels): ``start<TAB>end<TAB>label``, each followed
    by its spectral selection line ``\\<TAB>low<TAB>high`` when it has a band; time order."""
    with open(path, "w", newline="") as f:
        for b in sorted(boxes, key=lambda b: (b.begin_s, b.end_s)):
            f.write(f"{float(b.begin_s)!r}\t{float(b.end_s)!r}\t{b.label}\n")
            if b.low_hz is not None and b.high_hz is not None:
                f.write(f"\\\t{float(b.low_hz)!r}\t{float(b.high_hz)!r}\n")


# ---- formats read through crowsetta ----------------------------------------------------------
CROWSETTA_FORMATS = {"textgrid": "textgrid", "notmat": "notmat", "simple_seq": "simple-seq"}


def read_crowsetta(path: str | Path, data: Optional[bytes] = None, fmt: str = "textgrid") -> list[Box]:
    """Time-only labelled events from a format crowsetta reads (``fmt``: a key of
    :data:`CROWSETTA_FORMATS`): a Praat TextGrid (its first interval tier, empty intervals
    skipped), an evsonganaly ``.not.mat``, crowsetta's simple-seq CSV (``onset_s``, ``offset_s``,
    ``label``). crowsetta reads files by name, so given bytes it reads a copy under the same name."""
    crowsetta = require("crowsetta")
    reader = crowsetta.formats.by_name(CROWSETTA_FORMATS[fmt])
    try:
        with tempfile.TemporaryDirectory() as d:
            local = str(path)
            if data is not None:
                local = os.path.join(d, PurePosixPath(str(path)).name)
                with open(local, "wb") as f:
                    f.write(data)
            seq = reader.from_file(local).to_seq()
    except Exception as e:  # noqa: BLE001  crowsetta's parsers fail with any exception type on a bad file
        raise ValueError(f"{path}: not a readable {fmt} file: {type(e).__name__}: {e}") from None
    if isinstance(seq, list):  # several tiers
        seq = seq[0]
    return [
        _checked(Box(float(a), float(b), label=str(lab)), path, f"event {i + 1}")
        for i, (a, b, lab) in enumerate(zip(seq.onsets_s, seq.offsets_s, seq.labels))
    ]


# ---- pykanto JSON ----------------------------------------------------------------------------
def read_kanto_json(path: str | Path, data: Optional[bytes] = None, duration_s: Optional[float] = None) -> list[Box]:
    """pykanto segment metadata: ``lower_freq``/``upper_freq`` give the band; ``onsets``/``offsets``
    (seconds), when present, give one box per unit, else the whole clip is one box.

    The clip's length is ``duration_s`` when given. ``length_s`` in the file is not reliable:
    in the pykanto great tit sample it is the sample count divided by the *source* rate
    (48 kHz) while the WAV was written at 22.05 kHz, so :func:`load_labels` passes the WAV's
    real duration."""
    try:
        meta = json.loads(_text(path, data))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: a JSON object expected")
    for key in ("lower_freq", "upper_freq"):
        if key not in meta:
            raise ValueError(f"{path}: no {key!r} field (not a pykanto segment file)")
    low = _float(str(meta["lower_freq"]), path, "lower_freq", "lower_freq")
    high = _float(str(meta["upper_freq"]), path, "upper_freq", "upper_freq")
    label = str(meta.get("label") or "")
    onsets, offsets = meta.get("onsets"), meta.get("offsets")
    if onsets is not None or offsets is not None:
        if not isinstance(onsets, list) or not isinstance(offsets, list) or len(onsets) != len(offsets):
            raise ValueError(f"{path}: 'onsets' and 'offsets' must be lists of equal length")
        return [
            _checked(
                Box(
                    _float(str(a), path, f"unit {i}", "onset"),
                    _float(str(b), path, f"unit {i}", "offset"),
                    low,
                    high,
                    label,
                ),
                path,
                f"unit {i}",
            )
            for i, (a, b) in enumerate(zip(onsets, offsets))
        ]
    if duration_s is None:
        if "length_s" not in meta:
            raise ValueError(f"{path}: no onsets/offsets and no 'length_s'")
        duration_s = _float(str(meta["length_s"]), path, "length_s", "length_s")
    return [_checked(Box(0.0, float(duration_s), low, high, label), path, "whole clip")]


# ---- Sonic Visualiser ------------------------------------------------------------------------
def read_sonic_visualiser(path: str | Path, data: Optional[bytes] = None) -> list[Box]:
    """Sonic Visualiser session/layer XML. Each ``<point>`` of a model: ``frame``/``duration``
    in samples at the model's ``sampleRate``; in a box layer (points with ``extent``, model
    units Hz) ``value`` is the low frequency and ``value + extent`` the high one. Negative low
    frequencies (drawn below the axis) are clamped to 0. Points without extent are time-only."""
    try:
        root = ET.fromstring(Path(path).read_bytes() if data is None else data)
    except ET.ParseError as e:
        raise ValueError(f"{path}: not valid XML ({e})") from None
    if root.tag != "sv":
        raise ValueError(f"{path}: not a Sonic Visualiser file (root <{root.tag}>)")
    datasets = {d.get("id"): d for d in root.iter("dataset")}
    models = [m for m in root.iter("model") if m.get("dataset") in datasets]
    if not models:
        raise ValueError(f"{path}: no model with a dataset")
    boxes = []
    for m in models:
        sr = _float(m.get("sampleRate", ""), path, f"model {m.get('id')}", "sampleRate")
        if sr <= 0:
            raise ValueError(f"{path}, model {m.get('id')}: sampleRate must be positive")
        in_hz = m.get("units", "Hz") == "Hz"
        for i, p in enumerate(datasets[m.get("dataset")].iter("point")):
            where = f"model {m.get('id')} point {i}"
            start = _float(p.get("frame", ""), path, where, "frame")
            end = start + _float(p.get("duration", "0"), path, where, "duration")
            low = high = None
            if in_hz and p.get("extent") is not None:
                value = _float(p.get("value", ""), path, where, "value")
                high = value + _float(p.get("extent", ""), path, where, "extent")
                if high <= 0:
                    raise ValueError(f"{path}, {where}: box lies entirely below 0 Hz")
                low = max(value, 0.0)
            boxes.append(_checked(Box(start / sr, end / sr, low, high, p.get("label", "")), path, where))
    return boxes


# ---- pixel masks -----------------------------------------------------------------------------
def write_truth(path: str | Path, mask: np.ndarray, cfg: SpecConfig) -> None:
    """The synthetic generator's truth file: ``mask`` (uint8 rows x frames) + ``spec_config``."""
    np.savez_compressed(path, mask=np.asarray(mask, np.uint8), spec_config=np.array(cfg.to_json()))


def read_truth(path: str | Path, data: Optional[bytes] = None) -> GridMask:
    try:
        z = np.load(io.BytesIO(Path(path).read_bytes() if data is None else data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a .npz archive expected, found a single array")
    with z:
        missing = {"mask", "spec_config"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: truth file without {sorted(missing)}")
        mask, cfg_json = z["mask"], str(z["spec_config"])
    try:
        cfg = SpecConfig.from_json(cfg_json)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: bad spec_config ({e})") from None
    if mask.ndim != 2 or mask.shape[0] != cfg.n_rows:
        raise ValueError(f"{path}: mask shape {mask.shape} does not match the config's {cfg.n_rows} rows")
    return GridMask((mask > 0).astype(np.uint8), cfg)


def _read_local(path: str) -> bytes:
    return Path(path).read_bytes()


def _mono(data: bytes, name: str) -> tuple[np.ndarray, int]:
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(f"{name}: not readable audio ({e})") from None
    return x.mean(axis=1), sr


def estimate_shift(
    raw: np.ndarray, ref: np.ndarray, sample_rate: int, max_lag_s: float = 0.5, min_corr: float = 0.5
) -> float:
    """Seconds by which ``raw`` lags ``ref`` (raw[n + lag] ~ ref[n]), from the peak of their
    cross-correlation within +-``max_lag_s``; 0 when the normalised peak is below ``min_corr``
    (the two signals are not the same recording)."""
    c = scipy.signal.correlate(raw, ref, mode="full", method="fft")
    lags = np.arange(-len(ref) + 1, len(raw))
    window = np.abs(lags) <= max_lag_s * sample_rate
    k = np.argmax(np.where(window, c, -np.inf))
    norm = np.sqrt(float(np.dot(raw, raw)) * float(np.dot(ref, ref)))
    return float(lags[k]) / sample_rate if norm > 0 and c[k] / norm >= min_corr else 0.0


def read_bsd_mask(folder: str | Path, stem: str, read: Callable[[str], bytes] = _read_local) -> GridMask:
    """BirdSoundsDenoising mask ``folder/Masks/<stem>.png`` (255 = bird) on the ``bsd`` grid.

    The masks are drawn on the denoised audio's time line; the ``Raw_audios`` file (MP3 data)
    decodes with the MP3 decoder delay in front (528 samples with libsndfile). The shift is
    measured by cross-correlating ``Raw_audios/<stem>.wav`` with ``Denoised_audios/<stem>.wav``
    when both can be read, else 0. ``read`` maps a path (or URI, or archive member) to bytes."""
    base = str(folder).rstrip("/")
    png = f"{base}/Masks/{stem}.png"
    try:
        img = Image.open(io.BytesIO(read(png)))
        img.load()
    except (OSError, SyntaxError) as e:  # PIL raises these for non-images / truncated files
        raise ValueError(f"{png}: not a readable PNG ({e})") from None
    mask = (np.asarray(img.convert("L")) >= 128).astype(np.uint8)
    cfg = PRESETS["bsd"]
    if mask.shape[0] != cfg.n_rows:
        raise ValueError(f"{png}: {mask.shape[0]} rows, the bsd grid has {cfg.n_rows}")
    try:
        raw, sr = _mono(read(f"{base}/Raw_audios/{stem}.wav"), f"{base}/Raw_audios/{stem}.wav")
        ref, sr_ref = _mono(read(f"{base}/Denoised_audios/{stem}.wav"), f"{base}/Denoised_audios/{stem}.wav")
    except (KeyError, OSError, ValueError):  # no pair to compare: assume aligned
        return GridMask(mask, cfg, 0.0)
    if sr_ref != sr:
        ref = soxr.resample(ref, sr_ref, sr)
    return GridMask(mask, cfg, estimate_shift(raw, ref, sr))


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
    mask = np.zeros((cfg.n_rows, n_frames), np.uint8)
    for b in boxes:
        if channel is not None and b.channel is not None and b.channel != channel:
            continue
        cols = time_to_frames(b.begin_s, b.end_s, cfg, first_frame, n_frames)
        if cols.stop > cols.start:
            mask[freq_to_rows(b.low_hz, b.high_hz, cfg), cols] = 1
    return mask


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


# ---- finding the labels of a recording -------------------------------------------------------
# (path relative to the recording's folder, folder name the recording must sit in, kind).
# First match wins.
LABEL_PATTERNS: tuple[tuple[str, Optional[str], str], ...] = (
    ("{stem}.truth.npz", None, "truth"),
    ("{stem}.Table.*.selections.txt", None, "raven"),
    ("{stem}.selections.txt", None, "raven"),
    ("{stem}.txt", None, "audacity"),
    ("../JSON/{stem}.JSON", "WAV", "kanto"),
    ("../JSON/{stem}.json", "WAV", "kanto"),
    ("{stem}.xml", None, "sonic_visualiser"),
    ("{stem}.TextGrid", None, "textgrid"),
    ("{stem}.textgrid", None, "textgrid"),
    ("{name}.not.mat", None, "notmat"),
    ("{stem}.csv", None, "simple_seq"),
    ("../Masks/{stem}.png", "Raw_audios", "bsd"),
)
_READERS = {
    "truth": read_truth,
    "raven": read_raven,
    "audacity": read_audacity,
    "sonic_visualiser": read_sonic_visualiser,
    **{kind: functools.partial(read_crowsetta, fmt=kind) for kind in CROWSETTA_FORMATS},
}


def _split_scheme(key: str) -> tuple[str, str]:
    return ("s3://", key[5:]) if key.startswith("s3://") else ("", key)


def _candidate(audio_key: str, rel: str) -> str:
    scheme, path = _split_scheme(audio_key)
    return scheme + posixpath.normpath(posixpath.join(posixpath.dirname(path), rel))


def _normalised(key: str) -> str:
    scheme, path = _split_scheme(key)
    return scheme + posixpath.normpath(path)


def load_labels(
    source: str, side_files: Iterable[str], read: Callable[[str], bytes], cfg: Optional[SpecConfig] = None
) -> Optional[Labels]:
    """Labels of the recording ``source`` (a path, ``s3://`` URI or ``archive::member``), looked
    up among ``side_files`` (in the same name space as ``read``: full URIs, or member names for
    an archive) by :data:`LABEL_PATTERNS`. None when no pattern matches. ``cfg`` is not needed:
    labels are returned on their own grid and drawn per tile by :func:`label_mask`."""
    del cfg
    key = source.split(MEMBER_SEP, 1)[1] if MEMBER_SEP in source else source
    name = PurePosixPath(_split_scheme(key)[1])
    side = {_normalised(s): s for s in side_files}
    for rel, parent, kind in LABEL_PATTERNS:
        if parent is not None and name.parent.name != parent:
            continue
        label_dir = posixpath.dirname(_candidate(key, rel.format(stem=name.stem, name=name.name)))
        base = posixpath.basename(rel).format(stem=glob.escape(name.stem), name=glob.escape(name.name))
        hits = sorted(
            s for s in side if posixpath.dirname(s) == label_dir and fnmatch.fnmatchcase(posixpath.basename(s), base)
        )
        if not hits:
            continue
        path = side[hits[0]]
        if kind == "bsd":
            return read_bsd_mask(_candidate(key, ".."), name.stem, lambda p: read(side.get(_normalised(p), p)))
        if kind == "kanto":
            return read_kanto_json(path, read(path), _duration(key, read))
        return _READERS[kind](path, read(path))
    return None


def _duration(key: str, read: Callable[[str], bytes]) -> Optional[float]:
    """The recording's real duration, or None when it cannot be read through ``read``."""
    try:
        return sf.info(io.BytesIO(read(key))).duration
    except (KeyError, OSError, RuntimeError, sf.LibsndfileError):
        return None


def find_labels(audio_path: str | Path) -> Optional[Labels]:
    """Labels of a local audio file by the conventions of :data:`LABEL_PATTERNS`, or None."""
    audio_path = os.path.abspath(audio_path)
    folder, stem = os.path.dirname(audio_path), Path(audio_path).stem
    name = glob.escape(os.path.basename(audio_path))
    side = [
        os.path.normpath(p)
        for rel, _, _ in LABEL_PATTERNS
        for p in glob.glob(os.path.join(glob.escape(folder), rel.format(stem=glob.escape(stem), name=name)))
    ]
    return load_labels(audio_path, side, _read_local)
