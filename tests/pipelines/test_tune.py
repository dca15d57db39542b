"""Ray Tune over Ray Train: the search space, concurrency, a 2x2 grid end to end, and
resuming an interrupted sweep without re-running finished trials."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raybird import cli
from raybird.models import checkpoint
from raybird.pipelines import ingest, tune
from raybird.pipelines.shards import shard_classes


# ---- no Ray ------------------------------------------------------------------------------------
def test_split_space_types_axes_and_errors():
    grid, fixed = tune.split_space(
        {"lr": ["1e-3", "3e-4"], "loss": ["ce", "ce+dice"], "width": "8", "gpu": "true", "epochs": [3], "dropout": 0}
    )
    assert grid == {"lr": [1e-3, 3e-4], "loss": ["ce", "ce+dice"]}
    assert fixed == {"width": 8, "gpu": True, "epochs": 3, "dropout": 0.0}
    assert isinstance(fixed["dropout"], float) and isinstance(fixed["width"], int)
    for bad in (
        {"widht": [4, 8]},
        {"name": "x"},
        {"storage_path": "y"},
        {"width": ["4", "4.5"]},
        {"gpu": "maybe"},
        {"lr": [1e-3, 1e-3]},
        {"lr": []},
    ):
        with pytest.raises(ValueError):
            tune.split_space(bad)


def test_yaml_grid_reads_numbers_by_field_type(tmp_path):
    (tmp_path / "grid.yaml").write_text("lr: [1e-3, 3e-4]\nwidth: [8, 16]\narch: unet-se\nepochs: 20\n")
    values = tune.read_grid(str(tmp_path / "grid.yaml"))
    assert values["lr"] == ["1e-3", "3e-4"]  # YAML 1.1 reads these as strings
    grid, fixed = tune.split_space(values)
    assert grid == {"lr": [1e-3, 3e-4], "width": [8, 16]} and fixed == {"arch": "unet-se", "epochs": 20}


def test_max_concurrent_trials_leaves_room_for_ray_data():
    per_trial = 2 * 0.5 + tune.TRIAL_DRIVER_CPU  # 2 workers x 0.5 CPU + the trial's driver
    assert tune.max_concurrent_trials(per_trial, resources={"CPU": 4.0}) == 2  # (4 - 1) / 1.1
    assert tune.max_concurrent_trials(per_trial, resources={"CPU": 2.0}) == 1  # never 0
    assert tune.max_concurrent_trials(1.0, resources={"CPU": 4.0}) == 3
    assert tune.max_concurrent_trials(4.1, 4, resources={"CPU": 64.0, "GPU": 8.0}) == 2  # GPUs limit
    assert tune.max_concurrent_trials(4.1, 4, resources={"CPU": 9.0, "GPU": 8.0}) == 1  # CPUs limit


def test_summary_table_text():
    rows = [
        dict(
            trial_id="a_00000",
            lr=1e-3,
            width=8,
            val_iou=0.61234,
            val_dice=0.7,
            val_pixel_acc=0.9,
            best_epoch=4,
            epochs_run=10,
            status="done",
            checkpoint="c.pt",
            run_dir="r",
            config="{}",
        ),
        dict(
            trial_id="a_00001",
            lr=3e-4,
            width=16,
            val_iou=None,
            val_dice=None,
            val_pixel_acc=None,
            best_epoch=None,
            epochs_run=0,
            status="error",
            checkpoint=None,
            run_dir="r",
            config="{}",
        ),
    ]
    table = pa.Table.from_pylist(rows, schema=tune._schema(["lr", "width"]))
    assert tune.format_table(table, ["lr", "width"]).splitlines() == [
        "#    trial      lr  width  val IoU   Dice  pix acc  best ep  epochs  status",
        "1  a_00000   0.001      8    0.612  0.700    0.900        5      10    done",
        "2  a_00001  0.0003     16        -      -        -        -       0   error",
    ]


def test_command_line_flags():
    a = cli.build_parser().parse_args(
        [
            "tune",
            "shards",
            "--out",
            "o",
            "--lr",
            "1e-3,3e-4",
            "--width",
            "4",
            "--gpu",
            "--loss",
            "ce,ce+dice",
            "--asha",
            "--name",
            "s1",
        ]
    )
    assert (a.data, a.out, a.name, a.asha, a.grid) == ("shards", "o", "s1", True, None)
    assert (a.lr, a.width, a.gpu, a.loss, a.batch_size) == ("1e-3,3e-4", "4", True, "ce,ce+dice", None)
    assert cli.command(a.command)[0] is tune.cmd_tune


# ---- on Ray ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(ray_session, tmp_path_factory, balanced_archive) -> str:
    root = tmp_path_factory.mktemp("tune")
    archive = balanced_archive(root, 12, 3, 6, seed=3, duration_s=(3.0, 5.0), p_empty=0.0)
    ingest.run([str(archive)], str(root / "ingest"))
    return str(root / "ingest")


def _checkpoints(run: Path) -> list[Path]:
    """A Train run's checkpoint folders, oldest first (their names are timestamps)."""
    return sorted(p for p in run.glob("checkpoint_*") if p.is_dir())


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.ray
def test_grid_sweep_interrupted_and_resumed_gives_the_table_and_best_checkpoint(shards, tmp_path):
    """A 2x2 grid (bird/background or one output per label class x epochs), one trial at a time,
    stopped with Ctrl+C (SIGINT) once a 1-epoch trial has finished and a 4-epoch trial has its
    first checkpoint. Running the sweep again keeps the finished trials as they are, continues the
    cut one from its own checkpoint, runs the rest, and writes the table of all four, ranked by
    val IoU, which every trial has (the class trials also report their class mIoU), and the best
    checkpoint. (One sweep for all of it: every Train run costs a worker start-up, the bulk of
    this test's time.)"""
    assert threading.current_thread() is threading.main_thread()  # Tune catches SIGINT only there
    params = {"classes": [False, True], "epochs": [1, 4], "width": 4, "depth": 3, "batch_size": 4, "augment": 0}
    runs, sweep = tmp_path / "runs", tmp_path / "sweep"

    def epochs_of(trial_id: str) -> int:
        return json.loads((sweep / trial_id / "params.json").read_text())["epochs"]

    def interrupt_when_ready():
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                finished = [d for d in runs.glob("*") if (d / "best" / "checkpoint.pt").exists()]
                cut = [
                    d
                    for d in runs.glob("*")
                    if d not in finished
                    and epochs_of(d.name) == 4
                    and "checkpoint_" in (d / "checkpoint_manager_snapshot.json").read_text()
                ]
            except (FileNotFoundError, json.JSONDecodeError):  # written as we look
                cut = []
            if finished and cut:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_when_ready, daemon=True)
    watcher.start()
    first = tune.run(shards, str(tmp_path), params, max_concurrent=1, verbose=0)
    watcher.join(1)
    before = first.table.to_pylist()
    done = [x for x in before if x["status"] == "done"]
    started = [x for x in before if x["status"] == "unfinished" and x["epochs_run"]]
    # trials not started yet may have no row: Tune creates them as the concurrency limit allows
    assert len(before) <= 4 and first.unfinished == 4 - len(done) and len(started) == 1
    assert done and all((x["epochs"], x["epochs_run"]) == (1, 1) for x in done)
    cut = started[0]
    assert cut["epochs"] == 4 and 1 <= cut["epochs_run"] < 4
    finished_files = {x["trial_id"]: _files(runs / x["trial_id"]) for x in done}
    finished_reports = {x["trial_id"]: (sweep / x["trial_id"] / "progress.csv").read_text() for x in done}
    epoch0 = torch.load(_checkpoints(runs / cut["trial_id"])[0] / "checkpoint.pt", weights_only=True)

    r = tune.run(shards, str(tmp_path), params, max_concurrent=1, verbose=0)
    rows = r.table.to_pylist()
    by_id = {x["trial_id"]: x for x in rows}
    assert r.unfinished == 0 and len(rows) == 4
    assert sorted((x["classes"], x["epochs"]) for x in rows) == sorted(itertools.product([False, True], [1, 4]))
    assert all(x["status"] == "done" and x["epochs_run"] == x["epochs"] for x in rows)
    # the finished trials: same rows, same files, no new Train run
    for x in done:
        assert by_id[x["trial_id"]] == x and _files(runs / x["trial_id"]) == finished_files[x["trial_id"]]
        assert (sweep / x["trial_id"] / "progress.csv").read_text() == finished_reports[x["trial_id"]]
    # the interrupted trial went on from its checkpoint: epoch 0 was not trained again
    last = torch.load(_checkpoints(runs / cut["trial_id"])[-1] / "checkpoint.pt", weights_only=True)
    assert [h["epoch"] for h in last["extra"]["history"]] == list(range(4))
    assert last["extra"]["history"][0] == epoch0["extra"]["history"][0]
    assert last["extra"]["resumes"] == [cut["epochs_run"]]

    for x in rows:
        assert all(0.0 <= x[k] <= 1.0 for k in ("val_iou", "val_dice", "val_pixel_acc"))
        # the best epoch's numbers, as the trial's own Train run wrote them
        run_csv = list(csv.DictReader(open(Path(x["run_dir"]) / "metrics.csv")))
        assert len(run_csv) == x["epochs"]
        ious = [float(e["val_iou"]) for e in run_csv]
        score = "val_class_miou" if x["classes"] else "val_iou"  # what picks a trial's best epoch
        scores = [float(e[score]) for e in run_csv]
        assert x[score] == pytest.approx(max(scores)) == pytest.approx(scores[x["best_epoch"]])
        for key in ("val_iou", "val_dice"):
            assert float(run_csv[x["best_epoch"]][key]) == pytest.approx(x[key])
        if x["trial_id"] != cut["trial_id"]:  # and as Tune received them, epoch by epoch
            tune_csv = list(csv.DictReader(open(sweep / x["trial_id"] / "progress.csv")))
            assert [float(t["val_iou"]) for t in tune_csv] == pytest.approx(ious)
        assert {k: json.loads(x["config"])[k] for k in ("classes", "epochs")} == {
            "classes": x["classes"],
            "epochs": x["epochs"],
        }
        # each trial trained on its own targets: two outputs, or one per label class
        config = json.loads(torch.load(x["checkpoint"], weights_only=True)["model_config"])
        if x["classes"]:
            assert config["class_names"] == shard_classes(shards)[0] and 0 <= x["val_class_miou"] <= 1
        else:
            assert "class_names" not in config and x["val_class_miou"] is None
    ious = [x["val_iou"] for x in rows]
    assert ious == sorted(ious, reverse=True)
    assert pq.read_table(tmp_path / "results.parquet").equals(r.table)

    best = tmp_path / "best" / "checkpoint.pt"
    assert r.best_checkpoint == str(best)
    assert best.read_bytes() == Path(rows[0]["checkpoint"]).read_bytes()
    model, payload = checkpoint.load_checkpoint(best)  # weights_only=True inside
    assert payload["metrics"]["val_iou"] == pytest.approx(rows[0]["val_iou"])
    trained = payload["extra"]["train_config"]
    assert (trained["classes"], trained["epochs"], trained["width"]) == (rows[0]["classes"], rows[0]["epochs"], 4)
    assert model(torch.rand(1, 1, 64, 128)).shape == (1, model.config.n_classes, 64, 128)

    # statuses from the trial states Tune saved: fewer epochs than asked for is ASHA's stop when
    # Tune saw the trial end, an interrupted run when it did not; no Train run is a failure
    one = next(x for x in rows if x["epochs"] == 1)
    top = json.loads(one["config"])
    saved = [
        SimpleNamespace(trial_id=one["trial_id"], status="TERMINATED", config={**top, "epochs": 5}),
        SimpleNamespace(trial_id=one["trial_id"], status="RUNNING", config=top),
        SimpleNamespace(trial_id="never_ran", status="ERROR", config=top),
    ]
    table = tune.results_table(saved, ["classes"], str(tmp_path)).to_pylist()
    assert [(x["status"], x["epochs_run"]) for x in table] == [("stopped", 1), ("unfinished", 1), ("error", 0)]
    assert table[0]["checkpoint"] == one["checkpoint"] and table[2]["val_iou"] is None

    # a different grid under the same name is refused, not silently resumed instead
    with pytest.raises(ValueError, match="different sweep"):
        tune.run(shards, str(tmp_path), {**params, "width": [4, 8]}, verbose=0)
