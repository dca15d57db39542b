"""Ingest: recordings -> Parquet shards of fixed-size spectrogram tiles (+ masks where labels
exist) and an errors table. Every discovered input ends in exactly one place: tile rows of
its recording, or one row of the errors table with the reason.

The per-recording work (:func:`recording_rows`) is plain Python; :func:`run` distributes it
with Ray Data and :func:`run_local` is the same work in one process (tests, benchmark
baseline).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import audio, labels, storage
from .spectrogram import SpecConfig, get_config, iter_tiles, to_uint8

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([
    ("recording_id", pa.string()),
    ("source", pa.string()),
    ("channel", pa.int16()),
    ("tile_index", pa.int32()),
    ("first_frame", pa.int64()),
    ("offset_s", pa.float64()),      # time of the tile's first frame centre
    ("valid_frames", pa.int32()),    # frames before the end of the recording
    ("n_rows", pa.int32()),
    ("n_frames", pa.int32()),
    ("spec", pa.binary()),           # uint8 (n_rows, n_frames) row-major, value/255 in [0, 1]
    ("mask", pa.binary()),           # uint8 (n_rows, n_frames) 1 = bird; null when unlabelled
    ("split", pa.string()),          # train / val / test, by recording
    ("duration_s", pa.float64()),
    ("sample_rate", pa.int32()),     # the file's own rate (spectrograms use spec_config's)
    ("spec_config", pa.string()),    # SpecConfig JSON
])
ERROR_SCHEMA = pa.schema([
    ("recording_id", pa.string()),
    ("source", pa.string()),
    ("stage", pa.string()),          # read / decode / labels
    ("reason", pa.string()),
])
SPLITS = (("train", 70), ("val", 20), ("test", 10))


def split_of(rec_id: str) -> str:
    """70/20/10 by a hash of the recording id: stable across runs and machines."""
    bucket = int(hashlib.sha1(rec_id.encode()).hexdigest()[:8], 16) % 100
    for name, share in SPLITS:
        if bucket < share:
            return name
        bucket -= share
    return SPLITS[-1][0]


def error_table(source: str, stage: str, reason: str) -> pa.Table:
    return pa.Table.from_pylist([{"recording_id": storage.recording_id(source), "source": source,
                                  "stage": stage, "reason": reason}], schema=ERROR_SCHEMA)


def recording_rows(source: str, src, cfg: SpecConfig, channels: str = "mix",
                   label=None) -> pa.Table:
    """All tile rows of one recording. ``src`` is a path, bytes or a file object; ``label`` is
    what :func:`raybird.labels.load_labels` returned (boxes, a grid mask, or None).
    Raises :class:`raybird.audio.AudioError` for unusable audio."""
    rec_id = storage.recording_id(source)
    info = audio.info(src)
    if hasattr(src, "seek"):
        src.seek(0)
    rows = []
    cfg_json = cfg.to_json()
    n_samples = 0

    def counted(blocks):
        nonlocal n_samples
        for b in blocks:
            n_samples += b.shape[1]
            yield b

    for tile in iter_tiles(counted(audio.iter_blocks(src, cfg.sample_rate, channels)), cfg):
        for ch, spec in enumerate(tile.spec):
            mask = None
            if label is not None:
                m = labels.label_mask(label, cfg, tile.first_frame, cfg.tile_frames,
                                      channel=ch if channels == "split" else None)
                m[:, tile.valid_frames:] = 0
                mask = m.tobytes()
            rows.append({"recording_id": rec_id, "source": source, "channel": ch,
                         "tile_index": tile.index, "first_frame": tile.first_frame,
                         "offset_s": tile.offset_s(cfg), "valid_frames": tile.valid_frames,
                         "n_rows": spec.shape[0], "n_frames": spec.shape[1],
                         "spec": to_uint8(spec).tobytes(), "mask": mask,
                         "split": split_of(rec_id), "duration_s": None,
                         "sample_rate": info.sample_rate, "spec_config": cfg_json})
    if not rows:
        raise audio.AudioError("no audio samples")
    for r in rows:  # decoded length: header durations of MP3s are estimates
        r["duration_s"] = n_samples / cfg.sample_rate
    return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


def _one(source: str, src, cfg, channels, side_files, read) -> tuple[pa.Table | None, pa.Table | None]:
    """(tiles, None) or (None, error row) for one recording."""
    try:
        label = labels.load_labels(source, side_files, read, cfg)
    except (ValueError, KeyError, OSError) as e:
        return None, error_table(source, "labels", f"{type(e).__name__}: {e}")
    try:
        return recording_rows(source, src, cfg, channels, label), None
    except audio.AudioError as e:
        return None, error_table(source, "decode", str(e))
    except (OSError, EOFError, MemoryError) as e:
        return None, error_table(source, "read", f"{type(e).__name__}: {e}")


def process_unit(unit: storage.Unit, cfg: SpecConfig, channels: str = "mix") -> Iterator[tuple]:
    """Yield ``(tiles, errors)`` pairs (one side None) for every recording of a unit."""
    if unit.kind == "file":
        try:
            if unit.uri.startswith("s3://"):
                src = storage.read_bytes(unit.uri)
            else:
                if not os.access(unit.uri, os.R_OK) or not os.path.isfile(unit.uri):
                    raise PermissionError(f"cannot read {unit.uri!r} (not a readable regular file)")
                src = unit.uri
                if os.path.getsize(src) == 0:
                    raise audio.AudioError("empty file (0 bytes)")
        except audio.AudioError as e:
            yield None, error_table(unit.uri, "decode", str(e))
            return
        except OSError as e:
            yield None, error_table(unit.uri, "read", f"{type(e).__name__}: {e}")
            return
        yield _one(unit.uri, src, cfg, channels, unit.side_files, storage.read_bytes)
        return
    # Archive: labels first (small side members), then recordings one member at a time.
    try:
        side = {name: data for name, data in storage.iter_archive(unit.uri)
                if storage.is_side_file(name) and isinstance(data, bytes)}
        for name, data in storage.iter_archive(unit.uri):
            source = f"{unit.uri}{storage.MEMBER_SEP}{name}"
            if storage.is_hidden(name) or storage.is_side_file(name):
                continue
            if storage.unsafe_member_name(name):
                yield None, error_table(source, "read", "unsafe archive member name (absolute or '..')")
            elif isinstance(data, Exception):
                yield None, error_table(source, "read", f"{type(data).__name__}: {data}")
            elif len(data) == 0:
                yield None, error_table(source, "decode", "empty file (0 bytes)")
            else:
                yield _one(source, data, cfg, channels, list(side), side.__getitem__)
    except Exception as e:  # a corrupt archive: the archive itself is one error row
        yield None, error_table(unit.uri, "read", f"corrupt or unreadable archive: {type(e).__name__}: {e}")


def _ingest_batch(batch: dict, cfg_json: str, channels: str) -> Iterator[pa.Table]:
    """Ray Data UDF: a batch of units -> pyarrow tables of tiles and errors together
    (``reason`` null for tiles), so one pass feeds both outputs."""
    cfg = SpecConfig.from_json(cfg_json)
    for uri, kind, side in zip(batch["uri"], batch["kind"], batch["side_files"]):
        unit = storage.Unit(str(uri), str(kind), [str(s) for s in side])
        for tiles, err in process_unit(unit, cfg, channels):
            yield _combined(tiles, err)


COMBINED_SCHEMA = pa.schema(list(SHARD_SCHEMA) + [("stage", pa.string()), ("reason", pa.string())])


def _combined(tiles: Optional[pa.Table], err: Optional[pa.Table]) -> pa.Table:
    t = tiles if tiles is not None else err
    cols = {name: (t.column(name) if name in t.column_names else pa.nulls(len(t), COMBINED_SCHEMA.field(name).type))
            for name in COMBINED_SCHEMA.names}
    return pa.table(cols, schema=COMBINED_SCHEMA)


@dataclasses.dataclass
class IngestSummary:
    recordings: int
    tiles: int
    errors: int
    inputs: int
    out: str

    def __str__(self) -> str:
        return (f"ingest: {self.inputs} inputs -> {self.recordings} recordings "
                f"({self.tiles} tiles) + {self.errors} errors in {self.out}")


def run(inputs: list[str], out: str, preset: str | SpecConfig | None = None, channels: str = "mix",
        num_cpus_per_task: float = 1.0) -> IngestSummary:
    """Ray Data ingest. Writes ``out/shards/*.parquet`` and ``out/errors/*.parquet``
    (overwriting earlier output), returns counts."""
    import ray
    from ray.data import SaveMode

    cfg = get_config(preset)
    units = storage.discover(inputs)
    if not units:
        raise ValueError(f"no input files found in {inputs}")
    items = [dataclasses.asdict(u) for u in units]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    combined = ds.map_batches(_ingest_batch, fn_kwargs={"cfg_json": cfg.to_json(), "channels": channels},
                              batch_size=1, batch_format="numpy", num_cpus=num_cpus_per_task).materialize()
    import pyarrow.compute as pc
    tiles = combined.map_batches(
        lambda t: t.filter(pc.is_null(t["reason"])).select(SHARD_SCHEMA.names),
        batch_format="pyarrow", batch_size=None)
    errors = combined.map_batches(
        lambda t: t.filter(pc.is_valid(t["reason"])).select(ERROR_SCHEMA.names),
        batch_format="pyarrow", batch_size=None)
    fs, root = storage.arrow_filesystem(out)
    tiles.write_parquet(storage.join(root, "shards"), filesystem=fs, mode=SaveMode.OVERWRITE,
                        min_rows_per_file=64)  # ~16 MB files, not one per recording
    # Errors are few: one file written here (Ray's write of an empty dataset fails on S3).
    _write_single(fs, storage.join(root, "errors"),
                  pa.Table.from_pylist(errors.take_all(), schema=ERROR_SCHEMA))
    return _summary(read_table(out, "shards"), read_table(out, "errors"), len(units), out)


def run_local(inputs: list[str], out: str, preset: str | SpecConfig | None = None,
              channels: str = "mix") -> IngestSummary:
    """The same ingest in one process, no Ray: the benchmark's baseline and the unit tests' path."""
    cfg = get_config(preset)
    units = storage.discover(inputs)
    tiles, errors = [], []
    for unit in units:
        for t, e in process_unit(unit, cfg, channels):
            (tiles if t is not None else errors).append(t if t is not None else e)
    fs, root = storage.arrow_filesystem(out)
    for name, tables, schema in (("shards", tiles, SHARD_SCHEMA), ("errors", errors, ERROR_SCHEMA)):
        _write_single(fs, storage.join(root, name), pa.concat_tables(tables) if tables else schema.empty_table())
    return _summary(read_table(out, "shards"), read_table(out, "errors"), len(units), out)


def _write_single(fs, folder: str, table: pa.Table) -> None:
    """Replace a table folder's contents by one Parquet file."""
    fs.create_dir(folder, recursive=True)
    fs.delete_dir_contents(folder, missing_dir_ok=True)
    pq.write_table(table, storage.join(folder, "part-0.parquet"), filesystem=fs)


def read_table(out: str, name: str, columns: Optional[list[str]] = None) -> pa.Table:
    """Read one output table (``shards``, ``errors``, ...) of a run folder or bucket prefix."""
    fs, root = storage.arrow_filesystem(out)
    import pyarrow.dataset as pads
    folder = storage.join(root, name)
    info = fs.get_file_info(folder)
    if info.type.name == "NotFound":
        return pa.table({})
    return pads.dataset(folder, filesystem=fs, format="parquet").to_table(columns=columns)


def _summary(tiles: pa.Table, errors: pa.Table, n_inputs: int, out: str) -> IngestSummary:
    recs = len(set(tiles.column("recording_id").to_pylist())) if len(tiles) else 0
    return IngestSummary(recs, len(tiles), len(errors), n_inputs, out)


def decode_tile(row: dict) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(spec float32 (rows, frames) in [0,1], mask uint8 or None) of one shard row."""
    shape = (row["n_rows"], row["n_frames"])
    spec = np.frombuffer(row["spec"], np.uint8).reshape(shape).astype(np.float32) / 255.0
    mask = None if row.get("mask") is None else np.frombuffer(row["mask"], np.uint8).reshape(shape)
    return spec, mask
