"""Ingest: recordings -> Parquet shards of fixed-size spectrogram tiles (+ masks where labels
exist) and an errors table. Every discovered input ends in exactly one place: tile rows of
its recording, or one row of the errors table with the reason.

The per-recording work (:func:`recording_rows`) is plain Python; :func:`run` distributes it
with Ray Data and :func:`run_local` is the same work in one process (tests, benchmark
baseline).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raybird.dsp.spectrogram import SpecConfig, blank_above_nyquist, get_config, iter_tiles, to_uint8
from raybird.flags import flag
from raybird.io import audio, label_files, label_masks, runrecord, storage
from raybird.io.outputs import read_outputs
from raybird.io.staging import publish, staging_folder, write_single
from raybird.io.storage import INPUTS_HELP
from raybird.io.tables import ERROR_SCHEMA, error_table

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source", pa.string()),
        ("channel", pa.int16()),
        ("tile_index", pa.int32()),
        ("first_frame", pa.int64()),
        ("offset_s", pa.float64()),  # time of the tile's first frame centre
        ("valid_frames", pa.int32()),  # frames before the end of the recording
        ("n_rows", pa.int32()),
        ("n_frames", pa.int32()),
        ("spec", pa.binary()),  # uint8 (n_rows, n_frames) row-major, value/255 in [0, 1]
        ("mask", pa.binary()),  # uint8 (n_rows, n_frames) 1 = bird; null when unlabelled
        ("split", pa.string()),  # train / val / test, by recording
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int32()),  # the file's own rate (spectrograms use spec_config's)
        ("spec_config", pa.string()),  # SpecConfig JSON
        # where labels carry text (syllable types, call types, species): the class of each mask
        # pixel, uint8 (n_rows, n_frames), 0 outside the mask, k = class_names[k - 1]; null otherwise
        ("classes", pa.binary()),
        ("class_names", pa.list_(pa.string())),  # the recording's classes in order of first label
    ]
)
SPLITS = (("train", 70), ("val", 20), ("test", 10))


def split_of(source: str) -> str:
    """70/20/10 by a hash of the recording's file name and its folder's name (for an archive
    member, of the member's), not of the whole URI: the same recordings get the same splits
    wherever the archive lives (a local copy and its S3 upload, another mount point), and a
    model's val and test recordings stay out of the training split of a re-ingest elsewhere.
    Stable across runs and machines."""
    key = "/".join(source.replace(storage.MEMBER_SEP, "/").replace("\\", "/").split("/")[-2:])
    bucket = int(hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) % 100
    for name, share in SPLITS:
        if bucket < share:
            return name
        bucket -= share
    return SPLITS[-1][0]


TIME_LABELS = ("columns", "energy")  # how time-only labels become masks (see recording_rows)


def recording_rows(
    source: str, src, cfg: SpecConfig, channels: str = "mix", label=None, time_labels: str = "energy"
) -> pa.Table:
    """All tile rows of one recording. ``src`` is a path, bytes or a file object; ``label`` is
    what :func:`raybird.io.label_files.load_labels` returned (boxes, a grid mask, or None).
    ``time_labels``: time-only labels become (``energy``, the default) the pixels of each
    labelled column that stand out from its noise floor (:func:`raybird.io.label_masks.refine_by_energy`),
    the shape of a call as the shipped model draws it, or full-band ``columns``. Measured on the
    Bengalese finch, 52 s of labels, 30 epochs, tested on 34 s of the same bird (segment F1 within
    20 ms / onset F1 within 10 ms / frame F1): from the shipped model, columns 0.807 / 0.680 /
    0.894, energy 0.961 / 0.926 / 0.963; from scratch, columns 0.854 / 0.686 / 0.897, energy
    0.931 / 0.911 / 0.964. Column masks taught the shipped model whole columns and cost it its
    onsets. Box labels are unchanged either way.
    Raises :class:`raybird.io.audio.AudioError` for unusable audio."""
    rec_id, split = storage.recording_id(source), split_of(source)
    names = label_masks.class_names(label) if label is not None else []
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
        for ch, spec in enumerate(blank_above_nyquist(tile.spec, cfg, info.sample_rate)):
            mask = classes = None
            if label is not None:
                on = ch if channels == "split" else None
                m = label_masks.label_mask(label, cfg, tile.first_frame, cfg.tile_frames, channel=on)
                m[:, tile.valid_frames :] = 0
                if time_labels == "energy":
                    m = label_masks.refine_by_energy(m, spec)
                mask = m.tobytes()
                if names:
                    c = label_masks.label_classes(label, names, cfg, tile.first_frame, cfg.tile_frames, on)
                    classes = np.where(m > 0, c, 0).astype(np.uint8).tobytes()
            rows.append(
                {
                    "recording_id": rec_id,
                    "source": source,
                    "channel": ch,
                    "tile_index": tile.index,
                    "first_frame": tile.first_frame,
                    "offset_s": tile.offset_s(cfg),
                    "valid_frames": tile.valid_frames,
                    "n_rows": spec.shape[0],
                    "n_frames": spec.shape[1],
                    "spec": to_uint8(spec).tobytes(),
                    "mask": mask,
                    "split": split,
                    "duration_s": None,
                    "sample_rate": info.sample_rate,
                    "spec_config": cfg_json,
                    "classes": classes,
                    "class_names": names or None,
                }
            )
    if not rows:
        raise audio.AudioError("no audio samples")
    for r in rows:  # decoded length: header durations of MP3s are estimates
        r["duration_s"] = n_samples / cfg.sample_rate
    return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


def _one(
    source: str, src, cfg, channels, side_files, read, time_labels: str = "energy", label_column: Optional[str] = None
) -> tuple[pa.Table | None, pa.Table | None]:
    """(tiles, None) or (None, error row) for one recording."""
    try:
        label = label_files.load_labels(source, side_files, read, label_column=label_column)
    except (ValueError, KeyError, OSError) as e:
        return None, error_table(source, "labels", f"{type(e).__name__}: {e}")
    try:
        return recording_rows(source, src, cfg, channels, label, time_labels), None
    except Exception as e:  # its error row; the run goes on
        return None, error_table(source, *audio.failure(e))


def process_unit(
    unit: storage.Unit,
    cfg: SpecConfig,
    channels: str = "mix",
    time_labels: str = "energy",
    label_column: Optional[str] = None,
) -> Iterator[tuple]:
    """Yield ``(tiles, errors)`` pairs (one side None) for every recording of a unit."""
    if unit.kind == "file":
        side_files, read = unit.side_files, storage.read_bytes
    else:  # labels first (small side members), then recordings one member at a time
        side = {}
        try:
            for name, data in storage.iter_archive(unit.uri):
                if storage.is_side_file(name) and isinstance(data, bytes):
                    side[name] = data
        except Exception:  # damaged: the labels before the damage serve, iter_sources reports it
            pass
        side_files, read = list(side), side.__getitem__
    for source, src, problem in storage.iter_sources(unit):
        if problem:
            yield None, error_table(source, *problem)
        else:
            yield _one(source, src, cfg, channels, side_files, read, time_labels, label_column)


def _ingest_batch(
    batch: dict,
    cfg_json: str,
    channels: str,
    time_labels: str,
    label_column: Optional[str],
    errors_fs,
    errors_dir: str,
) -> Iterator[pa.Table]:
    """Ray Data UDF: a batch of units -> pyarrow tables of tiles. Error rows are few, so they
    do not travel with the tiles: each is written by the task itself to ``errors_dir`` as
    ``<recording_id>.parquet`` (a retried task overwrites its own file), which keeps the
    job one streaming pass, decode -> write, with nothing materialized. ``errors_fs``: a
    pyarrow filesystem, ``errors_dir`` a path on it."""
    cfg = SpecConfig.from_json(cfg_json)
    for uri, kind, side in zip(batch["uri"], batch["kind"], batch["side_files"]):
        unit = storage.Unit(str(uri), str(kind), [str(s) for s in side])
        for tiles, err in process_unit(unit, cfg, channels, time_labels, label_column):
            if tiles is not None:
                yield tiles
            else:
                errors_fs.create_dir(errors_dir, recursive=True)
                pq.write_table(
                    err, storage.join(errors_dir, f"{err['recording_id'][0].as_py()}.parquet"), filesystem=errors_fs
                )


@dataclasses.dataclass
class IngestSummary:
    recordings: int
    tiles: int
    errors: int
    inputs: int
    out: str
    classes: dict = dataclasses.field(default_factory=dict)  # class name -> recordings labelled with it

    def __str__(self) -> str:
        text = (
            f"ingest: {self.inputs} inputs -> {self.recordings} recordings "
            f"({self.tiles} tiles) + {self.errors} errors in {self.out}"
        )
        if self.classes:
            text += f"; {len(self.classes)} label classes: " + ", ".join(f"{k} ({n})" for k, n in self.classes.items())
        return text


MAX_UNITS_PER_TASK = 64  # ~64 MB of tiles for 10-s recordings: shard files of that size


def units_per_task(n_units: int, slots: float) -> int:
    """Recordings (or archives) per Ray task: enough tasks to keep every slot busy to the end
    (about four per slot), at most :data:`MAX_UNITS_PER_TASK`. A task's output is one shard file
    per output block (Ray Data cuts blocks at ``target_max_block_size``, 128 MB), so short
    recordings make files of tens of MB, not one per recording."""
    return max(1, min(MAX_UNITS_PER_TASK, int(n_units // max(4 * slots, 1))))


def _check_time_labels(time_labels: str) -> None:
    if time_labels not in TIME_LABELS:
        raise ValueError(f"time_labels must be one of {TIME_LABELS}, got {time_labels!r}")


def run(
    inputs: list[str],
    out: str,
    preset: str | SpecConfig | None = None,
    channels: str = "mix",
    num_cpus_per_task: float = 1.0,
    time_labels: str = "energy",
    label_column: Optional[str] = None,
) -> IngestSummary:
    """Ray Data ingest. Writes ``out/shards/*.parquet`` and ``out/errors/*.parquet``
    (overwriting earlier output), returns counts. ``time_labels``: see :func:`recording_rows`;
    ``label_column``: the Raven column holding the label text (default ``Annotation``, else
    ``Species``)."""
    import ray
    from ray.data import SaveMode

    _check_time_labels(time_labels)
    cfg = get_config(preset)
    units = storage.discover(inputs)
    if not units:
        raise ValueError(f"no input files found in {inputs}")
    record = begin_record(cfg, channels, time_labels, label_column, ray=True)
    items = [dataclasses.asdict(u) for u in units]
    fs, root = storage.arrow_filesystem(out)
    staging = staging_folder(fs, root)
    parts = storage.join(staging, "error-rows")
    fs.create_dir(storage.join(staging, "shards"), recursive=True)
    per_task = units_per_task(len(items), ray.cluster_resources().get("CPU", 1) / num_cpus_per_task)
    units_ds = ray.data.from_items(items, override_num_blocks=-(-len(items) // per_task))
    # The job is one fused operator (decode -> write). Ray Data's per-operator reservation
    # holds such a lone operator to half the CPUs until object-store figures arrive, which on
    # 2 CPUs ran decode tasks one at a time (1.04x the loop); there is nothing to reserve for.
    units_ds.context.op_resource_reservation_enabled = False
    tiles = units_ds.map_batches(
        _ingest_batch,
        fn_kwargs={
            "cfg_json": cfg.to_json(),
            "channels": channels,
            "time_labels": time_labels,
            "label_column": label_column,
            "errors_fs": fs,
            "errors_dir": parts,
        },
        batch_size=None,
        batch_format="numpy",
        num_cpus=num_cpus_per_task,
    )  # a batch: one block of units
    # no min_rows_per_file: it bundles the fused operator's *inputs* (a run of 32 recordings
    # became one task); a file per task's output block (a few recordings, ~12 MB) instead
    tiles.write_parquet(storage.join(staging, "shards"), filesystem=fs, mode=SaveMode.OVERWRITE)
    # the per-input error files become one table file
    import pyarrow.fs as pafs

    files = [i.path for i in fs.get_file_info(pafs.FileSelector(parts, allow_not_found=True))]
    errors = (
        pa.concat_tables([pq.read_table(f, filesystem=fs) for f in sorted(files)])
        if files
        else ERROR_SCHEMA.empty_table()
    )
    write_single(fs, storage.join(staging, "errors"), errors.cast(ERROR_SCHEMA))
    if files:
        fs.delete_dir(parts)
    publish(fs, root, staging, out, TABLES)
    return _finished(out, record, len(units))


def begin_record(cfg: SpecConfig, channels: str, time_labels: str, label_column: Optional[str], **run) -> dict:
    """Ingest replaces its output every run, and its record (:mod:`raybird.io.runrecord`) with it:
    written once the tables are in place, so a killed run leaves the previous tables and their
    record as they were."""
    settings = dict(
        spec_config=json.loads(cfg.to_json()), channels=channels, time_labels=time_labels, label_column=label_column
    )
    return runrecord.begin("ingest", settings, run)


def _finished(out: str, record: dict, n_inputs: int) -> IngestSummary:
    summary = _summary(
        read_outputs(out, "shards", columns=["recording_id", "class_names"]), read_outputs(out, "errors"), n_inputs, out
    )
    runrecord.finish(out, record, dataclasses.asdict(summary))
    return summary


def run_local(
    inputs: list[str],
    out: str,
    preset: str | SpecConfig | None = None,
    channels: str = "mix",
    time_labels: str = "energy",
    label_column: Optional[str] = None,
) -> IngestSummary:
    """The same ingest in one process, no Ray: the benchmark's baseline and the unit tests' path."""
    _check_time_labels(time_labels)
    cfg = get_config(preset)
    units = storage.discover(inputs)
    record = begin_record(cfg, channels, time_labels, label_column, ray=False)
    tiles, errors = [], []
    for unit in units:
        for t, e in process_unit(unit, cfg, channels, time_labels, label_column):
            (tiles if t is not None else errors).append(t if t is not None else e)
    fs, root = storage.arrow_filesystem(out)
    staging = staging_folder(fs, root)
    for name, tables, schema in (("shards", tiles, SHARD_SCHEMA), ("errors", errors, ERROR_SCHEMA)):
        write_single(fs, storage.join(staging, name), pa.concat_tables(tables) if tables else schema.empty_table())
    publish(fs, root, staging, out, TABLES)
    return _finished(out, record, len(units))


TABLES = ("shards", "errors")  # what a run writes, staged and published together (raybird.io.staging)


def _summary(tiles: pa.Table, errors: pa.Table, n_inputs: int, out: str) -> IngestSummary:
    """Counts, and the label classes found with how many recordings carry each (recorded in
    run.json with the shards), most common first."""
    names = dict(zip(tiles.column("recording_id").to_pylist(), tiles.column("class_names").to_pylist()))
    counts = collections.Counter(n for ns in names.values() for n in ns or ())
    return IngestSummary(len(names), len(tiles), len(errors), n_inputs, out, dict(counts.most_common()))


def decode_classes(row: dict) -> tuple[Optional[np.ndarray], list[str]]:
    """(class map uint8 (rows, frames) or None, class names) of one shard row: pixel value k is
    ``names[k - 1]``, 0 the background."""
    if row.get("classes") is None:
        return None, []
    return np.frombuffer(row["classes"], np.uint8).reshape(row["n_rows"], row["n_frames"]), list(row["class_names"])


def decode_tile(row: dict) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(spec float32 (rows, frames) in [0,1], mask uint8 or None) of one shard row."""
    shape = (row["n_rows"], row["n_frames"])
    spec = np.frombuffer(row["spec"], np.uint8).reshape(shape).astype(np.float32) / 255.0
    mask = None if row.get("mask") is None else np.frombuffer(row["mask"], np.uint8).reshape(shape)
    return spec, mask


@dataclasses.dataclass
class IngestConfig:
    """``raybird ingest``."""

    inputs: list[str] = flag(help=INPUTS_HELP, positional=True, nargs="+")
    out: str = flag(help="output folder or s3:// prefix")
    preset: str = flag("default", "spectrogram preset name or SpecConfig JSON")
    channels: str = flag("mix", "mix down to mono, or one row per channel", choices=("mix", "split"))
    time_labels: str = flag(
        "energy",
        "how time-only labels (Audacity, time-only Raven rows) become masks: each labelled "
        "column's pixels standing out from its noise floor (energy: the shape the shipped model "
        "draws; trains and fine-tunes better), or full-band columns",
        choices=TIME_LABELS,
    )
    label_column: Optional[str] = flag(
        None,
        "the Raven selection-table column holding each label's class (default: Annotation, else Species)",
        parse=str,
        metavar="COLUMN",
    )
    local: bool = flag(False, "run in this process without Ray")
    fail_on_error: bool = flag(False, "exit 1 if any input failed")


def cmd_ingest(c: IngestConfig) -> int:
    if c.local:
        summary = run_local(c.inputs, c.out, c.preset, c.channels, c.time_labels, c.label_column)
    else:
        from raybird.pipelines.runtime import init_ray

        init_ray()
        summary = run(c.inputs, c.out, c.preset, c.channels, time_labels=c.time_labels, label_column=c.label_column)
    print(summary)
    return 1 if c.fail_on_error and summary.errors else 0
