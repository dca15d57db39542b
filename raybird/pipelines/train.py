"""Training on Ray Train: a ``TorchTrainer`` (DDP) over the ingest shards, read through Ray Data.

The step itself (:mod:`raybird.training.engine`) is plain PyTorch; this module only orchestrates:
datasets, the per-worker loop (metrics all-reduced across workers, a checkpoint every
epoch), fault tolerance, and the run folder::

    <storage_path>/<name>/            Ray Train's run folder (checkpoint_* + state)
    <storage_path>/<name>/metrics.csv per-epoch train/val metrics
    <storage_path>/<name>/curves.png  loss and IoU curves (the report's Figure 1)
    <storage_path>/<name>/best/checkpoint.pt   the best epoch by val IoU, stable path

A worker that dies restarts from the last checkpoint (``FailureConfig``); running again with
the same name and storage path resumes the run where it stopped. ``init`` starts a new run from
a trained model's weights instead of random ones (fine-tuning, e.g. the shipped default on a
user's own labelled recordings); a run that has checkpoints resumes from them instead. With
``classes`` the network has one output per label class (:mod:`raybird.pipelines.train_setup`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from raybird.extras import available
from raybird.flags import flag
from raybird.io import storage
from raybird.models import checkpoint
from raybird.models.networks import ARCHS
from raybird.pipelines.shards import load_datasets
from raybird.pipelines.train_setup import ClassSetup, check_resume, class_setup, initial_weights
from raybird.training.engine import LOSSES, PRECISIONS, SCHEDULES

# The workers' progress lines go through logging, not print: Ray Train 2.60 patches print in its
# workers to tee into its log as well as stdout, so a printed line reached the driver twice.
log = logging.getLogger(__name__)

METRICS = ("loss", "iou", "miou", "dice", "pixel_acc")


@dataclass
class TrainConfig:
    """All training flags; defaults are the report's (Adam 1e-3 with decay, batch 8, 35 epochs,
    early stopping after 10 epochs without val improvement, on-the-fly augmentation)."""

    data: str = flag("", "ingest output folder or s3:// prefix (holding shards/)", positional=True)
    storage_path: str = flag("runs", "where run folders go (local path or s3://)")
    name: str = flag("unet", "run name; re-running the same name resumes it")
    arch: str = flag("unet", "unet, unet-se, segnet or deeplabv3", choices=ARCHS)
    width: int = flag(8, "channels of the first block (doubling per level)")
    depth: int = flag(5, "encoder/decoder levels")
    dropout: float = flag(0.1, "dropout in the bottleneck and decoder")
    loss: str = flag("ce+dice", "ce (the report's) or ce+dice", choices=LOSSES)
    lr: float = flag(1e-3, "Adam learning rate")
    lr_schedule: str = flag("exponential", "exponential, cosine or none", choices=SCHEDULES)
    lr_gamma: float = flag(0.95, "decay factor per epoch (exponential schedule)")
    batch_size: int = flag(8, "global batch, split over the workers")
    epochs: int = flag(35, "maximum epochs")
    patience: int = flag(10, "stop after this many epochs without a better val IoU")
    augment: float = flag(0.5, "augmentation strength in [0, 1]; 0 = off")
    bn_tiles: int = flag(
        256,
        "before each validation, recompute the BatchNorm statistics on this many of the epoch's "
        "training tiles, un-augmented (0: keep the running averages over augmented batches)",
    )
    workers: int = flag(2, "Ray Train workers (DDP processes)")
    gpu: bool = flag(False, "one GPU per worker (channels_last; bf16 autocast with --precision auto)")
    cpus_per_worker: float = flag(0.5, "logical CPUs per worker; fractional leaves room for Ray Data")
    precision: str = flag(
        "auto",
        "auto (bf16 autocast on CUDA and on CPUs with native bf16, e.g. AVX512-BF16 or AMX; else fp32), fp32 or bf16",
        choices=PRECISIONS,
    )
    max_failures: int = flag(3, "worker-group restarts from the last checkpoint before giving up")
    seed: int = flag(0, "seed for initialisation, shuffling and augmentation")
    init: str = flag(
        "",
        "start from this model's weights (fine-tuning): a checkpoint file or folder, s3:// path, or "
        "'default' for the shipped model; arch, width, depth and spectrogram settings must match",
    )
    classes: bool = flag(
        False,
        "train a class model: one output per label class found in the shards (syllable types, call "
        "types, species; 'bird' for labels without text) plus the background",
    )

    def model_config(self, class_names: Sequence[str] = ()):
        from raybird.models.networks import ModelConfig

        return ModelConfig.with_classes(
            class_names, arch=self.arch, width=self.width, depth=self.depth, dropout=self.dropout
        )

    @property
    def score_metric(self) -> str:
        """What early stopping and the best checkpoint go by: val IoU of bird against background,
        or for a class model the mean of its classes' val IoU."""
        return "val_class_miou" if self.classes else "val_iou"


# ---- the worker loop ---------------------------------------------------------------------------
def _allreduce(values, device):
    """Sum of ``values`` over the workers, as a float64 tensor on ``device`` (NCCL reduces only
    CUDA tensors, gloo CPU ones); the values themselves outside a process group."""
    import torch
    import torch.distributed as dist

    t = torch.as_tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _recalibrate_batchnorm(model, specs: list, settings) -> None:
    """engine.recalibrate_batchnorm on this worker's tiles, then the statistics of all workers
    averaged, weighted by their tiles, so every worker validates and saves the same model."""
    import torch

    from raybird.training import engine

    n = engine.recalibrate_batchnorm(model, specs, settings) if specs else 0
    layers = engine.batchnorm_layers(model)
    if not layers:
        return
    device = layers[0].running_mean.device
    stats = _allreduce(
        torch.cat(
            [torch.cat([m.running_mean, m.running_var]).double() for m in layers]
            + [torch.ones(1, dtype=torch.float64, device=device)]
        )
        * n,
        device,
    )
    if stats[-1] == 0:  # no worker saw a tile: keep the running averages
        return
    stats = stats[:-1] / stats[-1]
    for m in layers:
        k = m.running_mean.numel()
        m.running_mean.copy_(stats[:k])
        m.running_var.copy_(stats[k : 2 * k])
        stats = stats[2 * k :]


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from raybird.pipelines.runtime import only_ours_below_warning
    from raybird.training import engine
    from raybird.training.augment import AugmentConfig
    from raybird.training.metrics import PixelMetrics, class_scores, scores

    tc = TrainConfig(**config["train"])
    if config["log_level"] != "INFO":
        only_ours_below_warning()
    ctx = ray.train.get_context()
    torch.manual_seed(tc.seed + ctx.get_world_rank())
    device = ray.train.torch.get_device()
    classes = ClassSetup(**config["classes"]) if config["classes"] else None
    model_cfg = tc.model_config(classes.names if classes else ())
    # torch 2.13's CPU backward of this DeepLabV3 in channels_last segfaults (first step, any
    # batch; reproduced without Ray or DDP); NCHW trains. Other archs and CUDA keep channels_last.
    settings = engine.precision_settings(
        device, tc.precision, channels_last=not (model_cfg.arch == "deeplabv3" and device.type == "cpu")
    )
    if ctx.get_world_rank() == 0:
        log.info(f"training on {device.type} in {settings.precision}")
    # memory format before DDP: its gradient buckets take the parameters' strides as they are then
    model = ray.train.torch.prepare_model(settings.prepare_model(model_cfg.build()))
    optimizer = engine.make_optimizer(model, lr=tc.lr)
    scheduler = engine.make_scheduler(optimizer, tc.lr_schedule, gamma=tc.lr_gamma, epochs=tc.epochs)
    stopper = engine.EarlyStopping(tc.patience, mode="max")
    loss_fn = engine.make_loss(tc.loss, class_weights=classes.weights if classes else None)
    augment = AugmentConfig(strength=tc.augment) if tc.augment > 0 else None
    gen = torch.Generator(device=device).manual_seed(tc.seed * 1000 + ctx.get_world_rank())
    history: list[dict] = []
    resumes: list[int] = []  # epochs at which a restarted or re-run training picked up
    start = 0

    ckpt = ray.train.get_checkpoint()
    if ckpt:  # a restarted worker group or a re-run of the same run name
        with ckpt.as_directory() as d:
            payload = checkpoint.read_payload(d)
        engine.unwrap(model).load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        scheduler.load_state_dict(payload["scheduler_state"])
        stopper.load_state_dict(payload["extra"]["stopper"])
        history = payload["extra"]["history"]
        resumes = payload["extra"]["resumes"] + [payload["epoch"] + 1]
        start = payload["epoch"] + 1
    elif config.get("init_state") is not None:  # a new class head (absent from init_state) starts at random
        engine.unwrap(model).load_state_dict(config["init_state"], strict=False)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    # batch_size is the global batch (the report's 8), split over the workers
    worker_batch = max(1, -(-tc.batch_size // ctx.get_world_size()))
    worker_bn_tiles = -(-tc.bn_tiles // ctx.get_world_size())
    for epoch in range(start, tc.epochs):
        meter, loss_sum, steps = PixelMetrics(model_cfg.n_classes if classes else 0), 0.0, 0
        bn_specs, bn_kept = [], 0  # the epoch's first tiles, as read (before augmentation)
        lr = optimizer.param_groups[0]["lr"]
        # a buffer of many batches mixes tiles of different recordings into each batch
        for batch in train_shard.iter_torch_batches(
            batch_size=worker_batch, local_shuffle_buffer_size=32 * worker_batch, local_shuffle_seed=tc.seed + epoch
        ):
            if bn_kept < worker_bn_tiles:
                bn_specs.append(batch["spec"][: worker_bn_tiles - bn_kept])
                bn_kept += len(bn_specs[-1])
            loss_sum += engine.train_step(
                model, batch, optimizer, loss_fn, settings, augment=augment, generator=gen, meter=meter
            )
            steps += 1
        scheduler.step()
        if tc.bn_tiles > 0:
            _recalibrate_batchnorm(model, bn_specs, settings)
        val_meter = PixelMetrics(model_cfg.n_classes if classes else 0)
        val = engine.validate(
            model, val_shard.iter_torch_batches(batch_size=4 * worker_batch), loss_fn, settings, meter=val_meter
        )
        # every worker saw its own shard: sum counts and losses so all agree on the metrics
        matrices = [m.matrix.ravel() for m in (meter, val_meter) if m.matrix is not None]
        summed = _allreduce(
            np.concatenate(
                [meter.counts, val_meter.counts, [loss_sum, steps, val["loss_sum"], val["pixels"]], *matrices]
            ),
            device,
        )
        summed = summed.cpu().numpy()
        train_m, val_m = scores(summed[:4]), scores(summed[4:8])
        if classes:
            n = model_cfg.n_classes
            train_m |= class_scores(summed[12 : 12 + n * n].reshape(n, n), classes.names)
            val_m |= class_scores(summed[12 + n * n :].reshape(n, n), classes.names)
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": summed[8] / max(summed[9], 1),
            "val_loss": summed[10] / max(summed[11], 1),
            **{f"train_{k}": v for k, v in train_m.items()},
            **{f"val_{k}": v for k, v in val_m.items()},
        }
        history.append(row)
        stop = stopper.step(row[tc.score_metric])
        best = {f"best_{tc.score_metric}": stopper.best, "best_epoch": stopper.best_epoch}
        metrics = {**row, **best, "stopped_early": stop}
        if ctx.get_world_rank() == 0:
            log.info(
                f"epoch {epoch + 1}/{tc.epochs}: train loss {row['train_loss']:.4f} IoU {row['train_iou']:.3f} | "
                f"val loss {row['val_loss']:.4f} IoU {row['val_iou']:.3f} Dice {row['val_dice']:.3f} "
                f"acc {row['val_pixel_acc']:.3f}"
                + (f" class mIoU {row['val_class_miou']:.3f}" if classes else "")
                + f" | best {stopper.best:.3f} (epoch {stopper.best_epoch + 1})"
            )
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint.save_checkpoint(
                    tmp,
                    model,
                    optimizer,
                    epoch,
                    model_cfg,
                    config["spec_config"],
                    row,
                    extra={
                        "stopper": stopper.state_dict(),
                        "history": history,
                        "resumes": resumes,
                        "train_config": dataclasses.asdict(tc),
                        "precision": settings.precision,
                    },
                    scheduler=scheduler,
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)
        if stop:
            break


# ---- the driver --------------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_dir: str
    best_checkpoint: str
    best_val_iou: float
    best_epoch: int
    epochs_run: int
    history: list
    resumes: list  # epochs at which a restarted worker group or a re-run continued
    best_metrics: dict  # the best epoch's row of metrics.csv


def fit(
    tc: TrainConfig,
    datasets: Optional[dict] = None,
    spec_json: Optional[str] = None,
    callbacks: Optional[list] = None,
    classes: Optional[ClassSetup] = None,
) -> TrainResult:
    """Train and export. ``datasets``/``spec_json`` (and with ``--classes`` their ``classes``,
    :func:`~raybird.pipelines.train_setup.class_setup`) may be passed in (Tune reuses them); ``callbacks`` are Ray Train
    callbacks (Tune passes one that forwards each report)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from raybird.pipelines.runtime import train_log_level
    from raybird.training.engine import check_precision

    check_precision(tc.precision)  # before Ray Train starts, not in every worker
    if datasets is None:
        classes = class_setup(tc)
        datasets, spec_json = load_datasets(tc.data, class_names=classes.names if classes else None)
    if tc.classes != (classes is not None):
        raise ValueError("a class model's datasets come with their ClassSetup (class_setup), and only its")
    check_resume(tc, classes)
    init_state = initial_weights(tc, spec_json, classes)
    resources = {"CPU": tc.cpus_per_worker, **({"GPU": 1} if tc.gpu else {})}
    fs, root = storage.arrow_filesystem(tc.storage_path)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": dataclasses.asdict(tc),
            "spec_config": spec_json,
            "init_state": init_state,
            "classes": dataclasses.asdict(classes) if classes else None,
            "log_level": train_log_level(),
        },
        scaling_config=ray.train.ScalingConfig(num_workers=tc.workers, use_gpu=tc.gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=tc.name,
            storage_path=root,
            storage_filesystem=fs if tc.storage_path.startswith("s3://") else None,
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            logging_config=ray.train.LoggingConfig(log_level=train_log_level()),  # Ray Train's own lines
            callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=3, checkpoint_score_attribute=tc.score_metric, checkpoint_score_order="max"
            ),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    return write_run_files(tc, result)


def write_run_files(tc: TrainConfig, result) -> TrainResult:
    """Write metrics.csv, curves.png and best/checkpoint.pt into the run folder."""
    best_ckpt, best_metrics = max(result.best_checkpoints, key=lambda cm: cm[1][tc.score_metric])
    run_dir = storage.join(tc.storage_path, tc.name)
    fs, _ = storage.filesystem(run_dir)
    with result.checkpoint.as_directory() as d:
        from raybird.models.checkpoint import read_payload

        extra = read_payload(d)["extra"]
    history = extra["history"]
    with best_ckpt.as_directory() as d:
        best_local = os.path.join(d, "checkpoint.pt")
        best_path = storage.join(run_dir, "best", "checkpoint.pt")
        _, best_fs_path = storage.filesystem(best_path)
        fs.makedirs(best_fs_path.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(best_local, best_fs_path)
    _, csv_path = storage.filesystem(storage.join(run_dir, "metrics.csv"))
    with fs.open(csv_path, "w") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    if available("matplotlib"):
        _, png_path = storage.filesystem(storage.join(run_dir, "curves.png"))
        with fs.open(png_path, "wb") as f:
            f.write(plot_curves(history, title=tc.name, loss=tc.loss))
    else:
        log.warning(
            "train: curves.png not drawn (matplotlib missing: pip install 'raybird[plot]'); "
            "metrics.csv holds the same numbers"
        )
    return TrainResult(
        run_dir,
        best_path,
        float(best_metrics["val_iou"]),
        int(best_metrics["epoch"]),
        len(history),
        history,
        extra["resumes"],
        dict(best_metrics),
    )


def plot_curves(history: list[dict], title: str = "", loss: str = "training") -> bytes:
    """PNG of train/val loss (named ``loss``, e.g. ce+dice) and foreground IoU per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "loss", f"{loss} loss"), (axes[1], "iou", "foreground IoU")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def cmd_train(tc: TrainConfig) -> int:
    from raybird.pipelines.runtime import init_ray

    init_ray(dashboard=True)
    r = fit(tc)
    print(
        f"train: {r.epochs_run} epochs, best val IoU {r.best_val_iou:.3f}"
        + (f", class mIoU {r.best_metrics['val_class_miou']:.3f}" if tc.classes else "")
        + f" at epoch {r.best_epoch + 1}; "
        f"best checkpoint {r.best_checkpoint}; metrics and curves in {r.run_dir}"
    )
    return 0
