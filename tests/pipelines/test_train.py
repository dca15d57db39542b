"""Ray Train: a 2-worker DDP run on CPU, its outputs, fault tolerance and resumption."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from raybird import cli
from raybird.dsp.spectrogram import SpecConfig
from raybird.models import checkpoint
from raybird.models.networks import ModelConfig
from raybird.pipelines import ingest
from raybird.pipelines.shards import class_targets, load_datasets, sample_tiles, shard_classes, split_tiles
from raybird.pipelines.train import TrainConfig, fit
from raybird.pipelines.train_setup import check_resume, class_setup, initial_weights
from raybird.training import engine

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def shards(ray_session, tmp_path_factory, balanced_archive):
    root = tmp_path_factory.mktemp("train")
    archive = balanced_archive(root, 16, 1, 1, seed=11, duration_s=(3.0, 6.0), p_empty=0.1)
    ingest.run([str(archive)], str(root / "ingest"))
    datasets, spec_json = load_datasets(str(root / "ingest"))
    return root, datasets, spec_json


def test_load_datasets_says_when_there_are_no_shards(tmp_path):
    (tmp_path / "shards").mkdir()
    with pytest.raises(ValueError, match="no shards under"):
        load_datasets(str(tmp_path))
    with pytest.raises(ValueError, match="no shards under"):
        load_datasets(str(tmp_path / "missing"))


def _checkpoints(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("checkpoint_*") if p.is_dir())


def _config(root: Path, name: str, **kw) -> TrainConfig:
    base = dict(
        data=str(root / "ingest"),
        storage_path=str(root / "runs"),
        name=name,
        width=4,
        depth=3,
        epochs=2,
        batch_size=4,
        workers=2,
        cpus_per_worker=0.5,
        augment=0.3,
    )
    return TrainConfig(**{**base, **kw})


def test_two_workers_two_epochs_write_checkpoints_metrics_and_curves(shards):
    root, datasets, spec_json = shards
    r = fit(_config(root, "basic"), datasets, spec_json)
    assert r.epochs_run == 2 and [h["epoch"] for h in r.history] == [0, 1]
    for key in ("train_loss", "val_loss", "train_iou", "val_iou", "val_miou", "val_dice", "val_pixel_acc"):
        assert all(0 <= h[key] < 10 for h in r.history), key
    run = root / "runs" / "basic"
    assert _checkpoints(run), "Ray Train checkpoints"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r_["epoch"]) for r_ in rows] == [0, 1]
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    model, payload = checkpoint.load_checkpoint(run / "best" / "checkpoint.pt")  # weights_only=True inside
    assert payload["spec_config"] == spec_json
    # --precision auto: bf16 autocast where this CPU computes bf16 natively, recorded as resolved
    assert payload["extra"]["precision"] == ("bf16" if engine.native_bf16_cpu() else "fp32")
    assert payload["metrics"]["val_iou"] == pytest.approx(r.best_val_iou)
    assert max(h["val_iou"] for h in r.history) == pytest.approx(r.best_val_iou)
    x = torch.rand(1, 1, 256, 512)
    assert model(x).shape == (1, 2, 256, 512)
    # each epoch ended with BatchNorm statistics of the unaugmented training tiles
    assert torch.allclose(*_first_layer(model, _train_tiles(datasets)), rtol=0.03, atol=1e-4)


def _train_tiles(datasets) -> np.ndarray:
    return np.concatenate([b["spec"] for b in datasets["train"].iter_batches(batch_size=64, batch_format="numpy")])


def _first_layer(model, tiles: np.ndarray):
    """Its BatchNorm's running mean, and the mean of its input over ``tiles``."""
    conv, bn = model.encoders[0][0][0], model.encoders[0][0][1]
    with torch.no_grad():
        return bn.running_mean, conv(torch.from_numpy(tiles)[:, None].float() / 255).mean((0, 2, 3))


def test_a_batch_without_a_splits_tiles_decodes_to_empty_tensor_columns(shards):
    """Shards of a large archive each hold a few recordings, so many have no val tiles; those
    batches must decode to the same tensor type as the rest, not to pickled objects."""
    import ray

    root, _, _ = shards
    rows = pq.read_table(root / "ingest" / "shards")
    only_train = rows.filter(pc.equal(rows["split"], "train"))
    tile_shape = (rows["n_rows"][0].as_py(), rows["n_frames"][0].as_py())
    blocks = ray.get(split_tiles(ray.data.from_arrow([only_train, rows]), "val", tile_shape).to_arrow_refs())
    n_val = pc.sum(pc.and_(pc.equal(rows["split"], "val"), pc.is_valid(rows["mask"]))).as_py()
    assert [len(b) for b in blocks] == [0, n_val] and n_val > 0
    types = {str(b.schema.field(col).type) for b in blocks for col in ("spec", "mask")}
    assert len(types) == 1 and next(iter(types)).startswith("ArrowTensorType"), types
    # split None (the train benchmark's throughput runs): every labelled tile, of any split
    blocks = ray.get(split_tiles(ray.data.from_arrow([only_train, rows]), None, tile_shape).to_arrow_refs())
    assert [len(b) for b in blocks] == [pc.sum(pc.is_valid(t["mask"])).as_py() for t in (only_train, rows)]


def test_an_unknown_precision_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'fp16'; known: auto, fp32, bf16"):
        fit(_config(tmp_path, "x", precision="fp16"))
    assert not (tmp_path / "runs").exists()


def test_batchnorm_statistics_are_those_of_the_unaugmented_training_tiles(shards, tmp_path, capsys):
    """Each epoch ends by recomputing the BatchNorm statistics on the epoch's training tiles as
    read, not augmented, averaged over the workers (checked on the basic run: the saved model's
    first layer holds its input's mean over the train tiles). With bn_tiles 0 the layer keeps its
    running average over augmented batches; `raybird export --recalibrate` recomputes it, on
    training tiles only."""
    root, datasets, spec_json = shards
    tiles = _train_tiles(datasets)
    fit(_config(root, "bn-off", epochs=1, augment=1.0, bn_tiles=0), datasets, spec_json)
    off = root / "runs" / "bn-off" / "best" / "checkpoint.pt"
    assert not torch.allclose(*_first_layer(checkpoint.load_checkpoint(off)[0], tiles), rtol=0.03, atol=1e-4)
    out = tmp_path / "recalibrated.pt"
    assert (
        cli.main(
            ["export", str(off), "--recalibrate", str(root / "ingest"), "--recalibrate-tiles", "16", "--out", str(out)]
        )
        == 0
    )
    model, payload = checkpoint.load_checkpoint(out)
    drawn = sample_tiles(str(root / "ingest"), 16)[0]  # the same draw: one batch of 16
    assert torch.allclose(*_first_layer(model, drawn), atol=1e-5)
    assert payload["extra"]["bn_recalibrated"] == {"data": str(root / "ingest"), "tiles": 16}
    assert len(sample_tiles(str(root / "ingest"), 1000)[0]) == len(tiles)  # the training split's, no others
    hop256 = checkpoint.save_checkpoint(
        tmp_path / "hop", model, spec_config_json=SpecConfig.from_json(spec_json).replace(hop_length=256).to_json()
    )
    assert (
        cli.main(["export", str(hop256), "--recalibrate", str(root / "ingest"), "--out", str(tmp_path / "x.pt")]) == 2
    )
    assert "other spectrogram settings" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def _trained_model(datasets, spec_json, path: Path, steps: int = 40) -> None:
    """A width-4 U-Net fitted to the train tiles in plain PyTorch (quicker than a Ray run), saved at ``path``."""
    torch.manual_seed(0)
    train = datasets["train"].take_batch(datasets["train"].count(), batch_format="numpy")
    model = ModelConfig(width=4, depth=3).build()
    settings = engine.pick_device("cpu")
    settings.prepare_model(model)
    opt, loss_fn = engine.make_optimizer(model, lr=3e-3), engine.make_loss("ce+dice")
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.choice(len(train["spec"]), 4, replace=False)
        engine.train_step(model, {k: v[idx] for k, v in train.items()}, opt, loss_fn, settings)
    checkpoint.save_checkpoint(path, model, spec_config_json=spec_json)


def test_init_starts_from_a_trained_models_weights_and_early_stopping_ends_it(shards):
    """Fine-tuning: at lr 0 the weights never move, so the run saves exactly the --init model's
    parameters (BatchNorm's running statistics do follow the data). Were --init ignored, it would
    save its own random initialisation instead. And patience 2 stops the run two epochs after its
    best, long before epoch 10: with the weights fixed, only the BatchNorm statistics move val IoU."""
    root, datasets, spec_json = shards
    source = root / "init-source.pt"
    _trained_model(datasets, spec_json, source)
    _, src = checkpoint.load_checkpoint(source)
    tc = _config(root, "init-tuned", epochs=10, patience=2, lr=0.0, init=str(source), precision="fp32")
    run = fit(tc, datasets, spec_json)
    assert run.epochs_run == run.best_epoch + 3 < 10
    got = torch.load(run.best_checkpoint, weights_only=True)
    assert got["extra"]["train_config"]["init"] == str(source) and got["extra"]["precision"] == "fp32"
    names = [n for n, _ in ModelConfig(width=4, depth=3).build().named_parameters()]
    for name in names:
        assert torch.equal(got["model_state"][name], src["model_state"][name]), name


def test_init_must_match_the_runs_network_and_spectrograms(shards):
    root, _, spec_json = shards
    with pytest.raises(ValueError, match=r"width 8 \(this run: 4\)"):
        initial_weights(_config(root, "x", init="default"), spec_json)
    other = dataclasses.replace(SpecConfig.from_json(spec_json), hop_length=256)
    with pytest.raises(ValueError, match="other spectrograms: hop_length 128 \\(shards: 256\\)"):
        initial_weights(_config(root, "x", init="default", width=8, depth=5), other.to_json())
    assert initial_weights(_config(root, "x", init="default", width=8, depth=5), spec_json)
    payload = checkpoint.read_payload(checkpoint.read_checkpoint("default").data)
    body = next(k for k in payload["model_state"] if "weight" in k)
    del payload["model_state"][body]  # training loads with strict=False: this must not pass unnoticed
    broken = checkpoint.save_payload(payload, root / "broken" / "checkpoint.pt")
    with pytest.raises(
        ValueError, match=f"1 weights of the network are missing from the checkpoint or shaped otherwise, e.g. {body}"
    ):
        initial_weights(_config(root, "x", init=str(broken), width=8, depth=5), spec_json)


def test_killed_worker_resumes_from_last_checkpoint_and_a_rerun_goes_on(shards, descendants):
    """SIGKILL one training worker after the first checkpoint: the worker group restarts and
    continues from that checkpoint instead of from epoch 0. Then the same run name, re-run with
    one epoch more, goes on after its last epoch, and so does its learning-rate schedule."""
    root, datasets, spec_json = shards
    # the kill follows the first registered checkpoint within a second; 7 epochs are left to run
    tc = _config(root, "killed", epochs=8, patience=100, max_failures=2, lr=1e-3, lr_gamma=0.5)

    def train_workers() -> set[int]:  # this session's: Ray names a worker process after its actor
        return {pid for pid, title in descendants(os.getpid()) if "RayTrainWorker" in title}

    out = {}
    stale = train_workers()  # workers of earlier runs may still be exiting
    t = threading.Thread(target=lambda: out.setdefault("r", fit(tc, datasets, spec_json)))
    t.start()
    run = root / "runs" / "killed"
    deadline = time.time() + 240
    # the controller writes this snapshot once it has registered a checkpoint; a folder on disk
    # alone is not enough (a report still queued in the killed worker is lost with it)
    snapshot = run / "checkpoint_manager_snapshot.json"
    while not snapshot.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert snapshot.exists(), "no checkpoint registered"
    workers = sorted(train_workers() - stale)
    assert workers, "no training worker found"
    os.kill(workers[0], signal.SIGKILL)
    t.join(600)
    r = out["r"]
    assert [h["epoch"] for h in r.history] == list(range(8))
    assert len(r.resumes) == 1 and 1 <= r.resumes[0] <= 7, r.resumes  # continued, not from epoch 0
    assert [h["lr"] for h in r.history] == pytest.approx([1e-3 * 0.5**k for k in range(8)])

    again = fit(dataclasses.replace(tc, epochs=9), datasets, spec_json)
    assert again.history[:8] == r.history and again.history[8]["epoch"] == 8  # 0-7 were not run again
    assert again.history[8]["lr"] == pytest.approx(1e-3 * 0.5**8) and again.resumes == [*r.resumes, 8]


def test_classes_train_one_output_per_label_class_from_a_binary_model(shards):
    """--classes: the synthetic truth's call kinds become the outputs (sorted, after the
    background); --init from a bird/background model keeps its body (at lr 0, unchanged) and
    starts a new head; per-class metrics each epoch. (A re-run resumes as any run does:
    test_rerun_with_same_name_resumes_with_the_lr_schedule; its outputs are the same classes.)"""
    root, datasets, spec_json = shards
    names, pixels = shard_classes(str(root / "ingest"))
    assert names == sorted(names) and len(names) >= 2 and pixels[0] > max(pixels[1:]) > 0
    source = root / "init-binary.pt"
    _trained_model(datasets, spec_json, source, steps=5)
    _, src = checkpoint.load_checkpoint(source)
    tc = _config(root, "classes", epochs=1, lr=0.0, init=str(source), classes=True)
    run = fit(tc)
    model, got = checkpoint.load_checkpoint(run.best_checkpoint)
    assert model.config.class_names == tuple(names) and model.config.n_classes == len(names) + 1
    assert model(torch.rand(1, 1, 64, 128)).shape == (1, len(names) + 1, 64, 128)
    body = [n for n, _ in model.named_parameters() if not n.startswith("head.")]
    assert body and all(torch.equal(got["model_state"][n], src["model_state"][n]) for n in body)
    assert got["model_state"]["head.weight"].shape[0] == len(names) + 1 != src["model_state"]["head.weight"].shape[0]
    rows = list(csv.DictReader(open(Path(run.run_dir) / "metrics.csv")))
    for name in names:
        for key in ("iou", "precision", "recall"):
            assert 0 <= float(rows[0][f"val_{key}_{name}"]) <= 1
    assert 0 <= float(rows[0]["val_class_miou"]) <= 1 and 0 <= float(rows[0]["val_iou"]) <= 1
    assert class_setup(tc).names == tuple(names)  # the same outputs when a re-run resumes it


def test_a_class_model_to_fine_tune_must_know_every_label_class(shards, tmp_path):
    root, _, spec_json = shards
    names, _ = shard_classes(str(root / "ingest"))
    known = checkpoint.save_checkpoint(
        tmp_path / "known",
        ModelConfig.with_classes(["zzz", *names[::-1]], width=4, depth=3).build(),
        spec_config_json=spec_json,
    )
    setup = class_setup(_config(root, "x", init=str(known), classes=True))
    assert setup.names == ("zzz", *names[::-1]) and setup.weights[1] == max(setup.weights)  # no zzz pixels
    missing = checkpoint.save_checkpoint(
        tmp_path / "missing", ModelConfig.with_classes(names[1:], width=4, depth=3).build(), spec_config_json=spec_json
    )
    with pytest.raises(ValueError, match=rf"label classes \['{names[0]}'\] are unknown to the model"):
        class_setup(_config(root, "x", init=str(missing), classes=True))


def test_a_rerun_must_build_the_network_its_checkpoints_hold(shards, tmp_path):
    """A run name re-run resumes from its checkpoints: refused, before Ray Train starts, when
    they hold another network or classes that mean something else (the shards' classes changed)."""
    root, datasets, spec_json = shards
    names, _ = shard_classes(str(root / "ingest"))
    runs = tmp_path / "runs"
    model = ModelConfig.with_classes(names, width=4, depth=3).build()
    checkpoint.save_checkpoint(runs / "old" / "checkpoint_000000", model, spec_config_json=spec_json)
    same = _config(root, "old", storage_path=str(runs), classes=True)
    check_resume(same, class_setup(same))  # the same classes: resumes
    with pytest.raises(ValueError, match=r"resumes from checkpoints whose model has .*class_names"):
        check_resume(same, dataclasses.replace(class_setup(same), names=tuple(names[::-1])))
    with pytest.raises(ValueError, match=rf"n_classes {len(names) + 1} \(this run: 2\).*another --name"):
        fit(_config(root, "old", storage_path=str(runs)), datasets, spec_json)
    check_resume(_config(root, "new", storage_path=str(runs)))  # nothing to resume


def test_class_targets_renumber_each_recordings_classes_to_the_models():
    import pyarrow as pa

    mask = np.array([[1, 1, 0, 1]], np.uint8)
    rows = pa.table(
        {
            "mask": [mask.tobytes()] * 3,
            "classes": [bytes([1, 2, 0, 2]), bytes([1, 2, 0, 2]), None],  # two orders; none: labels without text
            "class_names": [["b", "a"], ["a", "b"], None],
            "n_rows": [1] * 3,
            "n_frames": [4] * 3,
        }
    )
    got = class_targets(rows, ["a", "b", "bird"])
    assert got.tolist() == [[[2, 1, 0, 1]], [[1, 2, 0, 2]], [[3, 3, 0, 3]]]
    with pytest.raises(ValueError, match=r"label classes \['bird'\] are not among the model's \['a', 'b'\]"):
        class_targets(rows, ["a", "b"])


def test_a_class_model_takes_at_most_255_classes(tmp_path):
    """Each recording holds up to 255 classes (ingest's limit); their union may not exceed what
    a uint8 class map holds either: in one batch of shard rows, or across shard files."""
    import pyarrow as pa

    def shard(names: list[str], file: str) -> None:
        n = len(names)
        row = dict(mask=bytes([1] * n), classes=bytes(range(1, n + 1)), class_names=names, n_rows=1, n_frames=n)
        pq.write_table(pa.Table.from_pylist([dict(row, valid_frames=n, split="train")]), tmp_path / "shards" / file)

    (tmp_path / "shards").mkdir()
    shard([f"a{i:03d}" for i in range(200)], "part-0.parquet")
    shard([f"b{i:03d}" for i in range(55)], "part-1.parquet")
    assert len(class_setup(TrainConfig(data=str(tmp_path), classes=True)).names) == 255
    shard([f"b{i:03d}" for i in range(56)], "part-1.parquet")
    with pytest.raises(ValueError, match=f"256 label classes in {tmp_path}; a class model takes at most 255"):
        class_setup(TrainConfig(data=str(tmp_path), classes=True))
    with pytest.raises(ValueError, match="256 label classes; a class model takes at most 255"):
        class_targets(pq.read_table(tmp_path / "shards" / "part-0.parquet"), [f"c{i}" for i in range(256)])
