"""Label readers and writers.

Labels come in two shapes: a list of :class:`Box` (Raven, Audacity, pykanto JSON, Sonic
Visualiser; Praat TextGrid, evsonganaly ``.not.mat`` and simple-seq CSV through crowsetta, the
library vak and OpenSoundscape read them with), drawn onto any grid by :mod:`raybird.io.label_masks`,
or a :class:`GridMask` (a pixel mask on a known grid: BirdSoundsDenoising PNGs, the synthetic
generator's truth), resampled onto any grid there.

Every reader takes a path and, optionally, the file's bytes (for ``s3://`` objects and archive
members); malformed files raise ``ValueError`` naming the file and the problem.
:mod:`raybird.io.label_files` finds the label file of a recording.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import soxr
from PIL import Image

from raybird.dsp.spectrogram import (
    PRESETS,
    SpecConfig,
)
from raybird.extras import require

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
    drawn on audio that starts 528 samples later than the decoded MP3). ``classes``, where
    known (the synthetic truth's call kinds): each pixel's class on the same grid, ``k`` =
    ``class_names[k - 1]``, 0 outside the mask."""

    mask: np.ndarray
    cfg: SpecConfig
    time_shift_s: float = 0.0
    classes: Optional[np.ndarray] = None
    class_names: tuple = ()


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


def read_raven(path: str | Path, data: Optional[bytes] = None, label_column: Optional[str] = None) -> list[Box]:
    """Raven selection table. Waveform-view rows (Raven writes each selection once per view) are
    skipped; Channel is 1-based in the file, 0-based in the Box; a box with 0-0 Hz (or without
    frequency columns) is time-only. The label is ``label_column``'s text (default
    ``Annotation``, else ``Species``); a table without that column is refused."""
    reader = csv.DictReader(io.StringIO(_text(path, data)), delimiter="\t")
    header = reader.fieldnames or []
    for col in ("Begin Time (s)", "End Time (s)"):
        if col not in header:
            raise ValueError(f"{path}: not a Raven selection table (no {col!r} column; header {header})")
    if label_column is not None and label_column not in header:
        raise ValueError(f"{path}: no label column {label_column!r} (columns: {', '.join(header)})")
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
        label = (r[label_column] if label_column else r.get("Annotation") or r.get("Species")) or ""
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
def write_truth(
    path: str | Path,
    mask: np.ndarray,
    cfg: SpecConfig,
    classes: Optional[np.ndarray] = None,
    class_names: Sequence[str] = (),
) -> None:
    """The synthetic generator's truth file: ``mask`` (uint8 rows x frames) + ``spec_config``
    (+ ``classes`` and ``class_names``, each pixel's call kind, where given), as
    ``np.savez_compressed`` writes it but with fixed zip timestamps, so that the bytes depend on
    the content only (numpy stamps each member with the current time)."""
    arrays = dict(mask=np.asarray(mask, np.uint8), spec_config=np.array(cfg.to_json()))
    if classes is not None and len(class_names):
        arrays.update(classes=np.asarray(classes, np.uint8), class_names=np.array(list(class_names), str))
    with zipfile.ZipFile(path, "w") as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())


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
        classes = z["classes"] if "classes" in z.files else None
        names = tuple(str(n) for n in z["class_names"]) if "class_names" in z.files else ()
    try:
        cfg = SpecConfig.from_json(cfg_json)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: bad spec_config ({e})") from None
    if mask.ndim != 2 or mask.shape[0] != cfg.n_rows:
        raise ValueError(f"{path}: mask shape {mask.shape} does not match the config's {cfg.n_rows} rows")
    if classes is not None and (classes.shape != mask.shape or classes.max(initial=0) > len(names)):
        raise ValueError(f"{path}: classes {classes.shape} up to {classes.max(initial=0)} for {len(names)} names")
    return GridMask((mask > 0).astype(np.uint8), cfg, classes=classes, class_names=names)


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
    import scipy.signal  # here, not at the top: ~0.5 s to import, for the BirdSoundsDenoising labels only

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


# ---- finding the labels of a recording -------------------------------------------------------
