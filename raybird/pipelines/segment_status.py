"""The segment job's status rows: what each actor sends back per recording and per input, and
what the driver makes of them (a progress bar, the run's counts, the inputs that closed)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import pyarrow as pa

STATUS_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("n_segments", pa.int32()),
        ("duration_s", pa.float64()),
    ]
)
UNIT_DONE = "unit-done"  # the status of the row closing each unit in a Ray pass (not a recording)
# A Ray task's status rows travel as one row of lists: one block per task, which Ray Data
# neither merges with others nor slices, whatever its block size (see raybird.pipelines.unit_stream).
TASK_STATUS = pa.schema([(f.name, pa.list_(f.type)) for f in STATUS_SCHEMA])


def task_status(rows: list[dict]) -> pa.Table:
    """A task's status rows as one row of :data:`TASK_STATUS`."""
    return pa.Table.from_pylist([{f.name: [r[f.name] for r in rows] for f in STATUS_SCHEMA}], schema=TASK_STATUS)


def status_rows(task_rows: Iterable[dict]) -> Iterator[dict]:
    """The status rows of a stream of :func:`task_status` rows."""
    names = STATUS_SCHEMA.names
    for row in task_rows:
        yield from (dict(zip(names, values)) for values in zip(*(row[n] for n in names)))


@dataclass
class SegmentSummary:
    inputs: int
    recordings: int  # finished in this run
    errors: int  # error rows written in this run
    segments: int
    skipped: int  # input files already complete in OUT
    out: str

    def __str__(self) -> str:
        return (
            f"segment: {self.inputs} inputs -> {self.recordings} recordings ({self.segments} segments) "
            f"+ {self.errors} errors in {self.out}; {self.skipped} already complete, skipped"
        )


def recording_count(units: list) -> Optional[int]:
    """How many recordings ``units`` hold, known when none is an archive (one per file)."""
    return None if any(u.kind == "archive" for u in units) else len(units)


def progress(statuses: Iterable[dict], total: Optional[int], show: bool = True) -> Iterator[dict]:
    """The status rows, passed on while a tqdm bar counts recordings and hours of audio done,
    with rate and ETA when the ``total`` is known (:func:`recording_count`; not while a listing
    streams)."""
    from tqdm import tqdm

    audio_s = 0.0
    with tqdm(total=total, unit="rec", desc="segment", disable=not show, mininterval=1.0, file=sys.stderr) as bar:
        for s in statuses:
            if s["status"] != UNIT_DONE:
                audio_s += s["duration_s"] or 0.0
                bar.set_postfix_str(f"{audio_s / 3600:.2f} h audio", refresh=False)
                bar.update(1)
            yield s


def summarize(statuses: Iterable[dict], units_done: Optional[set] = None) -> tuple[int, int, int]:
    """``(recordings, errors, segments)`` over the status rows, consumed as a stream (a run may
    finish millions); the sources of :data:`UNIT_DONE` rows go into ``units_done``."""
    ok = failed = segments = 0
    for s in statuses:
        if s["status"] == UNIT_DONE:
            if units_done is not None:
                units_done.add(s["source"])
        elif s["status"] == "ok":
            ok, segments = ok + 1, segments + s["n_segments"]
        else:
            failed += 1
    return ok, failed, segments
