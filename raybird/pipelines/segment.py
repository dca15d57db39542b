"""Bulk segmentation: recordings -> masks, segments, summary and errors tables (+ tables for
other tools and denoised audio on request), with Ray Data.

**Data flow** (one Ray Data pipeline)::

    from_items(a row of units per task), or past --stream-after units of one input, a read
    of the units as the driver lists them (raybird.pipelines.listing, unit_stream)
      -> map_batches(SegmentWorker, compute=ActorPoolStrategy(size=N))
            the task's units (files, or an archive's recordings in turn), inside one actor:
            streaming decode -> iter_tiles -> the model on batches of tiles (consecutive
            short recordings share them) -> the streaming Segmenter -> the recording's rows,
            buffered as soon as its last tile is stitched;
            at the end of the task they are committed as part files, and the task's status
            rows leave the actor as one row

*Why one actor does the whole recording.* The model is loaded once per actor; the tiles of a
recording are produced, inferred and stitched in order by the same process, so nothing is
shuffled and nothing waits for other recordings: the actor holds one tile, the open regions
and the bit-packed mask (a 2-hour recording: 38 MB packed, plus 303 MB of uint8 probabilities
only with ``--probabilities``). Splitting the work into decode tasks, model actors and a
``groupby(recording_id)`` would ship every tile's probabilities through a hash shuffle, a barrier
that holds a whole wave's probabilities in the object store (measured: ~8 s per run on 2 cores,
42-62x real time against the single-process loop's 108x). Parallelism is over recordings (an
archive is one unit): N actors keep N recordings in flight, so one long file uses one actor,
which then takes every spare CPU: torch threads, and decoding in a thread of its own
(:func:`raybird.inference.decode.prefetched`) beside inference, as on a GPU (one 2-hour
recording on 2 CPUs: 104x real time, against 80x with one thread).

*Why the actors write with pyarrow, not Dataset.write_parquet.* write_parquet writes one
file per block, blocks mix recordings in an order that changes between runs, and nothing tells
a re-run which recordings a file holds, so a run could neither resume nor be exactly once. Each
actor buffers the rows of the recordings it finishes and writes them as part files, committed
by a journal entry (:mod:`raybird.io.outputs`) when they fill and at the end of each task: a
task is up to ``--file-recordings`` inputs, about four per actor
(:func:`raybird.pipelines.listing.units_per_task`), so a
million short recordings make a thousand files per table, not a million. A re-run reads the
journal and skips what it commits.

Output tables (:mod:`raybird.io.tables`; part files ``<table>/part-<writer>-<n>.parquet``):
``segments/`` (the DESIGN.md contract), ``masks/`` (decode with ``read_mask``), ``summary/``,
``errors/``, read back with :func:`raybird.io.outputs.read_outputs`; optionally tables for
other tools (``raven/<name>.Table.1.selections.txt``, ``audacity/``, ``csv/``:
:mod:`raybird.io.selections`) and ``denoised/<name>.wav``, one per recording, ``<name>`` the
recording's path under its input's parent folder.
``run.json`` records the settings and every run (:mod:`raybird.io.runrecord`): a re-run with other
settings is refused unless it overwrites.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import pyarrow as pa

from raybird.extras import require
from raybird.flags import flag
from raybird.inference.predictor import CPU_BATCH, GPU_BATCH, Predictor
from raybird.inference.recording import SegmentOptions, segment_units
from raybird.io import outputs, runrecord, selections, storage
from raybird.io.outputs import read_outputs
from raybird.io.tables import write_file
from raybird.models.checkpoint import Checkpoint, read_checkpoint
from raybird.pipelines.listing import STREAM_AFTER, Listing, task_row, units_per_task
from raybird.pipelines.segment_status import (
    UNIT_DONE,
    SegmentSummary,
    progress,
    recording_count,
    status_rows,
    summarize,
    task_status,
)
from raybird.training.engine import PRECISIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileLimits:
    """When a writer rolls its part files (:class:`raybird.io.outputs.PartWriter`)."""

    mb: float = flag(256, "roll the output tables' part files at this many MB of rows", name="--file-mb")
    recordings: int = flag(
        1000, "at most this many recordings per part file and per Ray task", name="--file-recordings"
    )


PASSES = 3  # Ray passes over what is still missing (see run)


class SegmentWorker:
    """Ray Data actor: loads the checkpoint once, then segments each task's units (see the
    module docstring) and commits their rows as part files (:class:`raybird.io.outputs.PartWriter`).
    ``done``: the complete recordings to skip inside archives; None: OUT's journal holds some,
    read when an archive first comes (a streamed pass: a million ids need not travel to every
    actor before it is known that any archive comes). Returns, once the task's rows are
    committed, its status rows as one
    (:func:`~raybird.pipelines.segment_status.task_status`): one per recording and a
    :data:`UNIT_DONE` one per unit (what the counts and later passes go by)."""

    def __init__(
        self,
        ckpt: Checkpoint,
        out: str,
        options: dict,
        done: Optional[frozenset],
        files: FileLimits,
        device: str = "cpu",
        threads: float = 1,
        batch_size: int = CPU_BATCH,
        precision: str = "auto",
    ):
        self.predictor = Predictor(ckpt.data, device, threads, batch_size, precision)
        self.ckpt, self.out, self.opts, self.done = ckpt, out, SegmentOptions(**options), done
        self.parts = outputs.PartWriter(out, files.mb, files.recordings)
        self.prefetch = 4 if device == "cuda" or threads >= 2 else 0  # decoding beside the model

    def __call__(self, batch: dict) -> pa.Table:
        uris, kinds, rels = ([str(v) for row in batch[c] for v in row] for c in ("uri", "kind", "rel"))
        units = [storage.Unit(u, k, rel=r) for u, k, r in zip(uris, kinds, rels)]
        if self.done is None and "archive" in kinds:  # read once, when an archive first needs it
            self.done = frozenset(outputs.completed_ids(self.out))
        args = (self.predictor, self.out, self.ckpt, self.opts, self.parts, self.done or frozenset(), self.prefetch)
        statuses = list(segment_units(units, *args))
        self.parts.commit()  # a task's rows are committed before its units are reported done
        closed = [dict(recording_id="", source=uri, status=UNIT_DONE, n_segments=0, duration_s=0.0) for uri in uris]
        return task_status(statuses + closed)


# ---- running -------------------------------------------------------------------------------------
OUTPUT_TABLES = (*outputs.PART_TABLES, outputs.JOURNAL, *selections.FORMATS, "denoised")


def start_record(out: str, ckpt: Checkpoint, options: SegmentOptions, overwrite: bool, **run) -> dict:
    """:func:`raybird.io.runrecord.start` for a segment run: its results depend on the model, its
    spectrogram and every option; ``run`` (arithmetic, devices) is recorded, not compared."""
    settings = dict(
        model_id=ckpt.model_id,
        spec_config=json.loads(ckpt.cfg.to_json()),
        options=json.loads(json.dumps(dataclasses.asdict(options))),
    )  # as read back (tuples: lists)
    return runrecord.start(out, "segment", settings, overwrite, OUTPUT_TABLES, run)


def write_combined(out: str, formats: Iterable[str]) -> list[str]:
    """The run's combined tables of ``formats`` (:func:`raybird.io.selections.write_combined`):
    every recording in OUT's segments table, this run's and earlier ones'. Returns their paths."""
    formats = selections.combinable(formats)
    if not formats:
        return []
    segments, summary = read_outputs(out, "segments"), read_outputs(out, "summary")
    durations = {r["source"]: r["duration_s"] for r in summary.select(["source", "duration_s"]).to_pylist()}
    for fmt in formats:
        write_file(out, selections.COMBINED[fmt], lambda p: selections.write_combined(fmt, p, segments, durations))
    return [storage.join(out, selections.COMBINED[fmt]) for fmt in formats]


def run(
    inputs: list[str],
    out: str,
    model: str | Checkpoint | None = None,
    options: SegmentOptions = SegmentOptions(),
    gpu: bool = False,
    batch_size: Optional[int] = None,
    actors: Optional[int] = None,
    actor_cpus: float = 1,
    precision: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
    combine: bool = False,
    files: FileLimits = FileLimits(),
    stream_after: int = STREAM_AFTER,
) -> SegmentSummary:
    """Segment every recording under ``inputs`` into ``out`` (local folder or ``s3://``) with Ray
    Data; recordings already complete in ``out`` are skipped, if ``out`` was written with the same
    settings (else ``ValueError``; ``overwrite`` deletes its output first: :mod:`raybird.io.runrecord`).
    ``combine``: then write the run's combined tables of ``options.formats`` (:func:`write_combined`).
    ``actors``: model actors (default: one per GPU with ``gpu``, else one per ``actor_cpus`` CPUs
    of the cluster; with fewer inputs than that, one per input, each with the spare CPUs as torch
    threads). ``precision``: see :func:`raybird.training.engine.precision_settings`.
    ``files``: when the tables' part files roll (:class:`FileLimits`). ``stream_after``: with
    more units than this in one input, the first pass starts while the rest is listed
    (:mod:`raybird.pipelines.listing`).

    *Lost actors.* Ray Data retries an actor's tasks on that same actor once it restarts, which
    never happens when its node is gone and the surviving nodes' CPUs are all held by the rest
    of the pool (ray-project/ray#26991: the job stalls). So a lost actor's task fails at once
    (``max_task_retries=0``), Ray Data goes on without that unit, and a further pass, sized to
    the cluster that is left, takes the units that did not close (no :data:`UNIT_DONE` row),
    skipping their recordings already written; up to :data:`PASSES` passes."""
    ckpt = model if isinstance(model, Checkpoint) else read_checkpoint(model)
    record = start_record(
        out, ckpt, options, overwrite, precision=precision, gpu=gpu, actors=actors, actor_cpus=actor_cpus, ray=True
    )
    listing = Listing(inputs, out, stream_after)
    pending: list[storage.Unit] | Listing = listing if listing.streams else listing.pending
    ok = failed = segments = 0
    for n_pass in range(1, PASSES + 1):
        if not pending:
            break
        if n_pass > 1:
            log.warning(
                "segment: %d units unfinished (actors lost); pass %d on the cluster that is left", len(pending), n_pass
            )
        units_done: set = set()
        streams = isinstance(pending, Listing)
        args = (out, ckpt, options, gpu, batch_size, actors, actor_cpus, precision, files, n_pass > 1)
        with _segment_pass(pending, listing.done_inside(pending), *args) as statuses:
            total = None if streams else recording_count(pending)
            counts = summarize(progress(statuses, total, show_progress), units_done)
        ok, failed, segments = (a + b for a, b in zip((ok, failed, segments), counts))
        pending = [u for u in (listing.pending if streams else pending) if u.uri not in units_done]
        pending = listing.replan(pending) if pending else pending
    if pending:
        raise RuntimeError(
            f"{len(pending)} inputs unfinished after {PASSES} passes (their tasks failed or "
            f"their actors were lost: see Ray Data's log), e.g. {pending[0].uri}; "
            f"re-run the same command to resume"
        )
    summary = SegmentSummary(listing.n_listed, ok, failed, segments, listing.skipped, out)
    if combine:
        write_combined(out, options.formats)
    runrecord.finish(out, record, dataclasses.asdict(summary))
    return summary


def spare_cpus(actor_cpus: float, share: int) -> float:
    """CPUs for an actor entitled to ``share`` slots of ``actor_cpus``: at most what the largest
    alive node holds, since an actor lives on one node (asking for more would never be placed)."""
    import ray

    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=actor_cpus)
    return max(actor_cpus, min(actor_cpus * share, actor_cpus * (largest // actor_cpus)))


@contextlib.contextmanager
def _segment_pass(
    pending: list[storage.Unit] | Listing,
    done: Optional[frozenset],
    out: str,
    ckpt: Checkpoint,
    options: SegmentOptions,
    gpu: bool,
    batch_size: Optional[int],
    actors: Optional[int],
    actor_cpus: float,
    precision: str,
    files: FileLimits,
    after_loss: bool = False,
) -> Iterator[Iterator[dict]]:
    """One Ray Data pass over ``pending``, a list, or a listing that streams: its status rows
    (none for units whose actor was lost). ``after_loss``: a later pass, whose pool is also
    capped at what the cluster now holds."""
    import ray

    resources = ray.cluster_resources()
    capacity = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1) // actor_cpus)
    chosen = actors is not None
    if actors is None or after_loss:
        actors = capacity if actors is None else min(actors, capacity)
    actors = max(1, actors)
    stream = None
    try:
        if isinstance(pending, Listing):  # tasks sized by what is listed when each is cut
            from raybird.pipelines.unit_stream import UnitStream

            stream = UnitStream(pending, lambda n: units_per_task(n, actors, files.recordings))
            units = stream.dataset
        else:
            actors = min(actors, len(pending))
            if not gpu and not chosen and actors < capacity:  # fewer inputs than slots: one long recording
                actor_cpus = spare_cpus(actor_cpus, capacity // actors)  # uses the cores of its node
            per_task = units_per_task(len(pending), actors, files.recordings)
            tasks = [task_row(pending[i : i + per_task]) for i in range(0, len(pending), per_task)]
            units = ray.data.from_items(tasks, override_num_blocks=len(tasks))
        units.context.op_resource_reservation_enabled = False  # see raybird.pipelines.ingest.run
        units.context.max_errored_blocks = -1  # a lost actor's unit: left for the next pass (see run)
        device, threads, batch = ("cuda", 1, GPU_BATCH) if gpu else ("cpu", actor_cpus, CPU_BATCH)
        opts = dataclasses.asdict(options)
        worker_args = (ckpt, out, opts, done, files, device, threads, batch_size or batch, precision)
        with warnings.catch_warnings():
            # Ray 2.60 names no map_batches parameter for max_task_retries; its ray_remote_args
            # route works and is deprecated (removal announced for Ray 2.64)
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            statuses = units.map_batches(
                SegmentWorker,
                fn_constructor_args=worker_args,
                batch_size=None,  # a task: one block, a row of units (listing.task_row)
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                max_task_retries=0,
                **(dict(num_gpus=1, num_cpus=1) if gpu else dict(num_cpus=actor_cpus)),
            )
        yield status_rows(statuses.iter_rows())
    except BaseException:
        if stream is not None:
            stream.finish(check=False)  # the pass's own error is the one to see
        raise
    if stream is not None:
        stream.finish()


def run_local(
    inputs: list[str],
    out: str,
    model: str | Checkpoint | None = None,
    options: SegmentOptions = SegmentOptions(),
    batch_size: Optional[int] = None,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    precision: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
    combine: bool = False,
    files: FileLimits = FileLimits(),
    stream_after: int = STREAM_AFTER,
) -> SegmentSummary:
    """The same work in this process, one recording at a time (no Ray), its rows committed as
    part files as they fill and at the end; a large input is segmented as it is listed."""
    ckpt = model if isinstance(model, Checkpoint) else read_checkpoint(model)
    record = start_record(out, ckpt, options, overwrite, precision=precision, device=device or "cpu", ray=False)
    listing = Listing(inputs, out, stream_after)
    batch_size = batch_size or (GPU_BATCH if device == "cuda" else CPU_BATCH)
    predictor = Predictor(ckpt.data, device or "cpu", threads or os.cpu_count() or 1, batch_size, precision)
    parts = outputs.PartWriter(out, files.mb, files.recordings)
    done = listing.done if listing.streams else listing.done_inside(listing.pending)
    prefetch = 4 if device == "cuda" else 0
    statuses = segment_units(listing.units(), predictor, out, ckpt, options, parts, done, prefetch)
    total = None if listing.streams else recording_count(listing.pending)
    counts = summarize(progress(statuses, total, show_progress))
    summary = SegmentSummary(listing.n_listed, *counts, listing.skipped, out)
    parts.commit()
    if combine:
        write_combined(out, options.formats)
    runrecord.finish(out, record, dataclasses.asdict(summary))
    return summary


# ---- command line --------------------------------------------------------------------------------
@dataclass
class SegmentRun:
    """``raybird segment``: what to segment, where to, with which model and how; the settings
    that change results are :class:`~raybird.inference.recording.SegmentOptions`."""

    inputs: list[str] = flag(help=storage.INPUTS_HELP, positional=True, nargs="+")
    out: str = flag(help="output folder or s3:// prefix (re-running resumes)")
    model: str = flag("default", "checkpoint file or folder, s3:// path, or 'default': the shipped model")
    combine: bool = flag(
        False,
        "also write one table for the whole run per --format that has one: "
        "raven/combined.selections.txt, csv/combined.csv",
    )
    gpu: bool = flag(False, "one GPU per model actor")
    batch_size: Optional[int] = flag(
        None, f"tiles per model call (default {GPU_BATCH} with --gpu, else {CPU_BATCH})", parse=int
    )
    precision: str = flag(
        "auto", "model arithmetic; auto: bf16 on GPUs and on CPUs with native bf16, else fp32", choices=PRECISIONS
    )
    actors: Optional[int] = flag(
        None,
        "model actors, each segmenting whole recordings (default: the cluster's GPUs with --gpu, else "
        "its CPUs / --actor-cpus; with fewer inputs, one actor per input, with the spare CPUs)",
        parse=int,
    )
    actor_cpus: Optional[float] = flag(
        None,
        "CPUs per CPU model actor, its torch threads rounded down (at least 1; default 1); with "
        "--local: the threads of this process, default all",
        parse=float,
    )
    stream_after: int = flag(
        STREAM_AFTER,
        "inputs listed before segmenting starts; past this many in one input (a folder, prefix or "
        "manifest), the rest is listed while the first are segmented",
        parse=int,
    )
    local: bool = flag(False, "run in this process without Ray")
    overwrite: bool = flag(
        False,
        "delete --out's tables and run record first and segment everything again (a re-run "
        "into an --out written with other settings is refused without it)",
    )
    fail_on_error: bool = flag(False, "exit 1 if any recording failed")
    no_progress: bool = flag(False, "no progress bar (recordings and hours done, rate, ETA)")


def cmd_segment(r: SegmentRun, options: SegmentOptions, files: FileLimits) -> int:
    if r.combine and not selections.combinable(options.formats):
        print("raybird segment: --combine needs --format raven or csv (an Audacity track belongs to one file)")
        return 2
    try:
        if options.denoise:
            require("librosa")  # before any work: a missing extra fails fast
        ckpt = read_checkpoint(r.model)  # before starting Ray: a missing model fails fast
        device = "cuda" if r.gpu else None
        show = not r.no_progress
        if r.local:
            summary = run_local(
                r.inputs,
                r.out,
                ckpt,
                options,
                r.batch_size,
                device,
                r.actor_cpus,
                r.precision,
                r.overwrite,
                show,
                r.combine,
                files,
                r.stream_after,
            )
        else:
            from raybird.pipelines.runtime import init_ray

            init_ray()
            summary = run(
                r.inputs,
                r.out,
                ckpt,
                options,
                r.gpu,
                r.batch_size,
                r.actors,
                r.actor_cpus or 1,
                r.precision,
                r.overwrite,
                show,
                r.combine,
                files,
                r.stream_after,
            )
    except FileNotFoundError as e:
        print(f"raybird segment: {e}")
        return 2
    print(summary)
    return 1 if r.fail_on_error and summary.errors else 0
