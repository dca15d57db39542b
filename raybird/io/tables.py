"""The segment job's output tables: their schemas, the atomic writer and the readers.

Every file lands atomically: locally it is written under a hidden temporary name
(``.<name>.<random>.tmp``, skipped by pyarrow and Ray readers) and renamed; on S3 a PUT (or a
completed multipart upload) is atomic. Per recording, ``masks/`` (or ``errors/``) is written
last and marks it complete: a re-run lists those two folders and skips what they hold.

**Mask encoding** (:func:`encode_mask` / :func:`decode_mask`, the ``mask`` column): frame-major bit packing,
``np.packbits(mask.T, axis=1)``, i.e. each frame is ``ceil(n_rows / 8)`` bytes, bit 7 of
byte 0 = row 0. Frame-major so that chunks append and frame ranges slice without unpacking
the rest. Probabilities (:func:`encode_probability`) are frame-major uint8, ``round(p * 255)``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import PurePosixPath
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raybird.io import redaction, storage

ERROR_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),  # read / decode / labels
        ("reason", pa.string()),
    ]
)
SEGMENT_SCHEMA = pa.schema(
    [
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
    ]
)


MASK_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source", pa.string()),
        ("channel", pa.int16()),
        ("n_rows", pa.int32()),
        ("n_frames", pa.int64()),
        ("frame0_s", pa.float64()),  # time of frame 0's centre; frame i at frame0_s + i * hop_s
        ("hop_s", pa.float64()),
        ("row0_hz", pa.float64()),  # frequency of row 0; row r at row0_hz + r * row_step_hz
        ("row_step_hz", pa.float64()),
        ("mask", pa.large_binary()),  # encode_mask: frame-major np.packbits
        ("probability", pa.large_binary()),  # frame-major uint8 round(p * 255), only with --probabilities
        ("threshold", pa.float32()),
        ("spec_config", pa.string()),
        ("model_id", pa.string()),
    ]
)


SUMMARY_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source", pa.string()),
        ("channel", pa.int16()),
        ("duration_s", pa.float64()),
        ("n_segments", pa.int32()),
        ("bird_seconds", pa.float64()),  # union of the segments' time spans
    ]
)


def error_table(source: str, stage: str, reason: str) -> pa.Table:
    """One errors-table row; source and reason go through :func:`raybird.io.redaction.redact`."""
    row = dict(recording_id=storage.recording_id(source), source=redaction.redact(source), stage=stage)
    return pa.Table.from_pylist([dict(row, reason=redaction.redact(reason))], schema=ERROR_SCHEMA)


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


def write_table(out: str, table_name: str, rec_id: str, table: pa.Table) -> None:
    write_file(out, f"{table_name}/{rec_id}.parquet", lambda p: pq.write_table(table, p, compression="zstd"))


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
                ids.add(name[: -len(".parquet")])
    return ids


OUTPUT_SCHEMAS = dict(segments=SEGMENT_SCHEMA, masks=MASK_SCHEMA, summary=SUMMARY_SCHEMA, errors=ERROR_SCHEMA)


def output_dataset(out: str, table: str):
    """One table of a run folder or bucket prefix (the segment job's ``segments``, ``masks``,
    ``summary``, ``errors``; ingest's ``shards``, ``errors``) as a pyarrow dataset, its files
    listed once; None when nothing was written to it yet."""
    import pyarrow.dataset as pads

    fs, root = storage.arrow_filesystem(out)
    folder = storage.join(root, table)
    if fs.get_file_info(folder).type.name == "NotFound":
        return None
    return pads.dataset(folder, filesystem=fs, format="parquet", schema=OUTPUT_SCHEMAS.get(table))


def read_outputs(
    out: str, table: str, recording_id: Optional[str] = None, columns: Optional[list[str]] = None
) -> pa.Table:
    """One table of a run (see :func:`output_dataset`), optionally only some ``columns`` or one
    recording's rows; empty (with its schema, where it has a fixed one) when nothing was written."""
    ds = output_dataset(out, table)
    if ds is None:
        empty = OUTPUT_SCHEMAS[table].empty_table() if table in OUTPUT_SCHEMAS else pa.table({})
        return empty.select(columns) if columns and len(empty.schema) else empty
    return ds.to_table(
        columns=columns, filter=None if recording_id is None else pc.field("recording_id") == recording_id
    )


# ---- the masks table's encodings -----------------------------------------------------------
def encode_mask(mask: np.ndarray) -> bytes:
    """``(rows, frames)`` mask -> frame-major packed bits (see the module docstring)."""
    return np.packbits(np.asarray(mask, bool).T, axis=1).tobytes()


def decode_mask(data: bytes, n_rows: int, n_frames: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """uint8 ``(n_rows, stop - start)`` mask of frames ``start..stop`` of an encoded mask."""
    stop = n_frames if stop is None else stop
    packed = np.frombuffer(data, np.uint8).reshape(n_frames, -1)[start:stop]
    return np.ascontiguousarray(np.unpackbits(packed, axis=1, count=n_rows).T)


def encode_probability(prob: np.ndarray) -> bytes:
    """``(rows, frames)`` probabilities in [0, 1] (or uint8 0..255) -> frame-major uint8 bytes."""
    q = prob if prob.dtype == np.uint8 else np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(q.T).tobytes()


def decode_probability(data: bytes, n_rows: int, n_frames: int) -> np.ndarray:
    """float32 ``(n_rows, n_frames)`` probabilities (steps of 1/255)."""
    return np.frombuffer(data, np.uint8).reshape(n_frames, n_rows).T.astype(np.float32) / 255.0


def read_mask(row: dict) -> np.ndarray:
    """The uint8 mask ``(n_rows, n_frames)`` of one masks-table row."""
    return decode_mask(row["mask"], row["n_rows"], row["n_frames"])


def read_probability(row: dict) -> Optional[np.ndarray]:
    if row.get("probability") is None:
        return None
    return decode_probability(row["probability"], row["n_rows"], row["n_frames"])
