"""What a segment run has to do: its inputs' units (:func:`raybird.io.storage.listed_units`)
less what OUT's journal commits, and, for a large input, listing that streams into the work.

Up to ``stream_after`` units are listed before anything starts, and such a run is planned
whole. Past that, the rest is listed while the first units are segmented: by the Ray job in a
thread of the driver (:mod:`raybird.pipelines.unit_stream`), by ``--local`` one unit at a time.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator, Optional

from raybird.io import outputs, storage

STREAM_AFTER = 10_000  # units listed before a run starts; past this, the rest streams
TASKS_PER_ACTOR = 4  # tasks per model actor in a pass: balance at the end, few part files


def units_per_task(n_units: int, actors: int, max_units: int) -> int:
    """Units per Ray task for ``n_units`` listed: about :data:`TASKS_PER_ACTOR` tasks per actor,
    so that all finish together, and at most ``max_units`` (``--file-recordings``): each task
    ends in part files of its own."""
    return max(1, min(max_units, -(-n_units // (TASKS_PER_ACTOR * max(1, actors)))))


def task_row(units: Iterable[storage.Unit]) -> dict:
    """One Ray task's units as one row of the Ray job's input (lists of their fields; their
    side files are not needed to segment): a block of one row is a task, whatever Ray Data
    merges or slices by bytes."""
    units = list(units)
    return dict(uri=[u.uri for u in units], kind=[u.kind for u in units], rel=[u.rel for u in units])


class Listing:
    """The units of ``inputs`` still to do in ``out``: the first ``stream_after`` listed at once
    (:attr:`pending`, complete unless :attr:`streams`). Reading OUT's journal first deletes the
    part files it does not commit (left by killed writers): no writer may be at work in OUT."""

    def __init__(self, inputs: list[str], out: str, stream_after: int = STREAM_AFTER):
        if stream_after < 0:
            raise ValueError(f"stream_after must be 0 or more, not {stream_after}")
        self.out = out
        self._read_journal()
        self._units = storage.listed_units(inputs)
        head = list(islice(self._units, stream_after + 1))
        if not head:
            raise ValueError(f"no input files found in {inputs}")
        self.streams = len(head) > stream_after
        self.n_listed = len(head)
        self.pending = [u for u in head if self.is_pending(u)]
        if self.streams and not self.pending:  # a resumed run: start nothing before there is work
            next(self.units(), None)  # lists on to the first pending unit (into pending) or the end
            self.streams = bool(self.pending)

    def _read_journal(self) -> None:
        self.journal = outputs.read_journal(self.out)
        outputs.remove_uncommitted(self.out, self.journal)
        self.done = frozenset(outputs.completed_ids(self.out, self.journal))

    def replan(self, units: list[storage.Unit]) -> list[storage.Unit]:
        """Those of ``units`` still pending by OUT's journal as it is now (after a pass)."""
        self._read_journal()
        return [u for u in units if self.is_pending(u)]

    def is_pending(self, unit: storage.Unit) -> bool:
        """Not committed as a unit, and (a file) not complete as a recording: an archive is
        pending until all of it is done, its complete recordings skipped inside it."""
        uid = storage.recording_id(unit.uri)
        return uid not in self.journal.units and (unit.kind == "archive" or uid not in self.done)

    @property
    def skipped(self) -> int:
        return self.n_listed - len(self.pending)

    def done_inside(self, work: list[storage.Unit] | Listing) -> Optional[frozenset]:
        """The complete recordings the actors must skip in a pass over ``work``: needed only
        inside pending archives (a complete file is not pending at all), so a million ids do not
        travel to every actor. While this listing streams, which archives come is not known yet:
        None if OUT holds complete recordings (an actor reads them when an archive comes)."""
        if work is self:
            return None if self.done else frozenset()
        return self.done if any(u.kind == "archive" for u in work) else frozenset()

    def units(self) -> Iterator[storage.Unit]:
        """Every pending unit: those listed at once, then the rest, counted, filtered and added
        to :attr:`pending` as they are listed."""
        yield from list(self.pending)
        for unit in self._units:
            self.n_listed += 1
            if self.is_pending(unit):
                self.pending.append(unit)
                yield unit
