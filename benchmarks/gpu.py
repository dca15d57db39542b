"""Plain-PyTorch throughput of the predictor and the train step, for a GPU (no Ray imported).

    python -m benchmarks.gpu [--model raybird/weights/default.pt] [--compile] [--batches 64,128,256]
    python -m benchmarks.gpu --tiny      # CPU smoke run: tiny U-Net, small tiles

The predictor is ``raybird.training.engine.predict_proba`` as ``raybird segment`` calls it: uint8 tiles
copied from (pinned) host memory, divided on the device, bf16 autocast, channels_last,
BatchNorm folded, softmax, probabilities quantized to uint8 on the device and copied back.
The train step is ``raybird.training.engine.train_step`` (bf16 autocast, channels_last, CE + Dice, Adam,
augmentation on the device). Reported: tiles per second and audio-seconds per second (one tile
advances ``tile_step`` frames, 2.6 s at the default preset), training samples per second. Times
are the fastest of a few repeats, each ended by a device synchronisation.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from benchmarks.common import machine, table
from raybird.dsp.spectrogram import SpecConfig
from raybird.models import checkpoint
from raybird.models.networks import ModelConfig
from raybird.training import engine


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({machine()})"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(dev)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return best


def predictor_rows(
    model: torch.nn.Module, cfg: SpecConfig, dev: torch.device, batches, compile_: bool, reps: int
) -> list[dict]:
    rows = []
    variants = [("fp32", engine.precision_settings(dev, "fp32")), ("bf16", engine.precision_settings(dev, "bf16"))]
    for name, settings in variants:
        m = settings.prepare_model(engine.fold_batchnorm(copy.deepcopy(model)))
        runs = [(name, m)]
        if compile_:
            runs.append((name + " + torch.compile", torch.compile(m)))
        for label, net in runs:
            for bs in batches:
                host = torch.randint(0, 256, (bs, cfg.n_rows, cfg.tile_frames), dtype=torch.uint8)
                host = host.pin_memory() if dev.type == "cuda" else host
                t = _timed(lambda: engine.predict_proba(net, host, settings, quantize=True), dev, reps)
                rows.append(dict(setting=label, batch=bs, tiles_per_s=bs / t))
    return rows


def train_rows(
    model_cfg: ModelConfig, cfg: SpecConfig, dev: torch.device, batches, compile_: bool, reps: int
) -> list[dict]:
    from raybird.training.augment import AugmentConfig

    rows = []
    loss_fn = engine.make_loss("ce+dice")
    for name, precision in (("fp32", "fp32"), ("bf16 autocast", "bf16")):
        settings = engine.precision_settings(dev, precision)
        variants = [(name, False)] + ([(name + " + torch.compile", True)] if compile_ else [])
        for label, comp in variants:
            for bs in batches:
                torch.manual_seed(0)
                model = settings.prepare_model(model_cfg.build())
                net = torch.compile(model) if comp else model
                opt = engine.make_optimizer(net)
                gen = torch.Generator(device=dev).manual_seed(0)
                batch = {
                    "spec": torch.randint(0, 256, (bs, cfg.n_rows, cfg.tile_frames), dtype=torch.uint8, device=dev),
                    "mask": torch.randint(0, 2, (bs, cfg.n_rows, cfg.tile_frames), dtype=torch.uint8, device=dev),
                }
                t = _timed(
                    lambda: engine.train_step(
                        net, batch, opt, loss_fn, settings, augment=AugmentConfig(), generator=gen
                    ),
                    dev,
                    reps,
                )
                rows.append(dict(setting=label, batch=bs, samples_per_s=bs / t))
    return rows


def _vs_fp32(row: dict, rows: list[dict], key: str) -> float:
    """``row``'s throughput over the plain fp32 row's at the same batch size (same process)."""
    base = next(r for r in rows if r["setting"] == "fp32" and r["batch"] == row["batch"])
    return row[key] / base[key]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models" / "default.pt"))
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--batches", default="64,256", help="predictor batch sizes")
    ap.add_argument("--train-batches", default="32,128", help="train step batch sizes")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also with torch.compile")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: width-4 depth-3 U-Net, 64 x 128 tiles")
    a = ap.parse_args(argv)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if a.tiny:
        model_cfg = ModelConfig(width=4, depth=3)
        model = model_cfg.build().eval()
        cfg = SpecConfig(fmax=2757.0, tile_frames=128, tile_overlap=16)  # 64 rows x 128 frames
        batches, train_batches, reps = [2, 4], [2], 2
        torch.set_num_threads(1)  # OpenMP threads waiting on each other crawl on a busy machine
    else:
        model, payload = checkpoint.load_checkpoint(a.model, map_location="cpu")
        model_cfg = ModelConfig.from_dict(payload["model_config"])
        cfg = SpecConfig.from_json(payload["spec_config"])
        batches = [int(b) for b in a.batches.split(",")]
        train_batches = [int(b) for b in a.train_batches.split(",")]
        reps = a.reps
    model = model.to(dev)
    sec_per_tile = cfg.tile_step * cfg.hop_length / cfg.sample_rate
    print(
        f"\n## GPU benchmark (plain PyTorch)\n\ndevice: {device_name(dev)}; torch {torch.__version__}; "
        f"model {model_cfg.arch} width {model_cfg.width} depth {model_cfg.depth}; tiles {cfg.n_rows} x "
        f"{cfg.tile_frames} ({sec_per_tile:.2f} audio-s each)",
        flush=True,
    )
    pred = predictor_rows(model, cfg, dev, batches, a.compile, reps)
    for r in pred:
        r["x_realtime"] = r["tiles_per_s"] * sec_per_tile
    print("\n### predictor (uint8 tiles from host -> probabilities on host)\n")
    print(
        table(
            ["setting", "batch", "tiles / s", "audio-s / s", "vs fp32"],
            [
                [
                    r["setting"],
                    r["batch"],
                    f"{r['tiles_per_s']:.1f}",
                    f"{r['x_realtime']:.0f}",
                    f"{_vs_fp32(r, pred, 'tiles_per_s'):.2f}x",
                ]
                for r in pred
            ],
        ),
        flush=True,
    )
    train = train_rows(model_cfg, cfg, dev, train_batches, a.compile, reps)
    print("\n### train step (forward, backward, Adam, augmentation on the device)\n")
    print(
        table(
            ["setting", "batch", "samples / s", "vs fp32"],
            [
                [r["setting"], r["batch"], f"{r['samples_per_s']:.1f}", f"{_vs_fp32(r, train, 'samples_per_s'):.2f}x"]
                for r in train
            ],
        ),
        flush=True,
    )
    return dict(device=device_name(dev), predictor=pred, train=train)


if __name__ == "__main__":
    main()
