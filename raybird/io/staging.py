"""A job's tables replaced whole: written under ``OUT/.staging-<id>/`` and only then put in
place, so an interrupted run never leaves a partial Parquet file or half a table where readers
look; they keep the previous run's output until the new one is complete (ingest's shards and
errors)."""

from __future__ import annotations

import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from raybird.io import storage


def staging_folder(fs, root: str) -> str:
    """A fresh staging folder under ``root``; leftovers of killed runs are removed first (a run
    owns its output folder)."""
    import pyarrow.fs as pafs

    fs.create_dir(root, recursive=True)
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if info.base_name.startswith((".staging-", ".old-")):
            fs.delete_dir(info.path)
    return storage.join(root, f".staging-{uuid.uuid4().hex[:12]}")


def publish(fs, root: str, staging: str, out: str, tables: Iterable[str]) -> None:
    """Put the staged tables in place. Locally each table is one directory rename, so a reader
    sees the old table or the new one, never a mix. S3 has no rename: the old objects are
    deleted and the staged ones copied in (server side; each object is complete once visible,
    only a crash in these seconds leaves a mix, and the next run replaces it)."""
    if out.startswith("s3://"):
        s3, _ = storage.filesystem(out)
        for name in tables:
            final, new = storage.join(root, name), storage.join(staging, name)
            if s3.exists(final):
                s3.rm(final, recursive=True)
            for obj in s3.find(new):
                s3.copy(obj, final + obj[len(new) :])
        s3.rm(staging, recursive=True)
        return
    old = storage.join(root, f".old-{uuid.uuid4().hex[:12]}")
    fs.create_dir(old)
    for name in tables:
        final = storage.join(root, name)
        if fs.get_file_info(final).type.name != "NotFound":
            fs.move(final, storage.join(old, name))
        fs.move(storage.join(staging, name), final)
    fs.delete_dir(old)
    fs.delete_dir(staging)


def write_single(fs, folder: str, table: pa.Table) -> None:
    """A table folder of one Parquet file."""
    fs.create_dir(folder, recursive=True)
    pq.write_table(table, storage.join(folder, "part-0.parquet"), filesystem=fs)
