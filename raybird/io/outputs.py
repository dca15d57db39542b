"""The segment job's tables as few, large Parquet files: part files rolled per writer, and a
journal that commits them.

A million short recordings written one file per recording per table would be millions of
objects (each mostly footer), which every reader and every resume would list. Instead each
writer (a model actor, or a ``--local`` run) buffers the rows of the recordings it finishes
and writes them as one **part file per table** (``segments/part-<writer>-<n>.parquet``,
``masks/…``, ``summary/…``, ``errors/…``) when the buffer reaches ``max_mb`` or
``max_recordings``, and at the end of each Ray task. Each file lands atomically
(:func:`raybird.io.tables.write_file`); then a **journal entry** (``_journal/part-<writer>-<n>.json``:
the part's files, its recording ids, the ids of the input units it finished) commits them
together.

*Exactly once.* A part file counts only once its journal entry exists: readers
(:func:`committed_files`) skip part files no entry names (those of a writer killed between its
files and its entry), and a resume skips exactly the recordings the journal names
(:func:`completed_ids`); what a killed writer had buffered or half-written is done again. Each
pass of a run first deletes uncommitted part files (:func:`remove_uncommitted`), so the folders
of a finished run hold committed rows only, for readers that know nothing of the journal.
Resume reads the journal (one small file per part) and lists the masks and errors folders, a
few files each, never an object per recording. Runs written one file per recording by earlier
versions read and resume the same way: their files are taken as they are.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raybird.io import storage
from raybird.io.tables import OUTPUT_SCHEMAS, write_file

JOURNAL = "_journal"
PART_TABLES = ("segments", "masks", "summary", "errors")
ROW_GROUP_MB = 32  # row groups of about this size: readers can skip and stream, footers stay small


class PartWriter:
    """Buffers recordings' rows of the tables and writes them as part files (module docstring)."""

    def __init__(self, out: str, max_mb: float = 256, max_recordings: int = 1000):
        self.out, self.max_bytes, self.max_recordings = out, max_mb * 1024**2, max_recordings
        self.writer = uuid.uuid4().hex[:12]  # a killed writer's successor never reuses its names
        self.n_parts = 0
        self._clear()

    def _clear(self) -> None:
        self.rows: dict[str, list[pa.Table]] = {t: [] for t in PART_TABLES}
        self.ids: list[str] = []
        self.units: list[str] = []
        self.nbytes = 0

    def add(self, rec_id: str, rows: dict[str, pa.Table]) -> None:
        """One recording's rows of each table (``errors`` alone for a failed one). A buffer that
        has reached the writer's limits is committed first (not at once: the units its
        recordings finish go into the same entry)."""
        if self.nbytes >= self.max_bytes or len(self.ids) >= self.max_recordings:
            self.commit()
        for table, t in rows.items():
            self.rows[table].append(t)
            self.nbytes += t.nbytes
        self.ids.append(rec_id)

    def unit_done(self, uri: str) -> None:
        """Every recording of the input ``uri`` has been added: committed with them, by its id
        (:func:`raybird.io.storage.recording_id`; a URI may hold what must not be written)."""
        self.units.append(storage.recording_id(uri))

    def commit(self) -> None:
        """Write the buffered rows as part files, then the journal entry that commits them."""
        if not self.ids and not self.units:
            return
        name = f"part-{self.writer}-{self.n_parts:05d}"
        files = {}
        for table, parts in self.rows.items():
            if parts:
                rel = f"{table}/{name}.parquet"
                t = pa.concat_tables(parts)
                write_file(self.out, rel, lambda p, t=t: _write_parquet(t, p))
                files[table] = rel
        entry = json.dumps(dict(files=files, recordings=self.ids, units=self.units)).encode()
        write_file(self.out, f"{JOURNAL}/{name}.json", lambda p: Path(p).write_bytes(entry))
        self.n_parts += 1
        self._clear()


def _write_parquet(table: pa.Table, path: str) -> None:
    per_row = max(1, table.nbytes // max(1, len(table)))
    pq.write_table(table, path, compression="zstd", row_group_size=max(1, ROW_GROUP_MB * 1024**2 // per_row))


class Journal:
    """What a run folder's journal commits: recording ids, finished units, part files."""

    def __init__(self, entries: Iterable[dict] = ()):
        self.ids: set[str] = set()
        self.units: set[str] = set()  # ids of finished inputs (files, archives)
        self.files: set[str] = set()  # relative paths, "<table>/part-….parquet"
        for e in entries:
            self.ids.update(e["recordings"])
            self.units.update(e["units"])
            self.files.update(e["files"].values())


def read_journal(out: str) -> Journal:
    fs, root = storage.filesystem(out)
    folder = f"{root.rstrip('/')}/{JOURNAL}"
    fs.invalidate_cache(folder)
    if not fs.isdir(folder):
        return Journal()
    paths = [
        p for p in fs.ls(folder, detail=False) if p.endswith(".json") and not PurePosixPath(p).name.startswith(".")
    ]
    return Journal(json.loads(b) for b in fs.cat(paths).values()) if paths else Journal()


PART_NAME = re.compile(r"^part-[0-9a-f]{12}-\d{5,}\.parquet$")


def is_part(path: str) -> bool:
    return bool(PART_NAME.match(PurePosixPath(path).name))


def table_files(out: str, table: str) -> list[str]:
    """The Parquet files of one table folder (paths on :func:`raybird.io.storage.filesystem`'s
    filesystem), hidden staging files left out."""
    fs, root = storage.filesystem(out)
    folder = f"{root.rstrip('/')}/{table}"
    fs.invalidate_cache(folder)
    if not fs.isdir(folder):
        return []
    names = (PurePosixPath(p) for p in fs.ls(folder, detail=False))
    return sorted(str(p) for p in names if p.suffix == ".parquet" and not p.name.startswith((".", "_")))


def committed_files(out: str, table: str) -> list[str]:
    """A table's readable files: the part files the journal commits and the one-file-per-recording
    files of earlier versions (and ingest's shards); the journal is read only where parts are."""
    files = table_files(out, table)
    if not any(is_part(p) for p in files):
        return files
    keep = _paths(out, read_journal(out))
    return [p for p in files if not is_part(p) or p in keep]


def remove_uncommitted(out: str, journal: Journal) -> int:
    """Delete the part files ``journal`` does not commit (left by writers killed between their
    files and their entry), so that a finished run's folders hold committed rows only, for any
    reader; only while no writer is at work in OUT. Returns how many were deleted."""
    fs, _ = storage.filesystem(out)
    keep = _paths(out, journal)
    orphans = [p for t in PART_TABLES for p in table_files(out, t) if is_part(p) and p not in keep]
    for p in orphans:
        fs.rm(p)
    return len(orphans)


def _paths(out: str, journal: Journal) -> set[str]:
    """The journal's part files as paths on :func:`raybird.io.storage.filesystem`'s filesystem."""
    _, root = storage.filesystem(out)
    return {f"{root.rstrip('/')}/{rel}" for rel in journal.files}


def completed_ids(out: str, journal: Optional[Journal] = None) -> set[str]:
    """Recordings complete in OUT, skipped by a resume: the journal's, and those with a masks or
    errors file of their own (written by earlier versions)."""
    ids = set((read_journal(out) if journal is None else journal).ids)
    for table in ("masks", "errors"):
        ids.update(PurePosixPath(p).stem for p in table_files(out, table) if not is_part(p))
    return ids


def output_dataset(out: str, table: str):
    """One table of a run folder or bucket prefix (the segment job's ``segments``, ``masks``,
    ``summary``, ``errors``; ingest's ``shards``, ``errors``) as a pyarrow dataset of its
    committed files (:func:`committed_files`); None when nothing was written to it yet."""
    import pyarrow.dataset as pads

    files = committed_files(out, table)
    if not files:
        return None
    fs, _ = storage.arrow_filesystem(out)
    return pads.dataset(files, filesystem=fs, format="parquet", schema=OUTPUT_SCHEMAS.get(table))


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
