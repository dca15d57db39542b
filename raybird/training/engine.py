"""Plain-PyTorch training and inference steps, shared by Ray Train workers, the segmenter and
the GPU benchmark (nothing here knows about Ray).

Batches are mappings with ``"spec"`` ((N, H, W) or (N, 1, H, W); float in [0, 1] or uint8
0..255; tensors or arrays), ``"mask"`` ((N, H, W), 1 = bird) and optionally
``"valid_frames"`` ((N,) or int: columns after it are zero padding past the end of a
recording). Padding pixels get the target :data:`IGNORE_INDEX`, which the losses, the
augmentation and :mod:`raybird.training.metrics` all leave out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raybird.training.augment import AugmentConfig, augment_batch
from raybird.training.metrics import PixelMetrics, valid_frames_mask

IGNORE_INDEX = -100
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---- devices -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceSettings:
    """Where and how to run: bf16 autocast or none; channels_last on every device (it is
    also 2-3x faster for these small-channel convs on CPU with oneDNN)."""

    device: torch.device
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = True

    @property
    def precision(self) -> str:
        """The arithmetic in use ("auto" resolved): "fp32" or "bf16" autocast."""
        return "fp32" if self.amp_dtype is None else "bf16"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def pick_device(
    device: Union[None, str, torch.device] = None, amp: Union[str, bool] = "auto", channels_last: bool = True
) -> DeviceSettings:
    """``device`` None: CUDA when available. ``amp``: "auto" (bf16 on CUDA), "bf16" or False.
    (No fp16: it needs loss scaling, and bf16 is as fast wherever fp16 is.)"""
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if amp == "auto":
        amp = "bf16" if dev.type == "cuda" else False
    if amp not in ("bf16", False):
        raise ValueError(f"unknown amp {amp!r}; known: 'auto', 'bf16', False")
    return DeviceSettings(dev, torch.bfloat16 if amp else None, channels_last)


def native_bf16_cpu() -> bool:
    """True where the CPU has bf16 arithmetic (AVX512-BF16 or AMX). There bf16 autocast makes the
    U-Net ~1.9x faster to run (benchmarks/segment.py) and its train step 1.5-1.8x faster
    (benchmarks/gpu.py --device cpu); elsewhere bf16 is emulated and slower than fp32."""
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return precision


def precision_settings(
    device: Union[None, str, torch.device] = None, precision: str = "auto", channels_last: bool = True
) -> DeviceSettings:
    """Settings for training and prediction. ``precision``: "fp32", "bf16" (autocast: weights,
    their gradients and the optimizer state stay fp32), or "auto": bf16 on CUDA and on CPUs with
    native bf16, else fp32. Measured against fp32 on such a CPU: the mask stays within 2 IoU
    points (benchmarks/segment.py); training runs 1.37x faster end to end and, in the same wall
    time, reached a higher val IoU, though 0.02 lower after the same number of epochs (docs/training.md)."""
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if check_precision(precision) == "auto":
        precision = "bf16" if dev.type == "cuda" or native_bf16_cpu() else "fp32"
    return pick_device(dev, amp="bf16" if precision == "bf16" else False, channels_last=channels_last)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d (inside an nn.Sequential)
    into the conv's weights, in place: the same function with one pass less over each
    activation. Inference only (the folded model no longer trains like the original)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    return model


def _settings_for(model: nn.Module, settings: Union[None, str, torch.device, DeviceSettings]) -> DeviceSettings:
    if isinstance(settings, DeviceSettings):
        return settings
    return pick_device(settings if settings is not None else next(model.parameters()).device)


# ---- batches -----------------------------------------------------------------------------------
def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def spec_tensor(spec, settings: DeviceSettings) -> torch.Tensor:
    """(N, 1, H, W) float32 in [0, 1] on the device (uint8 input is divided by 255 there)."""
    x = _as_tensor(spec)
    x = x[:, None] if x.dim() == 3 else x
    x = x.to(settings.device, non_blocking=True)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return settings.to_input(x)


def prepare_batch(
    batch: Union[Mapping[str, Any], tuple], settings: DeviceSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spec, target)`` on the device; padded frames marked with :data:`IGNORE_INDEX`."""
    if not isinstance(batch, Mapping):
        batch = dict(zip(("spec", "mask", "valid_frames"), batch))
    spec = spec_tensor(batch["spec"], settings)
    target = _as_tensor(batch["mask"]).to(settings.device, non_blocking=True).long()
    if batch.get("valid_frames") is not None:
        keep = valid_frames_mask(
            _as_tensor(batch["valid_frames"]).to(settings.device), target.shape[0], target.shape[-1], settings.device
        )
        target = target.masked_fill(~keep, IGNORE_INDEX)
    return spec, target


# ---- losses ------------------------------------------------------------------------------------
def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of the bird probability (every class but the background) over the whole
    batch (ignored pixels left out)."""
    prob = logits.float().softmax(dim=1)[:, 1:].sum(dim=1)
    valid = (target != IGNORE_INDEX).float()
    t = (target > 0).float()
    inter = (prob * t * valid).sum()
    return 1 - (2 * inter + eps) / ((prob * valid).sum() + (t * valid).sum() + eps)


LOSSES = ("ce", "ce+dice")
SCHEDULES = ("exponential", "cosine", "none")


def make_loss(name: str = "ce", dice_weight: float = 1.0, class_weights: Optional[Sequence[float]] = None) -> LossFn:
    """``"ce"``: pixel cross-entropy (the report's loss); ``"ce+dice"``: plus ``dice_weight``
    times the soft Dice loss of bird against background, which counters their imbalance.

    A class model (more than two outputs) also learns which class a bird pixel is: the
    cross-entropy of the classes alone over the true bird pixels alone (:func:`class_loss`), so
    that the classes of a few percent of the pixels are not drowned in the background's mean.
    ``class_weights`` (one per output, background first; :func:`class_weights`) weight both
    cross-entropies' pixels by their true class."""
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)

    def ce(logits, target):
        if not (target != IGNORE_INDEX).any():  # a batch of padding only: no loss, not 0/0
            return logits.float().sum() * 0.0
        w = None if weight is None else weight.to(logits.device)
        loss = F.cross_entropy(logits.float(), target, weight=w, ignore_index=IGNORE_INDEX)
        return loss + class_loss(logits, target, w) if logits.shape[1] > 2 else loss

    if name == "ce":
        return ce
    if name == "ce+dice":
        return lambda logits, target: ce(logits, target) + dice_weight * soft_dice_loss(logits, target)
    raise ValueError(f"unknown loss {name!r}; known: 'ce', 'ce+dice'")


def class_loss(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of a class model's classes (outputs 1..) over the pixels whose true class is
    one of them: how well it tells the classes apart where there is a bird (0 without any)."""
    bird = target > 0
    if not bird.any():
        return logits.float().sum() * 0.0
    classes = logits.float()[:, 1:].permute(0, 2, 3, 1)[bird]  # (pixels, K)
    return F.cross_entropy(classes, target[bird] - 1, weight=None if weight is None else weight[1:])


def class_weights(pixels: Sequence[int], max_weight: float = 10.0) -> list[float]:
    """Cross-entropy weights for a class model from its training pixels per output (background
    first): the background 1, each class ``sqrt(median / its pixels)`` over the classes
    (median-frequency balancing, Eigen & Fergus 2015, softened by the square root), at most
    ``max_weight``; a class without pixels gets the largest. A class with a quarter of the
    median's pixels weighs 2: rare syllable types count without the loss chasing a handful
    of pixels. Weighting, not tile sampling, because a tile of song holds many classes at once."""
    counts = np.asarray(pixels[1:], float)
    if len(counts) == 0:
        return [1.0]
    median = np.median(counts[counts > 0]) if (counts > 0).any() else 1.0
    w = np.sqrt(median / np.maximum(counts, 1e-9))
    return [1.0, *np.minimum(w, max_weight).tolist()]


# ---- steps -------------------------------------------------------------------------------------
def train_step(
    model: nn.Module,
    batch,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    settings: Union[None, str, torch.device, DeviceSettings] = None,
    augment: Optional[AugmentConfig] = None,
    generator: Optional[torch.Generator] = None,
    meter: Optional[PixelMetrics] = None,
) -> float:
    """One optimisation step; returns the loss. ``meter`` (optional) accumulates the train
    metrics of the (augmented) batch from the same forward pass."""
    settings = _settings_for(model, settings)
    model.train()
    spec, target = prepare_batch(batch, settings)
    if augment is not None:
        spec, target = augment_batch(spec, target, augment, generator)
        spec = settings.to_input(spec)
    optimizer.zero_grad(set_to_none=True)
    with settings.autocast():
        logits = model(spec)
        loss = loss_fn(logits, target)
    loss.backward()
    optimizer.step()
    if meter is not None:
        meter.update(pixel_classes(logits.detach()), target)
    return float(loss.detach())


def pixel_classes(logits: torch.Tensor) -> torch.Tensor:
    """Each pixel's predicted output ``(N, H, W)`` as the segment job decides it: bird where the
    background's probability is at most one half (one minus it reaches the 0.5 threshold), then
    the most probable class. For two outputs that is the argmax; with more, the argmax would miss
    bird pixels whose probability is spread over several classes."""
    if logits.shape[1] == 2:
        return logits.argmax(dim=1)
    background = logits.float().softmax(dim=1)[:, 0]
    return torch.where(background <= 0.5, logits[:, 1:].argmax(dim=1) + 1, 0)


def validate(
    model: nn.Module,
    batches: Iterable,
    loss_fn: Optional[LossFn] = None,
    settings: Union[None, str, torch.device, DeviceSettings] = None,
    meter: Optional[PixelMetrics] = None,
) -> dict[str, float]:
    """Pixel metrics (see :mod:`raybird.training.metrics`), the pixel-weighted mean ``"loss"``, and the
    ``"loss_sum"``/``"pixels"`` behind it (to combine results across workers). Pass ``meter``
    to get the raw confusion counts as well."""
    settings = _settings_for(model, settings)
    loss_fn = loss_fn or make_loss("ce")
    model.eval()
    meter = meter if meter is not None else PixelMetrics()
    loss_sum, n_pix = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            spec, target = prepare_batch(batch, settings)
            with settings.autocast():
                logits = model(spec)
            n = int((target != IGNORE_INDEX).sum())
            if n:
                loss_sum += float(loss_fn(logits.float(), target)) * n
                n_pix += n
            meter.update(pixel_classes(logits), target)
    return {
        **meter.compute(),
        "loss": loss_sum / n_pix if n_pix else float("nan"),
        "loss_sum": loss_sum,
        "pixels": n_pix,
    }


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The model's BatchNorm layers (through a DDP wrapper), in module order."""
    return [m for m in unwrap(model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_batchnorm(
    model: nn.Module, specs: Iterable, settings: Union[None, str, torch.device, DeviceSettings] = None
) -> int:
    """Recompute every BatchNorm layer's running mean and variance as the average of the batch
    statistics over ``specs`` (batches of un-augmented input tiles), each batch weighted by its
    tiles (a short last batch counts less), dropout off; returns the tiles used.

    Training leaves each layer with an exponential average over the last augmented batches,
    which are not what the model sees at inference (gain, contrast and geometric jitter shift
    the statistics), and the mean of several checkpoints' statistics (an average) is not the
    statistics of the averaged weights. Recomputing them ("precise BN"; ``update_bn`` of SWA,
    Izmailov et al. 2018) gained 0.019-0.020 IoU at SNR <= 0 dB and 0.004 overall on 300
    validation recordings for the averaged default model; 256 tiles scored as well as 4096."""
    settings = _settings_for(model, settings)
    module = unwrap(model)  # not through DDP: workers may hold different numbers of batches
    layers = batchnorm_layers(module)
    momenta = [m.momentum for m in layers]
    module.eval()  # dropout off; only the BatchNorm layers collect statistics
    for m in layers:
        m.reset_running_stats()
        m.train()
    n = 0
    with torch.no_grad():
        for spec in specs:
            x = spec_tensor(spec, settings)
            for m in layers:  # running average weighted by tiles: the first batch replaces the reset stats
                m.momentum = x.shape[0] / (n + x.shape[0])
            with settings.autocast():
                module(x)
            n += x.shape[0]
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
        m.eval()
    if layers and n == 0:
        raise ValueError("no tiles to recompute the BatchNorm statistics on")
    return n


def predict_proba(
    model: nn.Module,
    spec_batch,
    settings: Union[None, str, torch.device, DeviceSettings] = None,
    quantize: bool = False,
) -> torch.Tensor:
    """Bird probability ``(N, H, W)`` on the CPU for a batch of spectrogram tiles: float32, or
    with ``quantize`` uint8 ``round(p * 255)`` made on the device (a quarter of the bytes to
    copy back and no pass over them on the host: what keeps a GPU predictor fed). For a class
    model, :func:`predict_classes`."""
    return predict_classes(model, spec_batch, settings, quantize)[0]


def predict_classes(
    model: nn.Module,
    spec_batch,
    settings: Union[None, str, torch.device, DeviceSettings] = None,
    quantize: bool = False,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(bird, classes)`` on the CPU: the bird probability ``(N, H, W)`` (one minus the
    background's) and, for a class model (its config names classes; one class too), each
    class's probability ``(N, K, H, W)`` (None for a bird/background model); float32, or uint8
    ``round(p * 255)`` with ``quantize``."""
    settings = _settings_for(model, settings)
    model.eval()
    with torch.inference_mode(), settings.autocast():
        logits = model(spec_tensor(spec_batch, settings))
        prob = logits.float().softmax(dim=1)
        config = getattr(unwrap(model), "config", None)
        has_classes = bool(config.class_names) if config is not None else prob.shape[1] > 2
        bird = prob[:, 1] if prob.shape[1] == 2 else 1 - prob[:, 0]
        classes = prob[:, 1:] if has_classes else None
        if quantize:
            bird = bird.mul(255).round_().to(torch.uint8)
            classes = None if classes is None else classes.mul(255).round_().to(torch.uint8)
    return bird.cpu(), None if classes is None else classes.cpu()


# ---- optimisation schedule ---------------------------------------------------------------------
def make_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    """Adam, as the report."""
    return torch.optim.Adam(model.parameters(), lr=lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str = "exponential",
    gamma: float = 0.95,
    epochs: Optional[int] = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate decay: ``"exponential"`` (lr * gamma**epoch), ``"cosine"`` (to 0
    over ``epochs``), ``"none"``."""
    sched = torch.optim.lr_scheduler
    if kind == "exponential":
        return sched.ExponentialLR(optimizer, gamma)
    if kind == "cosine":
        if not epochs:
            raise ValueError("cosine schedule needs epochs")
        return sched.CosineAnnealingLR(optimizer, epochs)
    if kind == "none":
        return sched.LambdaLR(optimizer, lambda epoch: 1.0)
    raise ValueError(f"unknown scheduler {kind!r}; known: 'exponential', 'cosine', 'none'")


class EarlyStopping:
    """Stop after ``patience`` epochs without the monitored metric improving by more than
    ``min_delta`` (mode "max": larger is better, e.g. val IoU; "min": e.g. val loss)."""

    def __init__(self, patience: int = 10, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: Optional[float] = None
        self.best_epoch = -1
        self.bad_epochs = 0
        self.epoch = -1

    def improved(self, value: float) -> bool:
        if self.best is None:
            return not np.isnan(value)
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def step(self, value: float) -> bool:
        """Record one epoch's value; True when training should stop."""
        self.epoch += 1
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = float(value), self.epoch, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        vars(self).update(state)


# ---- checkpoints -------------------------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / torch.compile wrappers."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return unwrap(inner)
    return model
