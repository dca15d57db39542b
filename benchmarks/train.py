"""Ray Train overhead: the same data-parallel training with and without Ray.

    python -m benchmarks.train [--recordings 48] [--duration 8] [--epochs 2] [--quick]

Three runs of the same step (``raybird.training.engine.train_step``: U-Net, CE + Dice, Adam,
augmentation, batch 8 per worker) on the same tiles (a synthetic archive ingested to shards),
in samples per second over the timed epochs (a first, untimed epoch warms up):

* plain PyTorch, one process with ``--workers`` threads, batch ``8 * workers``;
* plain PyTorch DDP, ``--workers`` processes x 1 thread (gloo), started by hand;
* Ray Train, ``TorchTrainer`` with ``--workers`` workers at ``--cpus-per-worker`` CPUs (raybird's
  default 0.5), fed by Ray Data (``iter_torch_batches``) as ``raybird train`` is.

Ray's overhead is 1 - Ray Train / plain DDP: everything the same but who starts the processes
and feeds them. The time to start the workers and the trainer (``fit`` wall time less the timed
epochs) is reported apart: it is paid once per run, not per sample.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from benchmarks.common import machine, table

BATCH = 8  # per worker, the report's batch


COLUMNS = ["spec", "mask", "valid_frames", "n_rows", "n_frames"]


def train_tiles(data: str) -> dict:
    """All labelled tiles of an ingest output (every split: only throughput counts here) as
    arrays, what the plain loops read."""
    from raybird.pipelines.shards import decode_batch

    t = pads.dataset(os.path.join(data, "shards"), format="parquet").to_table(columns=COLUMNS)
    t = t.filter(pc.is_valid(t["mask"]))
    if not len(t):
        raise ValueError(f"no labelled tiles under {data}")
    return decode_batch(t)


def train_dataset(data: str):
    """The same tiles as a materialized Ray Dataset, decoded as training decodes them
    (raybird.pipelines.shards.split_tiles, every split)."""
    import ray

    from raybird.pipelines.shards import split_tiles

    ds = ray.data.read_parquet(os.path.join(data, "shards")).select_columns(COLUMNS)
    first = ds.take(1)[0]
    return split_tiles(ds, None, (first["n_rows"], first["n_frames"])).materialize()


def _setup(cfg: dict, threads: int, seed: int):
    import torch

    from raybird.models.networks import ModelConfig
    from raybird.training import engine
    from raybird.training.augment import AugmentConfig

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    settings = engine.pick_device("cpu")
    model = settings.prepare_model(ModelConfig(width=cfg["width"], depth=cfg["depth"]).build())
    return (
        torch,
        engine,
        settings,
        model,
        engine.make_loss("ce+dice"),
        AugmentConfig(strength=0.5),
        torch.Generator().manual_seed(seed),
    )


def _plain_epochs(
    arrays: dict, cfg: dict, threads: int, batch: int, rank: int = 0, world: int = 1, wrap=None
) -> tuple[int, float]:
    """Warm-up epoch, then ``cfg["epochs"]`` timed epochs over this rank's share of the tiles:
    ``(samples, seconds)`` of the timed part."""
    torch, engine, settings, model, loss_fn, augment, gen = _setup(cfg, threads, rank)
    if wrap is not None:
        model = wrap(model)
    opt = engine.make_optimizer(model)
    idx_all = np.arange(rank, len(arrays["spec"]), world)
    rng = np.random.default_rng(rank)
    samples, start = 0, 0.0
    for epoch in range(cfg["epochs"] + 1):
        if epoch == 1:
            if world > 1:
                torch.distributed.barrier()
            start = time.perf_counter()
        order = rng.permutation(idx_all)
        for i in range(0, len(order), batch):
            pick = order[i : i + batch]
            b = {k: arrays[k][pick] for k in ("spec", "mask", "valid_frames")}
            engine.train_step(model, b, opt, loss_fn, settings, augment=augment, generator=gen)
            samples += len(pick) if epoch else 0
    if world > 1:
        torch.distributed.barrier()
    return samples, time.perf_counter() - start


def _ddp_worker(rank: int, world: int, port: int, data_file: str, cfg: dict, result_file: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    arrays = dict(np.load(data_file))
    samples, secs = _plain_epochs(arrays, cfg, 1, BATCH, rank, world, wrap=DistributedDataParallel)
    total = torch.tensor([float(samples)])
    dist.all_reduce(total)
    if rank == 0:
        Path(result_file).write_text(json.dumps(dict(samples=int(total), seconds=secs)))
    dist.barrier()
    dist.destroy_process_group()
    # torch 2.13's gloo aborts ("terminate called without an active exception") in about 1 in 5
    # process exits after a clean destroy_process_group; the work is done and written, so leave
    # without running the C++ destructors (0 aborts in 40 runs, against 6 in 30 without).
    os._exit(0)


def plain_ddp(arrays: dict, cfg: dict, workers: int, work: Path) -> tuple[int, float]:
    import torch.multiprocessing as mp

    data_file, result_file = work / "tiles.npz", work / "ddp.json"
    np.savez(data_file, **arrays)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _ddp_worker, args=(workers, port, str(data_file), cfg, str(result_file)), nprocs=workers, start_method="spawn"
    )
    r = json.loads(result_file.read_text())
    return r["samples"], r["seconds"]


def _ray_loop(config: dict) -> None:
    """The training half of raybird.pipelines.train.train_loop_per_worker, timed (no validation or
    checkpoints: the same work with or without Ray)."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    cfg = config["cfg"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch_, engine, settings, _, loss_fn, augment, gen = _setup(cfg, torch.get_num_threads(), rank)
    from raybird.models.networks import ModelConfig

    model = ray.train.torch.prepare_model(
        settings.prepare_model(ModelConfig(width=cfg["width"], depth=cfg["depth"]).build())
    )
    opt = engine.make_optimizer(model)
    shard = ray.train.get_dataset_shard("train")
    samples, start = 0, 0.0
    for epoch in range(cfg["epochs"] + 1):
        if epoch == 1:
            dist.barrier()
            start = time.perf_counter()
        for batch in shard.iter_torch_batches(
            batch_size=BATCH, local_shuffle_buffer_size=4 * BATCH, local_shuffle_seed=epoch
        ):
            engine.train_step(model, batch, opt, loss_fn, settings, augment=augment, generator=gen)
            samples += len(batch["spec"]) if epoch else 0
    dist.barrier()
    secs = time.perf_counter() - start
    total = torch.tensor([float(samples)])
    dist.all_reduce(total)
    if rank == 0:  # one node here: a file is the simplest way back (metrics come back with checkpoints only)
        Path(config["result_file"]).write_text(
            json.dumps(dict(samples=int(total), seconds=secs, threads=torch.get_num_threads()))
        )


def ray_train(data: str, cfg: dict, workers: int, cpus_per_worker: float, storage: Path) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    dataset = train_dataset(data)
    storage.mkdir(parents=True, exist_ok=True)
    result_file = storage / "result.json"
    t = time.perf_counter()
    trainer = TorchTrainer(
        _ray_loop,
        train_loop_config={"cfg": cfg, "result_file": str(result_file)},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(name="bench", storage_path=str(storage)),
        datasets={"train": dataset},
    )
    trainer.fit()
    wall = time.perf_counter() - t
    return {**json.loads(result_file.read_text()), "wall": wall}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=48)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus-per-worker", type=float, default=0.5)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the embedded Ray")
    ap.add_argument("--quick", action="store_true", help="smoke run: few tiles, a tiny U-Net, 1 timed epoch")
    a = ap.parse_args(argv)
    if a.quick:
        a.recordings, a.duration, a.epochs, a.width, a.depth = 6, 4.0, 1, 4, 3
    cfg = dict(width=a.width, depth=a.depth, epochs=a.epochs)
    print(f"\n## train benchmark\n\nmachine: {machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="raybird-bench-train-"))
    out: dict = {}
    try:
        from raybird.pipelines import ingest
        from raybird.synth.generator import generate_archive

        generate_archive(work / "archive", a.recordings, seed=5, duration_s=(a.duration, a.duration), p_empty=0.0)
        ingest.run_local([str(work / "archive")], str(work / "data"))
        arrays = train_tiles(str(work / "data"))
        n = len(arrays["spec"])

        single = _plain_epochs(arrays, cfg, a.workers, BATCH * a.workers)
        ddp = plain_ddp(arrays, cfg, a.workers, work)
        import ray

        from raybird.pipelines.runtime import init_ray

        started = not ray.is_initialized()  # (a test's Ray is left running)
        init_ray(num_cpus=a.cpus)
        ray.data.DataContext.get_current().enable_progress_bars = False
        rt = ray_train(str(work / "data"), cfg, a.workers, a.cpus_per_worker, work / "runs")
        if started:
            ray.shutdown()

        rows = [
            dict(
                run=f"plain PyTorch, 1 process x {a.workers} threads, batch {BATCH * a.workers}",
                samples=single[0],
                seconds=single[1],
            ),
            dict(
                run=f"plain PyTorch DDP, {a.workers} processes x 1 thread, batch {BATCH} each",
                samples=ddp[0],
                seconds=ddp[1],
            ),
            dict(
                run=f"Ray Train, {a.workers} workers x {a.cpus_per_worker:g} CPU ({rt['threads']} thread), "
                f"batch {BATCH} each",
                samples=rt["samples"],
                seconds=rt["seconds"],
            ),
        ]
        for r in rows:
            r["per_s"] = r["samples"] / r["seconds"]
        overhead = 1 - rows[2]["per_s"] / rows[1]["per_s"]
        startup = rt["wall"] - rt["seconds"] * (a.epochs + 1) / a.epochs
        out = dict(rows=rows, overhead=overhead, startup_s=startup, tiles=n)
        print(
            f"\n### training throughput: {n} labelled tiles (256 x 512), U-Net width {a.width} depth {a.depth}, "
            f"{a.epochs} timed epoch(s) after 1 warm-up\n"
        )
        print(
            table(
                ["run", "samples", "seconds", "samples / s", "vs DDP"],
                [
                    [
                        r["run"],
                        r["samples"],
                        f"{r['seconds']:.1f}",
                        f"{r['per_s']:.2f}",
                        f"{r['per_s'] / rows[1]['per_s']:.2f}",
                    ]
                    for r in rows
                ],
            )
        )
        print(
            f"\nRay Train overhead (1 - Ray Train / plain DDP): {100 * overhead:.1f} %; "
            f"start-up of the trainer and its workers (paid once): ~{startup:.0f} s",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
