"""The segment job's output tables: their schemas, the atomic writer and the masks' encodings.

Every file lands atomically (:func:`write_file`): locally it is written under a hidden
temporary name (``.<name>.<random>.tmp``, skipped by pyarrow and Ray readers) and renamed; on
S3 a PUT (or a completed multipart upload) is atomic. How a run's tables are laid out in files,
committed and read back: :mod:`raybird.io.outputs`.

**Mask encoding** (:func:`encode_mask` / :func:`decode_mask`, the ``mask`` column): frame-major bit packing,
``np.packbits(mask.T, axis=1)``, i.e. each frame is ``ceil(n_rows / 8)`` bytes, bit 7 of
byte 0 = row 0. Frame-major so that chunks append and frame ranges slice without unpacking
the rest. Probabilities (:func:`encode_probability`) are frame-major uint8, ``round(p * 255)``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

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
        # a class model's (null from a bird/background model): the segment's class, that class's
        # mean probability over its pixels, and the most probable classes with theirs (up to 3)
        ("label", pa.string()),
        ("label_score", pa.float32()),
        ("top_labels", pa.list_(pa.string())),
        ("top_scores", pa.list_(pa.float32())),
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
        # class models with --class-map: frame-major uint8, k = class_names[k - 1] on mask pixels, 0 elsewhere
        ("class_map", pa.large_binary()),
        ("class_names", pa.list_(pa.string())),  # a class model's classes, in output order
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


OUTPUT_SCHEMAS = dict(segments=SEGMENT_SCHEMA, masks=MASK_SCHEMA, summary=SUMMARY_SCHEMA, errors=ERROR_SCHEMA)


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
