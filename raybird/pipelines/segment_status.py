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
FINISHED = "finished"  # a recording done in an actor, its rows not committed yet: for the progress bar only


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


def progress(statuses: Iterable[dict], pending: list, show: bool = True, counted=("ok", "error")) -> Iterator[dict]:
    """The status rows, passed on while a tqdm bar counts recordings and hours of audio done,
    with rate and ETA (the total is known when no archive is pending: one recording per file).
    ``counted``: the statuses that move the bar (the Ray job's :data:`FINISHED` rows)."""
    from tqdm import tqdm

    total = None if any(u.kind == "archive" for u in pending) else len(pending)
    audio_s = 0.0
    with tqdm(total=total, unit="rec", desc="segment", disable=not show, mininterval=1.0, file=sys.stderr) as bar:
        for s in statuses:
            if s["status"] in counted:
                audio_s += s["duration_s"] or 0.0
                bar.set_postfix_str(f"{audio_s / 3600:.2f} h audio", refresh=False)
                bar.update(1)
            yield s


def summarize(
    statuses: Iterable[dict], n_inputs: int, skipped: int, out: str, units_done: Optional[set] = None
) -> SegmentSummary:
    """Counts over the status rows, consumed as a stream (a run may finish millions); the
    sources of :data:`UNIT_DONE` rows go into ``units_done``."""
    ok = failed = segments = 0
    for s in statuses:
        if s["status"] == FINISHED:
            continue
        if s["status"] == UNIT_DONE:
            if units_done is not None:
                units_done.add(s["source"])
        elif s["status"] == "ok":
            ok, segments = ok + 1, segments + s["n_segments"]
        else:
            failed += 1
    return SegmentSummary(n_inputs, ok, failed, segments, skipped, out)
