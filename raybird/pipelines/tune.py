"""Grid search over training parameters: Ray Tune over Ray Train.

Each Tune trial is a *function trainable* that runs one multi-worker ``TorchTrainer``
(:func:`raybird.pipelines.train.fit`); a Train callback forwards every epoch's report to Tune, so the
optional ASHA scheduler can stop poor trials early. The datasets are read once on the driver
and handed to every trial. Layout under ``OUT``::

    OUT/<name>/                the Tune experiment (its state makes the sweep resumable)
    OUT/runs/<trial_id>/       each trial's Train run (checkpoints, metrics.csv, curves.png)
    OUT/results.parquet        one row per trial: parameters, best val metrics, checkpoint
    OUT/best/checkpoint.pt     the best trial's best epoch, for ``raybird segment --model``

Running the same sweep again resumes it: finished trials are kept as they are; unfinished or
failed ones run again, and because a trial's Train run is named after its (stable) trial id,
Train picks it up from its own last checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from raybird.flags import flag
from raybird.io import storage
from raybird.io.runrecord import differences
from raybird.io.tables import write_file
from raybird.pipelines.train import TrainConfig

# TrainConfig fields the sweep sets itself: the data, where runs go, and each run's name.
MANAGED = ("data", "storage_path", "name")
TRIAL_DRIVER_CPU = 0.1  # a trial only drives its Train run; the work happens in the Train workers
RESERVE_CPU = 1.0  # left free for Ray Data and the Tune driver
METRIC = "val_iou"
REPORTED = ("val_iou", "val_dice", "val_pixel_acc")


# ---- the search space --------------------------------------------------------------------------
def coerce(field: str, value):
    """``value`` (a string from the command line or a YAML scalar) as the type of the
    TrainConfig field; YAML reads ``1e-3`` as a string, the float field makes it a number."""
    fields = TrainConfig.__dataclass_fields__
    if field not in fields or field in MANAGED:
        settable = sorted(set(fields) - set(MANAGED))
        raise ValueError(f"unknown or fixed training parameter {field!r}; settable: {', '.join(settable)}")
    kind = type(fields[field].default)
    if kind is bool and isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{field}: not a boolean: {value!r}")
        return value.lower() in ("1", "true", "yes")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{field}: not an integer: {value!r}")
    return kind(value)


def split_space(values: dict) -> tuple[dict, dict]:
    """``{field: value or list}`` -> ``(grid, fixed)``: lists of two or more values become grid
    axes, everything else a fixed value. Values are coerced to the fields' types."""
    grid, fixed = {}, {}
    for field, v in values.items():
        vs = [coerce(field, x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        if not vs:
            raise ValueError(f"{field}: empty list of values")
        if len(set(vs)) != len(vs):
            raise ValueError(f"{field}: repeated values {vs}")
        if len(vs) > 1:
            grid[field] = vs
        else:
            fixed[field] = vs[0]
    return grid, fixed


def read_grid(path: str) -> dict:
    """A YAML mapping of TrainConfig fields to a list of values (a grid axis) or a single value."""
    import yaml

    fs, p = storage.filesystem(path)
    with fs.open(p, "r") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of training parameters to values")
    return values


def max_concurrent_trials(
    per_trial_cpu: float, per_trial_gpu: float = 0.0, resources: Optional[dict] = None, reserve_cpu: float = RESERVE_CPU
) -> int:
    """How many Train runs fit at once without starving Ray Data: the cluster's CPUs (less a
    reserve) and GPUs divided by one trial's demand, at least 1. ``resources`` defaults to
    ``ray.cluster_resources()``."""
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    n = math.floor((resources.get("CPU", 0.0) - reserve_cpu) / per_trial_cpu + 1e-9)
    if per_trial_gpu:
        n = min(n, math.floor(resources.get("GPU", 0.0) / per_trial_gpu + 1e-9))
    return max(1, n)


# ---- one trial ---------------------------------------------------------------------------------
def _report_callback():
    """Ray Train callback forwarding each report to this Tune trial, with ``epochs_done`` (1, 2,
    ...) as ASHA's clock: unlike Tune's ``training_iteration`` it keeps counting when a trial
    resumes its Train run."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            first = {**metrics[0], "epochs_done": metrics[0]["epoch"] + 1}
            super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    return EpochReport()


def _trial(config: dict, data: dict) -> None:
    """Tune function trainable: one Train run named after the trial id (stable across
    ``Tuner.restore``), so a re-run trial resumes from its own checkpoint. ``data``:
    :func:`_training_data`."""
    import ray.tune

    from raybird.pipelines.train import fit

    tc = TrainConfig(**{**config, "name": ray.tune.get_context().get_trial_id()})
    datasets, spec_json, classes = data[_data_key(config)]
    fit(tc, datasets, spec_json, callbacks=[_report_callback()], classes=classes)


def _data_key(config: dict) -> tuple:
    """Trials with the same key train on the same targets: bird/background, or a class model's
    classes (in its ``--init`` model's order)."""
    classes = config.get("classes", False)  # trials of a sweep started before --classes existed lack it
    return (classes, config.get("init", "") if classes else "")


def _training_data(combos: list[dict]) -> dict:
    """``{key: (datasets, spec_json, classes)}`` for each :func:`_data_key` of the sweep's
    trials, each loaded once and shared by its trials; ``--classes`` can be a grid axis."""
    from raybird.pipelines.shards import load_datasets
    from raybird.pipelines.train_setup import class_setup

    out = {}
    for c in combos:
        if (key := _data_key(c)) not in out:
            classes = class_setup(TrainConfig(**c))
            out[key] = (*load_datasets(c["data"], class_names=classes.names if classes else None), classes)
    return out


def _trial_dirname(trial) -> str:
    return trial.trial_id  # short and stable, like the trial's Train run folder


# ---- the sweep ---------------------------------------------------------------------------------
@dataclass
class SweepResult:
    table: pa.Table  # results.parquet, best val IoU first
    grid: dict  # the grid axes, {field: [values]}
    best_checkpoint: Optional[str]  # OUT/best/checkpoint.pt, None if no trial reported
    experiment_path: str  # the Tune experiment, OUT/<name>
    unfinished: int  # trials not finished, stopped or failed (the sweep was interrupted)


def run(
    data: str,
    out: str,
    params: dict,
    name: str = "sweep",
    asha: bool = False,
    grace_period: int = 2,
    max_concurrent: Optional[int] = None,
    verbose: int = 1,
) -> SweepResult:
    """Run (or resume) a grid search. ``params``: TrainConfig fields to a list of values (a grid
    axis) or one value; unnamed fields keep their defaults. Writes the results table and the
    best checkpoint under ``out``."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    out, data = (u.rstrip("/") if u.startswith("s3://") else os.path.abspath(u) for u in (out, data))  # trials chdir
    grid, fixed = split_space(params)
    space = {**dataclasses.asdict(TrainConfig(**fixed)), "data": data, "storage_path": storage.join(out, "runs")}
    for field in ("name", *grid):
        space.pop(field)
    spec = {"data": data, "grid": grid, "fixed": space}
    exp_path = storage.join(out, name)
    fs, root = storage.arrow_filesystem(out)
    resume = ray.tune.Tuner.can_restore(storage.join(root, name), storage_filesystem=fs)
    if resume:
        _check_same_sweep(exp_path, spec)

    combos = [{**space, **dict(zip(grid, vs))} for vs in itertools.product(*grid.values())]
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, data=_training_data(combos)), {"CPU": TRIAL_DRIVER_CPU}
    )
    if resume:
        tuner = ray.tune.Tuner.restore(storage.join(root, name), trainable, resume_errored=True, storage_filesystem=fs)
    else:
        _write_json(storage.join(exp_path, "sweep.json"), spec)
        per_cpu = max(c["workers"] * c["cpus_per_worker"] for c in combos) + TRIAL_DRIVER_CPU
        per_gpu = max(c["workers"] if c["gpu"] else 0 for c in combos)
        concurrent = max_concurrent or max_concurrent_trials(per_cpu, per_gpu)
        scheduler = (
            ASHAScheduler(time_attr="epochs_done", max_t=max(c["epochs"] for c in combos), grace_period=grace_period)
            if asha
            else None
        )
        tuner = ray.tune.Tuner(
            trainable,
            param_space={**space, **{k: ray.tune.grid_search(v) for k, v in grid.items()}},
            tune_config=ray.tune.TuneConfig(
                metric=METRIC,
                mode="max",
                scheduler=scheduler,
                max_concurrent_trials=concurrent,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=ray.tune.RunConfig(name=name, storage_path=root, storage_filesystem=fs, verbose=verbose),
        )
    tuner.fit()
    # Trial states as saved for resuming: after an interruption, the trials Tune stopped on the
    # way out are still unfinished there, though its in-memory results call them terminated.
    trials = ray.tune.ExperimentAnalysis(storage.join(root, name), storage_filesystem=fs).trials
    table = results_table(trials, list(grid), out)
    write_file(out, "results.parquet", lambda path: pq.write_table(table, path))
    unfinished = len(combos) - sum(s != "unfinished" for s in table["status"].to_pylist())  # incl. not started
    return SweepResult(table, grid, _copy_best(table, out), exp_path, unfinished)


def _write_json(uri: str, obj) -> None:
    fs, p = storage.filesystem(uri)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(p, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def _check_same_sweep(exp_path: str, spec: dict) -> None:
    """Tune resumes the search space it started with; refuse to resume a different sweep
    under the same name rather than silently running the old one."""
    fs, p = storage.filesystem(storage.join(exp_path, "sweep.json"))
    if not fs.exists(p):
        return
    with fs.open(p, "r") as f:
        old = json.load(f)
    if differences(old, json.loads(json.dumps(spec))):
        raise ValueError(
            f"{exp_path} holds a different sweep (see its sweep.json); "
            "resume it with the same arguments or pick another --name or --out"
        )


# ---- results -----------------------------------------------------------------------------------
def results_table(trials, grid_keys: list[str], out: str) -> pa.Table:
    """One row per Tune trial (``ray.tune.ExperimentAnalysis(...).trials``): its parameters,
    the val metrics of its best epoch (by val IoU; a class model's by its class mIoU), that
    epoch's checkpoint file, and how far it got. Trials are ranked by val IoU of bird against
    background, which every trial has, so a grid may mix bird/background and ``classes`` trials.
    Metrics come from each trial's Train run, whose checkpoint records survive an interruption
    (unlike reports Tune had not received yet). Sorted by val IoU, best first; trials without
    a checkpoint last, with null metrics. ``status``: done (all epochs, or early stopping),
    stopped (by ASHA), unfinished (the sweep was interrupted; a resume continues it), error."""
    import ray.train

    rows = []
    for t in trials:
        cfg = {k: v for k, v in t.config.items() if k in TrainConfig.__dataclass_fields__}
        run_dir = storage.join(out, "runs", t.trial_id)
        status = {"TERMINATED": "done", "ERROR": "error"}.get(t.status, "unfinished")
        row = {
            "trial_id": t.trial_id,
            **{k: cfg[k] for k in grid_keys},
            **dict.fromkeys(REPORTED),
            "val_class_miou": None,
            "best_epoch": None,
            "epochs_run": 0,
            "status": status,
            "checkpoint": None,
            "run_dir": run_dir,
            "config": json.dumps(cfg, sort_keys=True),
        }
        fs, path = storage.arrow_filesystem(run_dir)
        try:
            train = ray.train.Result.from_path(path, storage_filesystem=fs)
        except RuntimeError:  # the trial never got as far as its Train run's first record
            train = None
        if train is not None and train.best_checkpoints:
            score = TrainConfig(**cfg).score_metric  # a class model's best epoch is its best class mIoU
            ckpt, best = max(train.best_checkpoints, key=lambda cm: cm[1][score])
            row.update({k: float(best[k]) for k in REPORTED})
            row["val_class_miou"] = best.get("val_class_miou")
            row.update(
                best_epoch=int(best["epoch"]),
                epochs_run=int(train.metrics["epoch"]) + 1,
                checkpoint=storage.join(run_dir, os.path.basename(ckpt.path.rstrip("/")), "checkpoint.pt"),
            )
            if status == "done" and row["epochs_run"] < cfg["epochs"] and not train.metrics["stopped_early"]:
                row["status"] = "stopped"
        rows.append(row)
    rows.sort(key=lambda x: (x["val_iou"] is None, -(x["val_iou"] or 0.0), x["trial_id"]))
    return pa.Table.from_pylist(rows, schema=_schema(grid_keys))


def _schema(grid_keys: list[str]) -> pa.Schema:
    kinds = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    params = [(k, kinds[type(TrainConfig.__dataclass_fields__[k].default)]) for k in grid_keys]
    return pa.schema(
        [
            ("trial_id", pa.string()),
            *params,
            ("val_iou", pa.float64()),
            ("val_dice", pa.float64()),
            ("val_pixel_acc", pa.float64()),
            ("val_class_miou", pa.float64()),  # class models only
            ("best_epoch", pa.int64()),
            ("epochs_run", pa.int64()),
            ("status", pa.string()),
            ("checkpoint", pa.string()),
            ("run_dir", pa.string()),
            ("config", pa.string()),
        ]
    )


def _copy_best(table: pa.Table, out: str) -> Optional[str]:
    """Copy the top row's checkpoint to ``OUT/best/checkpoint.pt``."""
    if not len(table) or table["checkpoint"][0].as_py() is None:
        return None
    dst = storage.join(out, "best", "checkpoint.pt")
    fs, src = storage.filesystem(table["checkpoint"][0].as_py())
    _, dst_p = storage.filesystem(dst)
    fs.makedirs(dst_p.rsplit("/", 1)[0], exist_ok=True)
    fs.copy(src, dst_p)
    return dst


def format_table(table: pa.Table, grid_keys: list[str]) -> str:
    """The results as aligned text, best first."""
    head = ["#", "trial", *grid_keys, "val IoU", "Dice", "pix acc", "best ep", "epochs", "status"]
    lines = []
    for i, r in enumerate(table.to_pylist(), 1):
        params = [f"{r[k]:g}" if isinstance(r[k], float) else str(r[k]) for k in grid_keys]
        metrics = ["-" if r[k] is None else f"{r[k]:.3f}" for k in REPORTED]
        best = "-" if r["best_epoch"] is None else str(r["best_epoch"] + 1)
        lines.append([str(i), r["trial_id"], *params, *metrics, best, str(r["epochs_run"]), r["status"]])
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    return "\n".join("  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in [head, *lines])


# ---- command line ------------------------------------------------------------------------------
def _axis(f: dataclasses.Field) -> tuple:
    """A TrainConfig field as a sweep flag: a comma-separated list makes it a grid axis."""
    help = f"grid axis: {f.metadata['flag']['help']} (default {f.default})"
    if isinstance(f.default, bool):
        return f.name, bool, flag(False, help)
    return f.name, Optional[str], flag(None, help, metavar="V[,V...]")


TuneConfig = dataclasses.make_dataclass(
    "TuneConfig",
    [
        ("data", str, flag(help="ingest output folder or s3:// prefix (holding shards/)", positional=True)),
        ("out", str, flag(help="sweep folder or s3:// prefix")),
        ("grid", Optional[str], flag(None, "YAML: training parameter -> list of values (a grid axis) or one value")),
        ("name", str, flag("sweep", "experiment name; running again with it resumes the sweep")),
        ("asha", bool, flag(False, "stop poor trials early (ASHA on val IoU)")),
        ("grace_period", int, flag(2, "ASHA: epochs before a trial can be stopped")),
        (
            "max_concurrent",
            Optional[int],
            flag(None, "trials at once (default: what the cluster's CPUs/GPUs fit)", parse=int),
        ),
        *(_axis(f) for f in dataclasses.fields(TrainConfig) if f.name not in MANAGED),
    ],
)
TuneConfig.__doc__ = """``raybird tune DATA --out DIR [--grid YAML] [--lr 1e-3,3e-4] ...``: the sweep's own
settings, and every TrainConfig field but the managed ones as a grid axis."""


def cmd_tune(a) -> int:
    from raybird.pipelines.runtime import init_ray

    params = read_grid(a.grid) if a.grid else {}
    for field in TrainConfig.__dataclass_fields__:
        given = getattr(a, field, None) if field not in MANAGED else None
        if given is True:
            params[field] = ["true"]
        elif given:
            params[field] = given.split(",")
    split_space(params)  # fail on a bad value before starting Ray
    init_ray(dashboard=True)
    r = run(
        a.data, a.out, params, name=a.name, asha=a.asha, grace_period=a.grace_period, max_concurrent=a.max_concurrent
    )
    print(format_table(r.table, list(r.grid)))
    print(
        f"tune: {len(r.table)} trials; results {storage.join(a.out, 'results.parquet')}; "
        f"best checkpoint {r.best_checkpoint}"
    )
    if r.unfinished:
        print(f"tune: interrupted with {r.unfinished} trials unfinished; run the same command again to resume")
    return 0 if r.best_checkpoint and not r.unfinished else 1
