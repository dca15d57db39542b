"""Checkpoints: the one place that writes and reads them.

A checkpoint is one ``torch.save`` file of tensors and plain Python types (configs as JSON
strings), so it loads with ``torch.load(weights_only=True)``: weights, optimizer and scheduler
state, epoch, metrics and ``extra`` (training history, what it was averaged or recalibrated from).
:func:`read_checkpoint` reads one for inference from a path, run folder, ``s3://`` URI or
``default`` (the shipped model, package data in ``raybird/weights``); :func:`load_checkpoint`
rebuilds its model from a path or the file's bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from raybird.dsp.spectrogram import SpecConfig
from raybird.io import storage
from raybird.io.tables import write_file
from raybird.models.networks import ModelConfig
from raybird.training.engine import recalibrate_batchnorm, unwrap

CHECKPOINT_FILE = "checkpoint.pt"

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "weights" / "default.pt"  # package data (weights/MODEL_CARD.md)


@dataclass(frozen=True)
class Checkpoint:
    data: bytes  # the file, shipped to the actors (a driver path may not exist on workers)
    cfg: SpecConfig
    model_id: str


def read_checkpoint(model: Optional[str] = None) -> Checkpoint:
    """Read a checkpoint (local path, directory or ``s3://``; None or ``"default"``: the shipped model)."""
    path = str(model) if model and model != "default" else str(DEFAULT_MODEL)
    if not path.startswith("s3://") and os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_FILE)
    if not path.startswith("s3://") and not os.path.isfile(path):
        hint = (
            " (the shipped model is missing from this installation: pass --model CKPT)"
            if not model or model == "default"
            else ""
        )
        raise FileNotFoundError(f"model checkpoint not found: {path}{hint}")
    data = storage.read_bytes(path)
    payload = read_payload(data)
    if not payload.get("spec_config"):
        raise ValueError(f"{path}: checkpoint has no spec_config, cannot compute its spectrograms")
    mc = json.loads(payload["model_config"])
    model_id = f"{mc['arch']}-w{mc['width']}-{hashlib.sha256(data).hexdigest()[:12]}"
    return Checkpoint(data, SpecConfig.from_json(payload["spec_config"]), model_id)


def checkpoint_file(path: Union[str, os.PathLike]) -> Path:
    """The file of a checkpoint given as a file or as its run folder."""
    p = Path(path)
    return p / CHECKPOINT_FILE if p.is_dir() or not p.suffix else p


def _plain(x: Any) -> Any:
    """JSON round trip: only plain Python types remain (numpy / torch scalars become numbers);
    anything else raises TypeError rather than failing later at ``weights_only`` load time."""

    def scalar(o):
        if isinstance(o, (np.generic, torch.Tensor)) and np.ndim(o) == 0:
            return o.item()
        raise TypeError(f"checkpoint metrics/extra must be plain JSON values, got {type(o).__name__}")

    return json.loads(json.dumps(x, default=scalar))


def save_checkpoint(
    path_or_dir: Union[str, os.PathLike],
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    epoch: int = 0,
    model_config: Union[None, ModelConfig, dict] = None,
    spec_config_json: Optional[str] = None,
    metrics: Optional[Mapping[str, float]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
) -> Path:
    """Write a checkpoint that ``torch.load(..., weights_only=True)`` can read: tensors and plain
    Python only, configs as JSON strings. A directory (or a path without suffix) gets
    ``checkpoint.pt`` inside. Written to a temporary file and renamed, so a crash never leaves
    half a checkpoint."""
    model = unwrap(model)
    cfg = model_config if model_config is not None else model.config
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)
    payload = {
        "format": "raybird-checkpoint-v1",
        "model_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "spec_config": spec_config_json,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "metrics": _plain(dict(metrics or {})),
        "extra": _plain(dict(extra or {})),
    }
    return save_payload(payload, checkpoint_file(path_or_dir))


def save_payload(payload: dict, file: Path) -> Path:
    """``torch.save``, atomically (:func:`raybird.io.tables.write_file`): a crash never leaves
    half a checkpoint. Serialised in memory first: ``torch.save`` to a path names the archive's
    records after the file, and the bytes (hence the model id) must not depend on a staging name."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_file(str(file.parent), file.name, lambda path: Path(path).write_bytes(buf.getvalue()))
    return file


def export_for_inference(src: Union[str, os.PathLike], dst: Union[str, os.PathLike]) -> Path:
    """Copy of checkpoint ``src`` without optimizer and scheduler state (a third of the size
    for Adam), for shipping; weights, configs, metrics and the training history stay."""
    payload = read_payload(src)
    payload.update(optimizer_state=None, scheduler_state=None)
    return save_payload(payload, Path(dst))


def average_checkpoints(srcs: list[Union[str, os.PathLike]], dst: Union[str, os.PathLike]) -> Path:
    """Inference checkpoint whose weights are the mean of the ``srcs``' weights: checkpoint
    averaging, or a uniform "model soup" (Wortsman et al., 2022). Checkpoints of one run, or
    fine-tuned from one model, lie close enough in weight space that their average often scores
    better than any one of them. They must share the model and spectrogram configs. BatchNorm
    running statistics are averaged like the weights; integer buffers (batch counts) are the
    first's. The average's metrics are not known until it is scored, so ``metrics`` is empty
    and ``extra["averaged"]`` records each source's epoch and metrics; the rest (configs,
    epoch, training history) is the first's."""
    payloads = [read_payload(s) for s in srcs]
    if len(payloads) < 2:
        raise ValueError("averaging needs at least two checkpoints")
    first = payloads[0]
    for src, p in zip(srcs[1:], payloads[1:]):
        for key, what in (("model_config", "model"), ("spec_config", "spectrogram")):
            if p[key] != first[key]:
                raise ValueError(
                    f"{src}: its {what} config differs from the first checkpoint's ({p[key]} vs {first[key]})"
                )
    states = [p["model_state"] for p in payloads]
    mean = {
        k: (torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
        for k, v in states[0].items()
    }
    averaged = [{"source": str(s), "epoch": p["epoch"], "metrics": p["metrics"]} for s, p in zip(srcs, payloads)]
    payload = {
        **first,
        "model_state": mean,
        "optimizer_state": None,
        "scheduler_state": None,
        "metrics": {},
        "extra": {**first["extra"], "averaged": averaged},
    }
    return save_payload(payload, Path(dst))


def recalibrate_checkpoint(path: Union[str, os.PathLike], specs: np.ndarray, source: str, batch_size: int = 16) -> int:
    """Rewrite checkpoint file ``path`` with its BatchNorm statistics recomputed on ``specs``
    (``(N, H, W)`` tiles of its spectrogram settings; :func:`recalibrate_batchnorm`), recording
    ``source`` and the tile count in ``extra["bn_recalibrated"]``. Returns the tiles used."""
    model, payload = load_checkpoint(path)
    n = recalibrate_batchnorm(model, (specs[i : i + batch_size] for i in range(0, len(specs), batch_size)), "cpu")
    payload["model_state"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload["extra"] = {**payload["extra"], "bn_recalibrated": {"data": str(source), "tiles": n}}
    save_payload(payload, checkpoint_file(path))
    return n


def read_payload(src: Union[str, os.PathLike, bytes], map_location: Union[str, torch.device] = "cpu") -> dict:
    """A checkpoint's contents (``torch.load(weights_only=True)``: tensors and plain types) from a
    file, a run folder or the file's bytes."""
    f = io.BytesIO(src) if isinstance(src, bytes) else checkpoint_file(src)
    return torch.load(f, map_location=map_location, weights_only=True)


def load_checkpoint(
    src: Union[str, os.PathLike, bytes], map_location: Union[str, torch.device] = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the model from a checkpoint file, run folder or the file's bytes; returns
    ``(model, payload)`` with the model in eval mode. ``payload["spec_config"]`` feeds
    ``SpecConfig.from_json``."""
    payload = read_payload(src, map_location)
    model = ModelConfig.from_dict(payload["model_config"]).build()
    model.load_state_dict(payload["model_state"])
    return model.to(map_location).eval(), payload
