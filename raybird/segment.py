"""Bulk segmentation: recordings -> masks, segments, summary and errors tables (+ Raven
selection tables and denoised audio on request), with Ray Data.

**Data flow** (one Ray Data pipeline)::

    from_items(units)
      -> map_batches(SegmentWorker, compute=ActorPoolStrategy(size=N))
            per unit (a file, or an archive's recordings in turn), inside one actor:
            streaming decode -> iter_tiles -> the model on small batches -> the streaming
            Segmenter -> the recording's files, written as soon as its last tile is stitched;
            a status row per recording leaves the actor

*Why one actor does the whole recording.* The model is loaded once per actor; the tiles of a
recording are produced, inferred and stitched in order by the same process, so nothing is
shuffled and nothing waits for other recordings: the actor holds one tile, the open regions
and the bit-packed mask (a 2-hour recording: 38 MB packed, plus 303 MB of uint8 probabilities
only with ``--probabilities``). The previous design (decode tasks -> model actors ->
``groupby(recording_id)``) shipped every tile's probabilities through a hash shuffle, a barrier
that held a whole wave's probabilities in the object store and cost ~8 s per run on 2 cores;
its Ray job ran at 42-62x real time against the single-process loop's 108x. Parallelism is
over recordings (an archive is one unit): N actors keep N recordings in flight, so one long
file uses one actor. On a GPU, decoding runs in a thread of the actor (:func:`prefetched`)
beside inference.

*Why the actors write with pyarrow, not Dataset.write_parquet.* write_parquet writes one
file per block; blocks mix recordings in an order that changes between runs, so file names
cannot follow recording ids, and a re-run could neither skip nor replace a recording's rows (a
custom filename_provider only sees the block). The actor writes
``<table>/<recording_id>.parquet`` itself: deterministic names, so a re-run overwrites and never
duplicates. Every file lands atomically: locally it is written under a hidden temporary name
(``.<name>.<random>.tmp``, skipped by pyarrow and Ray readers) and renamed; on S3 a PUT (or a
completed multipart upload) is atomic. Per recording, ``masks/`` (or ``errors/``) is written
last and marks it complete: a re-run lists those two folders and skips what they hold.

Output tables (one Parquet file per recording in each): ``segments/`` (:data:`SEGMENT_SCHEMA`,
the DESIGN.md contract), ``masks/`` (:data:`MASK_SCHEMA`; decode with :func:`read_mask`),
``summary/`` (:data:`SUMMARY_SCHEMA`), ``errors/`` (ingest's error schema); optionally
``raven/<stem>.<recording_id>.Table.1.selections.txt`` and ``denoised/<stem>.<recording_id>.wav``.
``run.json`` records the settings and every run (:mod:`raybird.runrecord`): a re-run with other
settings is refused unless it overwrites.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import audio, boundaries, denoise, postprocess, runrecord, selections, storage
from .extras import require
from .ingest import ERROR_SCHEMA, blank_above_nyquist
from .spectrogram import SpecConfig, frame_offset_s, iter_tiles, n_frames_for, row_freqs, to_uint8

DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default.pt"  # package data (weights/MODEL_CARD.md)

SEGMENT_SCHEMA = pa.schema([
    ("recording_id", pa.string()),
    ("source", pa.string()),
    ("channel", pa.int16()),
    ("segment_id", pa.int32()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("low_hz", pa.float32()),
    ("high_hz", pa.float32()),
    ("score", pa.float32()),
    ("model_id", pa.string()),
])
MASK_SCHEMA = pa.schema([
    ("recording_id", pa.string()),
    ("source", pa.string()),
    ("channel", pa.int16()),
    ("n_rows", pa.int32()),
    ("n_frames", pa.int64()),
    ("frame0_s", pa.float64()),      # time of frame 0's centre; frame i at frame0_s + i * hop_s
    ("hop_s", pa.float64()),
    ("row0_hz", pa.float64()),       # frequency of row 0; row r at row0_hz + r * row_step_hz
    ("row_step_hz", pa.float64()),
    ("mask", pa.large_binary()),     # postprocess.encode_mask: frame-major np.packbits
    ("probability", pa.large_binary()),  # frame-major uint8 round(p * 255), only with --probabilities
    ("threshold", pa.float32()),
    ("spec_config", pa.string()),
    ("model_id", pa.string()),
])
SUMMARY_SCHEMA = pa.schema([
    ("recording_id", pa.string()),
    ("source", pa.string()),
    ("channel", pa.int16()),
    ("duration_s", pa.float64()),
    ("n_segments", pa.int32()),
    ("bird_seconds", pa.float64()),  # union of the segments' time spans
])
# Rows between decoding and stitching, by kind: "tile", "end" (per channel, with the decoded
# length), "error" (stage, reason). Decoded "tile" rows carry the
# spectrogram (uint8, rows x tile_frames, row-major) and its silent frames (np.packbits of a
# flag per frame) with the tile's first_frame / valid_frames;
# after prediction they carry ``prob`` and ``level`` (the spectrogram), both frame-major uint8,
# of the kept columns; first_frame / n_frames then describe those columns.
_COMMON = [("recording_id", pa.string()), ("source", pa.string()), ("channel", pa.int16()),
           ("kind", pa.string()), ("tile_index", pa.int32()), ("first_frame", pa.int64())]
_TAIL = [("n_samples", pa.int64()), ("stage", pa.string()), ("reason", pa.string())]
TILE_SCHEMA = pa.schema(_COMMON + [("valid_frames", pa.int32()), ("spec", pa.binary()), ("silent", pa.binary())]
                        + _TAIL)
PROB_SCHEMA = pa.schema(_COMMON + [("n_frames", pa.int32()), ("prob", pa.binary()), ("level", pa.binary())] + _TAIL)
STATUS_SCHEMA = pa.schema([("recording_id", pa.string()), ("source", pa.string()), ("status", pa.string()),
                           ("n_segments", pa.int32()), ("duration_s", pa.float64())])
CPU_BATCH = 4   # tiles per model call on CPU (see Predictor)
GPU_BATCH = 64
log = logging.getLogger(__name__)
PASSES = 3      # Ray passes over what is still missing (see run)
UNIT_DONE = "unit-done"  # the status of the row closing each unit in a Ray pass (not a recording)


@dataclass(frozen=True)
class SegmentOptions:
    threshold: float = 0.5
    min_duration_s: float = 0.02
    min_pixels: int = 10
    channels: str = "mix"            # "mix" (mono) or "split" (one mask per channel)
    formats: tuple[str, ...] = ()    # per-recording tables for other tools (raybird.selections.FORMATS)
    denoise: bool = False
    probabilities: bool = False
    group_overlap: Optional[float] = postprocess.GROUP_OVERLAP  # harmonics -> one segment; None: off
    group_gap_hz: float = postprocess.GROUP_GAP_HZ
    split_depth_db: Optional[float] = postprocess.SPLIT_DEPTH_DB  # cut regions at gaps (syllables touching in the mask)
    merge_gap_s: Optional[float] = None   # join a song's calls (at most this far apart) into one segment
    edge_fraction: Optional[float] = boundaries.FRACTION  # edges refined on the audio (raybird.boundaries); None: off
    min_level_db: Optional[float] = None  # segments from the mask's pixels this far above the row's noise floor


# ---- the checkpoint ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    data: bytes       # the file, shipped to the actors (a driver path may not exist on workers)
    cfg: SpecConfig
    model_id: str


def read_checkpoint(model: Optional[str] = None) -> Checkpoint:
    """Read a checkpoint (local path, directory or ``s3://``; None or ``"default"``: the shipped model)."""
    import torch
    from .engine import CHECKPOINT_FILE

    path = str(model) if model and model != "default" else str(DEFAULT_MODEL)
    if not path.startswith("s3://") and os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_FILE)
    if not path.startswith("s3://") and not os.path.isfile(path):
        hint = " (the shipped model is missing from this installation: pass --model CKPT)" \
            if not model or model == "default" else ""
        raise FileNotFoundError(f"model checkpoint not found: {path}{hint}")
    data = storage.read_bytes(path)
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not payload.get("spec_config"):
        raise ValueError(f"{path}: checkpoint has no spec_config, cannot compute its spectrograms")
    mc = json.loads(payload["model_config"])
    model_id = f"{mc['arch']}-w{mc['width']}-{hashlib.sha256(data).hexdigest()[:12]}"
    return Checkpoint(data, SpecConfig.from_json(payload["spec_config"]), model_id)


# ---- stage 1: decode -----------------------------------------------------------------------------
def _row(schema: pa.Schema, **values) -> dict:
    return {name: values.get(name) for name in schema.names}


def _error_rows(source: str, stage: str, reason: str) -> pa.Table:
    return pa.Table.from_pylist([_row(TILE_SCHEMA, recording_id=storage.recording_id(source),
                                      source=storage.redact(source), channel=0, kind="error", stage=stage,
                                      reason=storage.redact(reason))], schema=TILE_SCHEMA)


def iter_sources(unit: storage.Unit, done: frozenset = frozenset()) -> Iterator[tuple[str, object, Optional[tuple]]]:
    """``(source, src, error)`` for every recording of a unit not in ``done``: ``src`` a path or
    bytes for the decoder, or ``error`` = (stage, reason). Same rules as ingest."""
    if unit.kind == "file":
        if storage.recording_id(unit.uri) in done:
            return
        src, problem = storage.open_listed_file(unit.uri)
        yield unit.uri, None if problem else src, problem
        return
    try:
        for name, data in storage.iter_archive(unit.uri):
            source = f"{unit.uri}{storage.MEMBER_SEP}{name}"
            if storage.is_hidden(name) or storage.is_side_file(name) or storage.recording_id(source) in done:
                continue
            problem = storage.member_problem(name, data)
            yield source, None if problem else data, problem
    except Exception as e:  # a corrupt archive: the archive itself is one error row
        yield unit.uri, None, ("read", f"corrupt or unreadable archive: {storage.describe(e)}")


def recording_tiles(source: str, src, cfg: SpecConfig, channels: str = "mix",
                    rows_per_table: int = 16) -> Iterator[pa.Table]:
    """Stream one recording as :data:`TILE_SCHEMA` tables: its tiles, then one end row per
    channel; an error row instead of the end rows if decoding fails."""
    rec_id = storage.recording_id(source)
    n_samples, rows, n_channels = 0, [], 1

    def counted(blocks):
        nonlocal n_samples
        for b in blocks:
            n_samples += b.shape[1]
            yield b

    try:
        rate = audio.info(src).sample_rate
        for tile in iter_tiles(counted(audio.iter_blocks(src, cfg.sample_rate, channels)), cfg):
            n_channels = tile.spec.shape[0]
            rows += [_row(TILE_SCHEMA, recording_id=rec_id, source=source, channel=ch, kind="tile",
                          tile_index=tile.index, first_frame=tile.first_frame, valid_frames=tile.valid_frames,
                          spec=to_uint8(spec).tobytes(), silent=np.packbits(silent).tobytes())
                     for ch, (spec, silent) in enumerate(zip(blank_above_nyquist(tile.spec, cfg, rate), tile.silent))]
            if len(rows) >= rows_per_table:
                yield pa.Table.from_pylist(rows, schema=TILE_SCHEMA)
                rows = []
    except audio.AudioError as e:
        yield _error_rows(source, "decode", str(e))
        return
    except (OSError, EOFError, MemoryError) as e:
        yield _error_rows(source, "read", storage.describe(e))
        return
    except Exception as e:  # one odd file must not stop a run over millions: it gets its error row
        yield _error_rows(source, "decode", f"unexpected {type(e).__name__}: {e}")
        return
    rows += [_row(TILE_SCHEMA, recording_id=rec_id, source=source, channel=ch, kind="end", n_samples=n_samples)
             for ch in range(n_channels)]
    yield pa.Table.from_pylist(rows, schema=TILE_SCHEMA)


def unit_tiles(unit: storage.Unit, cfg: SpecConfig, channels: str = "mix", done: frozenset = frozenset(),
               sources: Optional[dict] = None) -> Iterator[pa.Table]:
    """:func:`recording_tiles` of every recording of a unit; ``sources``, when given, receives
    ``{source: src}`` (a path or the bytes of an archive member) before the recording's first
    table, so that its audio can be read again without reading the archive again."""
    for source, src, error in iter_sources(unit, done):
        if error is not None:
            yield _error_rows(source, *error)
        else:
            if sources is not None:
                sources[source] = src
            yield from recording_tiles(source, src, cfg, channels)


# ---- stage 2: predict ----------------------------------------------------------------------------
def _buffers(column: pa.ChunkedArray, indices) -> list:
    """Zero-copy views of binary values."""
    return [column[int(i)].as_buffer() for i in indices]


class Predictor:
    """Ray Data actor: loads the checkpoint once; tile rows -> kept probability columns.

    Inference settings measured by benchmarks/segment.py (2-core EPYC, default model): torch
    inference_mode, channels_last, BatchNorm folded into the convs, bf16 autocast where the
    device has bf16 (``precision="auto"``) and, on CPU, small model batches (:data:`CPU_BATCH`:
    activations stay in cache; 16 is slower); together ~5.8x faster than plain fp32 NCHW."""

    def __init__(self, checkpoint: bytes, device: str = "cpu", threads: int = 1, batch_size: int = CPU_BATCH,
                 precision: str = "auto"):
        import torch
        from . import engine

        torch.set_num_threads(max(1, int(threads)))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.pt"
            path.write_bytes(checkpoint)
            model, payload = engine.load_checkpoint(path, map_location=device)
        self.settings = engine.precision_settings(device, precision)
        self.model = self.settings.prepare_model(engine.fold_batchnorm(model))
        self.cfg = SpecConfig.from_json(payload["spec_config"])
        self.batch_size = batch_size
        self.trim_heap = heap_trimmer()

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = predict_rows(batch, self.model, self.settings, self.cfg, self.batch_size)
        self.trim_heap()
        return out


def heap_trimmer() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)`` (a no-op elsewhere). The model's large transient buffers come
    from glibc's heap (its mmap threshold rises to their size) and fragment between small
    long-lived objects: an actor's RSS grew ~5 MB per batch, 1.8 GB over a 30-minute recording.
    Trimming after each batch returns the freed pages; measured: RSS flat, no slower."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def predict_rows(table: pa.Table, model, settings, cfg: SpecConfig, batch_size: int) -> pa.Table:
    """:data:`TILE_SCHEMA` rows -> :data:`PROB_SCHEMA` rows (end and error rows pass through)."""
    from .engine import predict_proba

    kinds = table.column("kind").to_pylist()
    tiles = [i for i, k in enumerate(kinds) if k == "tile"]
    shape = (cfg.n_rows, cfg.tile_frames)
    probs = []
    if tiles:
        spec = np.stack([np.frombuffer(b, np.uint8).reshape(shape) for b in _buffers(table.column("spec"), tiles)])
        for i in range(0, len(spec), batch_size):
            probs.append(predict_proba(model, spec[i:i + batch_size], settings, quantize=True).numpy())
        probs = np.concatenate(probs)
        # nothing is found in silence, whatever the model makes of an empty input
        silent = np.stack([np.unpackbits(np.frombuffer(b, np.uint8), count=cfg.tile_frames).astype(bool)
                           for b in _buffers(table.column("silent"), tiles)])
        probs[np.broadcast_to(silent[:, None, :], probs.shape)] = 0
    cols = {name: table.column(name).to_pylist() for name in ("tile_index", "first_frame", "valid_frames")}
    first, n_frames, prob, level = ([None] * len(kinds) for _ in range(4))
    for j, i in enumerate(tiles):
        keep = postprocess.kept_columns(cols["tile_index"][i], cols["valid_frames"][i], cfg)
        first[i] = cols["first_frame"][i] + keep.start
        n_frames[i] = keep.stop - keep.start
        prob[i] = postprocess.encode_probability(probs[j][:, keep])
        level[i] = np.ascontiguousarray(spec[j][:, keep].T).tobytes()
    out = {name: table.column(name) for name in PROB_SCHEMA.names if name in table.column_names}
    out.update(first_frame=pa.array(first, pa.int64()), n_frames=pa.array(n_frames, pa.int32()),
               prob=pa.array(prob, pa.binary()), level=pa.array(level, pa.binary()))
    return pa.table({name: out[name] for name in PROB_SCHEMA.names}, schema=PROB_SCHEMA)


# ---- stage 3: stitch, segment, write ---------------------------------------------------------------
def _stage(out: str, rel: str) -> str:
    """A local path to write ``rel`` to before :func:`_publish`."""
    if out.startswith("s3://"):
        fd, path = tempfile.mkstemp(suffix=".tmp")
        os.close(fd)
        return path
    final = os.path.join(out, rel)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    return os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")


def _publish(staged: str, out: str, rel: str) -> None:
    if out.startswith("s3://"):
        fs, root = storage.filesystem(out)
        try:
            fs.put_file(staged, f"{root.rstrip('/')}/{rel}")
        finally:
            os.remove(staged)
    else:
        os.replace(staged, os.path.join(out, rel))


def write_file(out: str, rel: str, writer: Callable[[str], object]) -> None:
    """Write ``out/rel`` atomically: ``writer(local_path)`` fills a staging file."""
    staged = _stage(out, rel)
    try:
        writer(staged)
    except BaseException:
        if os.path.exists(staged):
            os.remove(staged)
        raise
    _publish(staged, out, rel)


def _write_table(out: str, table_name: str, rec_id: str, table: pa.Table) -> None:
    write_file(out, f"{table_name}/{rec_id}.parquet", lambda p: pq.write_table(table, p, compression="zstd"))


def source_bytes(source: str):
    """The audio of a source again (path, or bytes for S3 objects and archive members)."""
    if storage.MEMBER_SEP in source:
        archive, member = source.split(storage.MEMBER_SEP, 1)
        for name, data in storage.iter_archive(archive):
            if name == member:
                if isinstance(data, Exception):
                    raise data
                return data
        raise FileNotFoundError(f"{member!r} not found in {archive}")
    return storage.read_bytes(source) if source.startswith("s3://") else source


def output_stem(rel: str) -> str:
    """A recording's relative name (:attr:`raybird.storage.Unit.rel`) without its audio suffix:
    the name of its denoised audio and its tables for other tools (:mod:`raybird.selections`)."""
    return rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel


@dataclass
class ChannelResult:
    channel: int
    segments: list
    mask: bytes
    probability: Optional[bytes]
    n_frames: int


class StitchError(ValueError):
    """A recording that cannot be finished; ``stage`` and the message go to the errors table."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage


class RecordingStitcher:
    """One recording's :data:`PROB_SCHEMA` rows, fed in the order :func:`recording_tiles`
    yields them (tiles in time order, channels interleaved), into one streaming
    :class:`raybird.postprocess.Segmenter` per channel."""

    def __init__(self, cfg: SpecConfig, opts: SegmentOptions):
        self.cfg, self.opts = cfg, opts
        self.segmenters: dict[int, postprocess.Segmenter] = {}
        self.error: Optional[tuple[str, str]] = None
        self.n_samples: Optional[int] = None
        self.ended: set[int] = set()

    def add(self, rows: pa.Table) -> None:
        if self.error:
            return
        for i, (kind, ch) in enumerate(zip(rows.column("kind").to_pylist(), rows.column("channel").to_pylist())):
            if kind == "error":
                self.error = (rows.column("stage")[i].as_py(), rows.column("reason")[i].as_py())
                return
            if kind == "end":
                self.n_samples = int(rows.column("n_samples")[i].as_py())
                self.ended.add(int(ch))
                continue
            seg = self.segmenters.get(ch)
            if seg is None:
                o = self.opts
                seg = self.segmenters[ch] = postprocess.Segmenter(
                    self.cfg, o.threshold, o.min_duration_s, o.min_pixels, keep_probability=o.probabilities,
                    group_overlap=o.group_overlap, group_gap_hz=o.group_gap_hz, split_depth_db=o.split_depth_db,
                    merge_gap_s=o.merge_gap_s, min_level_db=o.min_level_db)
            n = int(rows.column("n_frames")[i].as_py())
            prob, level = (np.frombuffer(rows.column(name)[i].as_buffer(), np.uint8).reshape(n, self.cfg.n_rows).T
                           for name in ("prob", "level"))
            try:
                seg.add(prob, int(rows.column("first_frame")[i].as_py()), level)
            except ValueError as e:
                self.error = ("stitch", str(e))
                return

    @property
    def done(self) -> bool:
        return self.error is not None or self.n_samples is not None

    def finish(self) -> tuple[float, list[ChannelResult]]:
        """``(duration_s, per-channel results)``; raises :class:`StitchError` for a recording
        that failed upstream or has tiles missing."""
        if self.error:
            raise StitchError(*self.error)
        if self.n_samples is None:
            raise StitchError("stitch", "no end-of-recording row")
        expected = n_frames_for(self.n_samples, self.cfg)
        duration = self.n_samples / self.cfg.sample_rate
        results = []
        for ch in sorted(self.ended):
            seg = self.segmenters.get(ch) or postprocess.Segmenter(self.cfg)
            if seg.n_frames != expected:
                raise StitchError("stitch", f"tiles cover {seg.n_frames} of {expected} frames")
            results.append(ChannelResult(ch, seg.finish(duration), seg.mask_bytes(), seg.probability_bytes(),
                                         seg.n_frames))
        return duration, results


def stitch_recording(rows: pa.Table, cfg: SpecConfig, opts: SegmentOptions) -> tuple[float, list[ChannelResult]]:
    """All :data:`PROB_SCHEMA` rows of one recording, in order -> ``(duration_s, results)``."""
    stitcher = RecordingStitcher(cfg, opts)
    stitcher.add(rows)
    return stitcher.finish()


def finish_with_edges(stitcher: RecordingStitcher, src) -> tuple[float, list[ChannelResult]]:
    """:meth:`RecordingStitcher.finish`, then (``edge_fraction``) the segments' edges refined on
    the recording's audio ``src`` (the path or bytes it was first decoded from), decoded a second
    time as a stream (:func:`raybird.boundaries.refine`)."""
    duration, results = stitcher.finish()
    fraction, cfg = stitcher.opts.edge_fraction, stitcher.cfg
    if fraction is None or not any(r.segments for r in results):
        return duration, results
    by_channel = {r.channel: r for r in results}
    segments = [by_channel[ch].segments if ch in by_channel else [] for ch in range(max(by_channel) + 1)]
    try:
        blocks = audio.iter_blocks(src, cfg.sample_rate, stitcher.opts.channels)
        refined = boundaries.refine(segments, blocks, cfg.sample_rate, fraction)
    except audio.AudioError as e:
        raise StitchError("decode", f"second decode, for the segment edges: {e}") from None
    except OSError as e:
        raise StitchError("read", f"second read, for the segment edges: {storage.describe(e)}") from None
    return duration, [dataclasses.replace(r, segments=refined[r.channel]) for r in results]


def finish_recording(rec_id: str, source: str, stitcher: RecordingStitcher, out: str, model_id: str, src,
                     rel: str) -> dict:
    """Write one stitched recording's files (or its error row); returns its status row. ``src``:
    its audio as decoded first (a path or bytes), for the edges and denoising; ``rel``: its
    relative name (:func:`raybird.storage.member_rel`)."""
    try:
        duration, results = finish_with_edges(stitcher, src)
    except StitchError as e:
        _write_error(out, rec_id, source, e.stage, str(e))
        return dict(recording_id=rec_id, source=source, status="error", n_segments=0, duration_s=0.0)
    write_outputs(out, rec_id, source, duration, results, stitcher.cfg, model_id, stitcher.opts, src, rel)
    return dict(recording_id=rec_id, source=source, status="ok", n_segments=sum(len(r.segments) for r in results),
                duration_s=duration)


def prefetched(items: Iterator, depth: int) -> Iterator:
    """``items`` produced by a background thread, up to ``depth`` ahead: decoding (numpy, soxr,
    FFT; they release the GIL) overlaps with inference on a GPU."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    end = object()

    def produce():
        try:
            for item in items:
                q.put(item)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)
        q.put(end)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield item


def segment_unit(unit: storage.Unit, predictor: "Predictor", out: str, ckpt: Checkpoint, opts: SegmentOptions,
                 done: frozenset = frozenset(), prefetch: int = 0) -> Iterator[dict]:
    """Segment every recording of a unit not in ``done``: decode, infer and stitch as a stream,
    write each recording's files when its last tile is in; yield a status row per recording."""
    sources: dict = {}  # the audio of the recordings in flight, read once (archives are not re-read)
    tables = unit_tiles(unit, ckpt.cfg, opts.channels, done, sources)
    stitcher, rec_id, source = None, None, None
    for table in prefetched(tables, prefetch) if prefetch else tables:
        rid = table.column("recording_id")[0].as_py()  # a table holds rows of one recording
        if rid != rec_id:
            stitcher, rec_id, source = RecordingStitcher(ckpt.cfg, opts), rid, table.column("source")[0].as_py()
        stitcher.add(predictor(table))
        if stitcher.done:
            yield finish_recording(rec_id, source, stitcher, out, ckpt.model_id, sources.pop(source, None),
                                   storage.member_rel(unit, source))
            stitcher, rec_id = None, None


class SegmentWorker:
    """Ray Data actor: loads the checkpoint once, then segments whole units (see the module
    docstring); returns a :data:`STATUS_SCHEMA` row per recording, then one :data:`UNIT_DONE`
    row naming the unit."""

    def __init__(self, ckpt: Checkpoint, out: str, options: dict, done: frozenset, device: str = "cpu",
                 threads: float = 1, batch_size: int = CPU_BATCH, precision: str = "auto"):
        self.predictor = Predictor(ckpt.data, device, threads, batch_size, precision)
        self.ckpt, self.out, self.opts, self.done = ckpt, out, SegmentOptions(**options), done
        self.prefetch = 4 if device == "cuda" else 0  # on CPU the cores are the actors'

    def __call__(self, batch: dict) -> pa.Table:
        statuses = [s for uri, kind, rel in zip(batch["uri"], batch["kind"], batch["rel"])
                    for s in segment_unit(storage.Unit(str(uri), str(kind), rel=str(rel)), self.predictor, self.out,
                                          self.ckpt, self.opts, self.done, self.prefetch)]
        statuses += [dict(recording_id="", source=str(uri), status=UNIT_DONE, n_segments=0, duration_s=0.0)
                     for uri in batch["uri"]]
        return pa.Table.from_pylist(statuses, schema=STATUS_SCHEMA)


def predict_recording(source: str, ckpt: Checkpoint, opts: SegmentOptions = SegmentOptions(),
                      device: Optional[str] = None, src=None) -> tuple[float, list[ChannelResult]]:
    """One recording in this process (no Ray, nothing written): ``(duration_s, results)``.
    ``src``: its audio (a path or bytes) when ``source`` names no file. Raises
    :class:`StitchError` (a ``ValueError``) for audio that cannot be used."""
    src = source_bytes(source) if src is None else src
    predictor = Predictor(ckpt.data, device or "cpu", os.cpu_count() or 1)
    stitcher = RecordingStitcher(ckpt.cfg, opts)
    for table in recording_tiles(source, src, ckpt.cfg, opts.channels):
        stitcher.add(predictor(table))
    return finish_with_edges(stitcher, src)


def _write_error(out: str, rec_id: str, source: str, stage: str, reason: str) -> None:
    _write_table(out, "errors", rec_id, pa.Table.from_pylist(
        [dict(recording_id=rec_id, source=storage.redact(source), stage=stage, reason=storage.redact(reason))],
        schema=ERROR_SCHEMA))


def segment_table(rec_id: str, source: str, results: list[ChannelResult], model_id: str) -> pa.Table:
    """One recording's rows of the segments table (:data:`SEGMENT_SCHEMA`)."""
    return pa.Table.from_pylist([dict(recording_id=rec_id, source=source, channel=r.channel, segment_id=s.segment_id,
                                      start_s=s.start_s, end_s=s.end_s, low_hz=s.low_hz, high_hz=s.high_hz,
                                      score=s.score, model_id=model_id) for r in results for s in r.segments],
                                schema=SEGMENT_SCHEMA)


def write_outputs(out: str, rec_id: str, source: str, duration: float, results: list[ChannelResult],
                  cfg: SpecConfig, model_id: str, opts: SegmentOptions, src=None, rel: Optional[str] = None) -> None:
    """Segments, summary, tables for other tools and denoised audio, then (last: the completion
    mark) masks. ``src``: the recording's audio (a path or bytes; default: read from ``source``
    again); ``rel``: its relative name, for the files named after it (default: its whole path)."""
    segments = segment_table(rec_id, source, results, model_id)
    _write_table(out, "segments", rec_id, segments)
    _write_table(out, "summary", rec_id, pa.Table.from_pylist(
        [dict(recording_id=rec_id, source=source, channel=r.channel, duration_s=duration,
              n_segments=len(r.segments), bird_seconds=postprocess.covered_seconds(r.segments))
         for r in results], schema=SUMMARY_SCHEMA))
    rel = rel or storage.mirrored(source.replace(storage.MEMBER_SEP, "/"))
    for fmt in opts.formats:
        write_file(out, selections.relative_path(fmt, rel), lambda p: selections.write(fmt, p, segments))
    if opts.denoise:
        def frames(g0: int, g1: int) -> np.ndarray:
            return np.stack([_mask_frames(r.mask, cfg.n_rows, r.n_frames, g0, g1) for r in results])

        blocks = audio.iter_blocks(source_bytes(source) if src is None else src, cfg.sample_rate, opts.channels)
        write_file(out, f"denoised/{output_stem(rel)}.wav",
                   lambda p: denoise.write_denoised(p, blocks, frames, cfg, len(results)))
    freqs = row_freqs(cfg)
    step = float(freqs[1] - freqs[0]) if len(freqs) > 1 else cfg.bin_hz
    _write_table(out, "masks", rec_id, pa.Table.from_pylist(
        [dict(recording_id=rec_id, source=source, channel=r.channel, n_rows=cfg.n_rows, n_frames=r.n_frames,
              frame0_s=frame_offset_s(cfg), hop_s=cfg.frame_s,
              row0_hz=float(freqs[0]), row_step_hz=step, mask=r.mask, probability=r.probability,
              threshold=opts.threshold, spec_config=cfg.to_json(), model_id=model_id) for r in results],
        schema=MASK_SCHEMA))


def _mask_frames(packed: bytes, n_rows: int, n_frames: int, g0: int, g1: int) -> np.ndarray:
    out = np.zeros((n_rows, g1 - g0), np.uint8)
    stop = min(g1, n_frames)
    if stop > g0:
        out[:, :stop - g0] = postprocess.decode_mask(packed, n_rows, n_frames, g0, stop)
    return out


# ---- reading the outputs -------------------------------------------------------------------------
def completed_ids(out: str) -> set[str]:
    """Recordings with a masks or errors file: complete, skipped by a re-run."""
    fs, root = storage.filesystem(out)
    ids = set()
    for table in ("masks", "errors"):
        folder = f"{root.rstrip('/')}/{table}"
        fs.invalidate_cache(folder)
        if not fs.isdir(folder):
            continue
        for path in fs.ls(folder, detail=False):
            name = PurePosixPath(path).name
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                ids.add(name[:-len(".parquet")])
    return ids


def read_outputs(out: str, table: str, recording_id: Optional[str] = None) -> pa.Table:
    """One output table (``segments``, ``masks``, ``summary``, ``errors``), optionally only one
    recording's rows; empty with its schema when nothing was written yet."""
    import pyarrow.dataset as pads
    schema = dict(segments=SEGMENT_SCHEMA, masks=MASK_SCHEMA, summary=SUMMARY_SCHEMA, errors=ERROR_SCHEMA)[table]
    fs, root = storage.arrow_filesystem(out)
    folder = storage.join(root, table)
    if fs.get_file_info(folder).type.name == "NotFound":
        return schema.empty_table()
    ds = pads.dataset(folder, filesystem=fs, format="parquet", schema=schema)
    return ds.to_table(filter=None if recording_id is None else pc.field("recording_id") == recording_id)


def read_mask(row: dict) -> np.ndarray:
    """The uint8 mask ``(n_rows, n_frames)`` of one masks-table row."""
    return postprocess.decode_mask(row["mask"], row["n_rows"], row["n_frames"])


def read_probability(row: dict) -> Optional[np.ndarray]:
    if row.get("probability") is None:
        return None
    return postprocess.decode_probability(row["probability"], row["n_rows"], row["n_frames"])


# ---- running -------------------------------------------------------------------------------------
@dataclass
class SegmentSummary:
    inputs: int
    recordings: int   # finished in this run
    errors: int       # error rows written in this run
    segments: int
    skipped: int      # input files already complete in OUT
    out: str

    def __str__(self) -> str:
        return (f"segment: {self.inputs} inputs -> {self.recordings} recordings ({self.segments} segments) "
                f"+ {self.errors} errors in {self.out}; {self.skipped} already complete, skipped")


def _pending(inputs: list[str], out: str) -> tuple[list[storage.Unit], frozenset, int]:
    units = storage.discover(inputs)
    if not units:
        raise ValueError(f"no input files found in {inputs}")
    done = frozenset(completed_ids(out))
    pending = [u for u in units if u.kind == "archive" or storage.recording_id(u.uri) not in done]
    return pending, done, len(units)


def progress(statuses: Iterable[dict], pending: list, show: bool = True) -> Iterator[dict]:
    """The status rows, passed on while a tqdm bar counts recordings and hours of audio done,
    with rate and ETA (the total is known when no archive is pending: one recording per file)."""
    from tqdm import tqdm
    total = None if any(u.kind == "archive" for u in pending) else len(pending)
    audio_s = 0.0
    with tqdm(total=total, unit="rec", desc="segment", disable=not show, mininterval=1.0, file=sys.stderr) as bar:
        for s in statuses:
            if s["status"] != UNIT_DONE:
                audio_s += s["duration_s"] or 0.0
                bar.set_postfix_str(f"{audio_s / 3600:.2f} h audio", refresh=False)
                bar.update(1)
            yield s


def _summary(statuses: Iterable[dict], n_inputs: int, skipped: int, out: str,
             units_done: Optional[set] = None) -> SegmentSummary:
    """Counts over the status rows, consumed as a stream (a run may finish millions); the
    sources of :data:`UNIT_DONE` rows go into ``units_done``."""
    ok = failed = segments = 0
    for s in statuses:
        if s["status"] == UNIT_DONE:
            if units_done is not None:
                units_done.add(s["source"])
        elif s["status"] == "ok":
            ok, segments = ok + 1, segments + s["n_segments"]
        else:
            failed += 1
    return SegmentSummary(n_inputs, ok, failed, segments, skipped, out)


OUTPUT_TABLES = ("segments", "masks", "summary", "errors", *selections.FORMATS, "denoised")


def start_record(out: str, ckpt: Checkpoint, options: SegmentOptions, overwrite: bool, **run) -> dict:
    """:func:`raybird.runrecord.start` for a segment run: its results depend on the model, its
    spectrogram and every option; ``run`` (arithmetic, devices) is recorded, not compared."""
    settings = dict(model_id=ckpt.model_id, spec_config=json.loads(ckpt.cfg.to_json()),
                    options=json.loads(json.dumps(dataclasses.asdict(options))))  # as read back (tuples: lists)
    return runrecord.start(out, "segment", settings, overwrite, OUTPUT_TABLES, run)


def write_combined(out: str, formats: Iterable[str]) -> list[str]:
    """The run's combined tables of ``formats`` (:func:`raybird.selections.write_combined`):
    every recording in OUT's segments table, this run's and earlier ones'. Returns their paths."""
    formats = selections.combinable(formats)
    if not formats:
        return []
    segments, summary = read_outputs(out, "segments"), read_outputs(out, "summary")
    durations = {r["source"]: r["duration_s"] for r in summary.select(["source", "duration_s"]).to_pylist()}
    for fmt in formats:
        write_file(out, selections.COMBINED[fmt], lambda p: selections.write_combined(fmt, p, segments, durations))
    return [storage.join(out, selections.COMBINED[fmt]) for fmt in formats]


def run(inputs: list[str], out: str, model: str | Checkpoint | None = None,
        options: SegmentOptions = SegmentOptions(), gpu: bool = False, batch_size: Optional[int] = None,
        actors: Optional[int] = None, actor_cpus: float = 1, precision: str = "auto",
        overwrite: bool = False, show_progress: bool = True, combine: bool = False) -> SegmentSummary:
    """Segment every recording under ``inputs`` into ``out`` (local folder or ``s3://``) with Ray
    Data; recordings already complete in ``out`` are skipped, if ``out`` was written with the same
    settings (else ``ValueError``; ``overwrite`` deletes its output first: :mod:`raybird.runrecord`).
    ``combine``: then write the run's combined tables of ``options.formats`` (:func:`write_combined`).
    ``actors``: model actors (default: one per GPU with ``gpu``, else one per ``actor_cpus`` CPUs
    of the cluster). ``precision``: see :func:`raybird.engine.precision_settings`.

    *Lost actors.* Ray Data retries an actor's tasks on that same actor once it restarts, which
    never happens when its node is gone and the surviving nodes' CPUs are all held by the rest
    of the pool (ray-project/ray#26991: the job stalls). So a lost actor's task fails at once
    (``max_task_retries=0``), Ray Data goes on without that unit, and a further pass, sized to
    the cluster that is left, takes the units that did not close (no :data:`UNIT_DONE` row),
    skipping their recordings already written; up to :data:`PASSES` passes."""
    ckpt = model if isinstance(model, Checkpoint) else read_checkpoint(model)
    record = start_record(out, ckpt, options, overwrite, precision=precision, gpu=gpu, actors=actors,
                          actor_cpus=actor_cpus, ray=True)
    pending, done, n_inputs = _pending(inputs, out)
    skipped = n_inputs - len(pending)
    ok = failed = segments = 0
    for n_pass in range(1, PASSES + 1):
        if not pending:
            break
        if n_pass > 1:
            log.warning("segment: %d units unfinished (actors lost); pass %d on the cluster that is left",
                        len(pending), n_pass)
        units_done: set = set()
        statuses = _segment_pass(pending, done, out, ckpt, options, gpu, batch_size, actors, actor_cpus, precision,
                                 after_loss=n_pass > 1)
        s = _summary(progress(statuses, pending, show_progress), n_inputs, skipped, out, units_done)
        ok, failed, segments = ok + s.recordings, failed + s.errors, segments + s.segments
        pending = [u for u in pending if u.uri not in units_done]
        done = frozenset(completed_ids(out)) if pending else done
    if pending:
        raise RuntimeError(f"{len(pending)} inputs unfinished after {PASSES} passes (their tasks failed or "
                           f"their actors were lost: see Ray Data's log), e.g. {pending[0].uri}; "
                           f"re-run the same command to resume")
    summary = SegmentSummary(n_inputs, ok, failed, segments, skipped, out)
    if combine:
        write_combined(out, options.formats)
    runrecord.finish(out, record, dataclasses.asdict(summary))
    return summary


def _segment_pass(pending: list, done: frozenset, out: str, ckpt: Checkpoint, options: SegmentOptions,
                  gpu: bool, batch_size: Optional[int], actors: Optional[int], actor_cpus: float,
                  precision: str, after_loss: bool = False) -> Iterator[dict]:
    """One Ray Data pass over ``pending``: its status rows (none for units whose actor was lost).
    ``after_loss``: a later pass, whose pool is also capped at what the cluster now holds."""
    import ray

    resources = ray.cluster_resources()
    capacity = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1) // actor_cpus)
    if actors is None or after_loss:
        actors = capacity if actors is None else min(actors, capacity)
    actors = max(1, min(actors, len(pending)))
    units = ray.data.from_items([dict(uri=u.uri, kind=u.kind, rel=u.rel) for u in pending],
                                override_num_blocks=len(pending))
    units.context.op_resource_reservation_enabled = False  # one operator: see raybird.ingest.run
    units.context.max_errored_blocks = -1  # a lost actor's unit: left for the next pass (see run)
    worker_args = (ckpt, out, dataclasses.asdict(options), done, "cuda" if gpu else "cpu",
                   1 if gpu else actor_cpus, batch_size or (GPU_BATCH if gpu else CPU_BATCH), precision)
    with warnings.catch_warnings():
        # Ray 2.60 names no map_batches parameter for max_task_retries; its ray_remote_args
        # route works and is deprecated (removal announced for Ray 2.64)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return units.map_batches(
            SegmentWorker, fn_constructor_args=worker_args, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), max_task_retries=0,
            **(dict(num_gpus=1, num_cpus=1) if gpu else dict(num_cpus=actor_cpus))).iter_rows()


def run_local(inputs: list[str], out: str, model: str | Checkpoint | None = None,
              options: SegmentOptions = SegmentOptions(), batch_size: Optional[int] = None,
              device: Optional[str] = None, threads: Optional[int] = None, precision: str = "auto",
              overwrite: bool = False, show_progress: bool = True, combine: bool = False) -> SegmentSummary:
    """The same work in this process, one recording at a time (no Ray)."""
    ckpt = model if isinstance(model, Checkpoint) else read_checkpoint(model)
    record = start_record(out, ckpt, options, overwrite, precision=precision, device=device or "cpu", ray=False)
    pending, done, n_inputs = _pending(inputs, out)
    batch_size = batch_size or (GPU_BATCH if device == "cuda" else CPU_BATCH)
    predictor = Predictor(ckpt.data, device or "cpu", threads or os.cpu_count() or 1, batch_size, precision)
    statuses = (s for unit in pending
                for s in segment_unit(unit, predictor, out, ckpt, options, done, 4 if device == "cuda" else 0))
    summary = _summary(progress(statuses, pending, show_progress), n_inputs, n_inputs - len(pending), out)
    if combine:
        write_combined(out, options.formats)
    runrecord.finish(out, record, dataclasses.asdict(summary))
    return summary


# ---- command line --------------------------------------------------------------------------------
def add_segment_parser(sub) -> None:
    from .engine import PRECISIONS
    p = sub.add_parser("segment", help="recordings -> bird masks and segments (+ Raven tables, denoised audio)")
    p.add_argument("inputs", nargs="+", help="folders, globs, .tar/.tar.gz/.zip, s3:// prefixes, manifest files")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix (re-running resumes)")
    p.add_argument("--model", default="default",
                   help="checkpoint file or folder, s3:// path, or 'default': the shipped model (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="bird probability threshold")
    p.add_argument("--min-duration", type=float, default=0.02, help="shortest segment kept (s)")
    p.add_argument("--min-pixels", type=int, default=10, help="smallest segment kept (pixels)")
    p.add_argument("--group-overlap", type=lambda v: None if v == "off" else float(v),
                   default=postprocess.GROUP_OVERLAP,
                   help="regions overlapping in time by this fraction of the shorter one (and --group-gap-hz "
                        "apart in frequency, e.g. harmonics) form one segment; 'off': every region is one")
    p.add_argument("--group-gap-hz", type=float, default=postprocess.GROUP_GAP_HZ,
                   help="largest frequency gap between grouped regions (Hz)")
    p.add_argument("--split-depth", type=lambda v: None if v == "off" else float(v),
                   default=postprocess.SPLIT_DEPTH_DB, metavar="DB",
                   help="cut a region where its loudest pixel per frame falls this many dB under its loudest "
                        "before and after (a silent gap the STFT window smears shut, as between syllables); "
                        "'off': never cut (default: %(default)s)")
    p.add_argument("--merge-gap", type=float, metavar="SECONDS",
                   help="join segments at most this far apart in time (and --group-gap-hz in frequency) into "
                        "one, e.g. 0.3 for one segment per song; default: never")
    p.add_argument("--edges", type=lambda v: None if v == "off" else float(v), default=boundaries.FRACTION,
                   metavar="FRACTION",
                   help="move each segment's onset and offset to where the level in its band crosses this "
                        "fraction (in dB) of the way from the noise up to the sound, measured on the audio every "
                        "1 ms; 'off': the edges of the mask's frames, which the STFT window makes early and "
                        "late by ~7 ms (default: %(default)s)")
    p.add_argument("--channels", choices=audio.CHANNEL_MODES, default="mix",
                   help="mix down to mono, or segment each channel on its own")
    p.add_argument("--format", type=selections.parse_formats, metavar="FORMATS", dest="formats",
                   help="also write a table per recording for other tools, comma-separated from "
                        f"{','.join(selections.FORMATS)}: raven/<name>.Table.1.selections.txt, audacity/<name>.txt, "
                        "csv/<name>.csv, <name> the recording's path under its input's parent folder, "
                        "suffix dropped (see docs/outputs.md)")
    p.add_argument("--combine", action="store_true",
                   help="also write one table for the whole run per --format that has one: "
                        "raven/combined.selections.txt, csv/combined.csv")
    p.add_argument("--denoise", action="store_true", help="also write denoised/<name>.wav (mask applied to the STFT)")
    p.add_argument("--probabilities", action="store_true", help="store the uint8 probability map in masks/")
    p.add_argument("--gpu", action="store_true", help="one GPU per model actor")
    p.add_argument("--batch-size", type=int, help=f"tiles per model call (default {GPU_BATCH} with --gpu, else {CPU_BATCH})")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="model arithmetic; auto: bf16 on GPUs and on CPUs with native bf16, else fp32")
    p.add_argument("--actors", type=int, help="model actors, each segmenting whole recordings (default: the "
                                              "cluster's GPUs with --gpu, else its CPUs / --actor-cpus)")
    p.add_argument("--actor-cpus", type=float, help="CPUs per CPU model actor, its torch threads rounded down "
                                                    "(at least 1; default 1); with --local: the threads of this "
                                                    "process, default all")
    p.add_argument("--local", action="store_true", help="run in this process without Ray")
    p.add_argument("--overwrite", action="store_true",
                   help="delete --out's tables and run record first and segment everything again (a re-run "
                        "into an --out written with other settings is refused without it)")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 if any recording failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (recordings and hours done, rate, ETA)")
    p.set_defaults(func=cmd_segment)


def cmd_segment(a) -> int:
    options = SegmentOptions(threshold=a.threshold, min_duration_s=a.min_duration, min_pixels=a.min_pixels,
                             channels=a.channels, formats=a.formats or (), denoise=a.denoise, probabilities=a.probabilities,
                             group_overlap=a.group_overlap, group_gap_hz=a.group_gap_hz,
                             split_depth_db=a.split_depth, merge_gap_s=a.merge_gap, edge_fraction=a.edges)
    if a.combine and not selections.combinable(a.formats or ()):
        print("raybird segment: --combine needs --format raven or csv (an Audacity track belongs to one file)")
        return 2
    try:
        if options.denoise:
            require("librosa")  # before any work: a missing extra fails fast
        ckpt = read_checkpoint(a.model)  # before starting Ray: a missing model fails fast
        if a.local:
            summary = run_local(a.inputs, a.out, ckpt, options, a.batch_size, "cuda" if a.gpu else None,
                                a.actor_cpus, a.precision, a.overwrite, not a.no_progress, a.combine)
        else:
            from .runtime import init_ray
            init_ray()
            summary = run(a.inputs, a.out, ckpt, options, a.gpu, a.batch_size, a.actors, a.actor_cpus or 1,
                          a.precision, a.overwrite, not a.no_progress, a.combine)
    except FileNotFoundError as e:
        print(f"raybird segment: {e}")
        return 2
    print(summary)
    return 1 if a.fail_on_error and summary.errors else 0
