"""The Ray job's side of listing that streams (:mod:`raybird.pipelines.listing`): a thread of
the driver goes on listing and puts the pending units, a Ray task's worth at a time, into a
queue (an actor on the driver's node); a Ray Data read on that node yields them as blocks,
so the model actors start on the first block of a million-entry manifest or a large prefix
instead of after its last."""

from __future__ import annotations

import threading
from itertools import islice
from typing import Callable, Optional

import pyarrow as pa
import ray
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata
from ray.util.queue import Full, Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raybird.pipelines.listing import Listing, task_row

TASK = pa.schema([(name, pa.list_(pa.string())) for name in ("uri", "kind", "rel")])
QUEUED_TASKS = 16  # task rows the listing may run ahead of the read


class UnitStream:
    """``listing``'s pending units as a Ray Data dataset (:attr:`dataset`) of task rows, listed
    by a thread of this process; :meth:`finish` joins it. ``task_size(n)``: units per task
    once ``n`` units are listed (tasks grow with the listing, so a million units make no more
    part files than a planned run)."""

    def __init__(self, listing: Listing, task_size: Callable[[int], int]):
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(QUEUED_TASKS, actor_options=dict(num_cpus=0, scheduling_strategy=here))
        try:
            self.dataset = ray.data.read_datasource(QueuedUnits(self.queue), num_cpus=0, override_num_blocks=1)
        except BaseException:
            ray.kill(self.queue.actor)
            raise
        # A read task's output is merged into blocks of this many bytes before it moves on:
        # at one byte, each task row leaves the read as soon as it is listed.
        self.dataset.context.target_max_block_size = 1
        self.error: Optional[BaseException] = None
        self.listed_all = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, args=(listing, task_size), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=1.0)
                return True
            except Full:  # the actors are behind: wait, unless the run has ended
                continue
        return False

    def _feed(self, listing: Listing, task_size: Callable[[int], int]) -> None:
        try:
            units = listing.units()
            while block := list(islice(units, task_size(listing.n_listed))):
                if not self._put(task_row(block)):
                    return
            self.listed_all = True
        except BaseException as e:  # raised on the driver by finish()
            self.error = e
        finally:
            self._put(None)  # the read's end

    def finish(self, check: bool = True) -> None:
        """Stop and join the listing thread. ``check``: raise what stopped the listing, or an
        error if the pass ended before the listing did (its read task failed): else the units
        not yet listed would be taken for none at all."""
        self._stop.set()
        self._thread.join()
        ray.kill(self.queue.actor)
        if check and self.error is not None:
            raise self.error
        if check and not self.listed_all:
            raise RuntimeError("the segment pass ended before its input was listed whole; re-run to resume")


class QueuedUnits(Datasource):
    """One read task on the driver's node, yielding the task rows
    (:func:`~raybird.pipelines.listing.task_row`) it takes from ``queue`` until it takes a None.
    One is enough: each row leaves it as a block of its own, and the actor pool's size is set."""

    def __init__(self, queue: Queue):
        super().__init__()
        self.queue = queue

    @property
    def supports_distributed_reads(self) -> bool:
        return False  # the queue is on the driver's node

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        queue = self.queue

        def read():
            while (row := queue.get()) is not None:
                yield pa.Table.from_pylist([row], schema=TASK)

        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [ReadTask(read, meta, schema=TASK)]
