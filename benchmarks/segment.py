"""Segment throughput and the inference settings behind it.

    python -m benchmarks.segment [--model raybird/weights/default.pt] [--recordings 24] [--duration 60] [--quick]

Three tables, all measured in this run on the same synthetic recordings:

1. **ablation** -- the model alone on the recordings' tiles (decoded once), one setting changed
   at a time from plain PyTorch (fp32, NCHW, ``no_grad``, batch 8, 1 thread): ``inference_mode``,
   channels_last, BatchNorm folded into the convs, bf16 autocast, model batch, threads, and
   ``torch.compile`` with ``--compile``. The row marked "Predictor" is what ``raybird segment``
   uses on this machine.
2. **accuracy** -- foreground IoU against the synthetic truth masks with the most accurate
   setting (fp32) and with the Predictor's (fast) setting; the fast one must stay within 2 points.
3. **end to end** -- audio files -> Parquet (decode, spectrogram tiles, model, stitching,
   segments, writing): ``raybird.pipelines.segment.run`` on an embedded local Ray against
   ``raybird.pipelines.segment.run_local``, the same work in one process (plain PyTorch loop), in
   audio-seconds per wall-second. Ray's start-up is excluded (on a cluster it is already
   running; a warm-up run starts the workers), everything else is timed.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.common import best_time, machine, table
from raybird.inference import decode, predictor, recording
from raybird.io import tables
from raybird.models import checkpoint
from raybird.pipelines import segment
from raybird.synth.generator import generate_archive
from raybird.training import engine
from raybird.training.metrics import confusion, scores

IOU_BUDGET = 0.02  # the fast setting may lose at most 2 points of foreground IoU


def tile_seconds(cfg) -> float:
    """Audio per tile in a long recording: consecutive tiles advance by ``tile_step`` frames."""
    return cfg.tile_step * cfg.hop_length / cfg.sample_rate


def make_archive(folder: Path, n: int, duration: float, seed: int = 11) -> tuple[list[dict], float]:
    records = generate_archive(folder, n, seed=seed, duration_s=(duration, duration), p_empty=0.0)
    return records, sum(sf.info(r["audio"]).duration for r in records)


def decoded_tiles(records: list[dict], cfg, limit: int) -> np.ndarray:
    """The first ``limit`` spectrogram tiles (uint8, N x rows x frames) of the recordings."""
    tiles = []
    for r in records:
        tiles += [
            t for item in decode.recording_tiles(r["audio"], cfg) if isinstance(item, decode.Tiles) for t in item.spec
        ]
        if len(tiles) >= limit:
            break
    return np.stack(tiles[:limit])


# ---- 1. ablation ---------------------------------------------------------------------------------
def _infer(model, x: np.ndarray, settings: engine.DeviceSettings, grad_mode: str) -> torch.Tensor:
    """engine.predict_proba with the grad mode as a variable (predict_proba always uses
    inference_mode)."""
    ctx = torch.inference_mode() if grad_mode == "inference_mode" else torch.no_grad()
    with ctx, settings.autocast():
        logits = model(engine.spec_tensor(x, settings))
    return logits.float().softmax(dim=1)[:, 1]


def ablation(
    model_path: str, tiles: np.ndarray, sec_per_tile: float, compile_: bool = False, reps: int = 3
) -> list[dict]:
    """One row per setting: ms per tile (fastest of ``reps``) and audio-s per wall-s."""
    base, _ = checkpoint.load_checkpoint(model_path)
    bf16 = engine.native_bf16_cpu()
    fast = engine.precision_settings("cpu", "auto")
    rows = []

    def measure(name, model, settings, grad_mode="inference_mode", batch=8, threads=1, note=""):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:

            def work():
                for i in range(0, len(tiles), batch):
                    _infer(model, tiles[i : i + batch], settings, grad_mode)

            t = best_time(work, reps) / len(tiles)
        finally:
            torch.set_num_threads(old)
        chosen = (
            settings.amp_dtype == fast.amp_dtype
            and settings.channels_last
            and grad_mode == "inference_mode"
            and folded(model)
            and batch == predictor.CPU_BATCH
            and threads == 1
            and not note
        )
        rows.append(
            dict(
                setting=name,
                batch=batch,
                threads=threads,
                ms_per_tile=1e3 * t,
                x_realtime=sec_per_tile / t,
                x_per_core=sec_per_tile / (t * threads),
                predictor=chosen,
                note=note,
            )
        )

    def folded(model):
        return not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

    nchw, cl = engine.pick_device("cpu", amp=False, channels_last=False), engine.pick_device("cpu", amp=False)
    plain = copy.deepcopy(base)
    measure("plain: fp32, NCHW, no_grad", plain, nchw, "no_grad")
    measure("+ inference_mode", plain, nchw)
    plain_cl = cl.prepare_model(copy.deepcopy(base))
    measure("+ channels_last", plain_cl, cl)
    fold = cl.prepare_model(engine.fold_batchnorm(copy.deepcopy(base)))
    measure("+ BatchNorm folded into convs", fold, cl)
    best_name, best_settings = "+ BatchNorm folded into convs", cl
    if bf16:  # emulated bf16 (no AVX512-BF16/AMX) is slower than fp32: not worth a row
        best_name, best_settings = "+ bf16 autocast", engine.pick_device("cpu", amp="bf16")
        measure(best_name, fold, best_settings)
    for batch in (1, 2, 4, 16):
        measure(f"{best_name.lstrip('+ ')}, batch {batch}", fold, best_settings, batch=batch)
    measure(f"{best_name.lstrip('+ ')}, 2 threads", fold, best_settings, batch=predictor.CPU_BATCH, threads=2)
    cfg = base.config
    for width in sorted({cfg.width // 2, cfg.width * 2} - {0}):  # the width lever: cost only (untrained)
        other = best_settings.prepare_model(engine.fold_batchnorm(replace(cfg, width=width).build()))
        measure(
            f"{best_name.lstrip('+ ')}, width {width} instead of {cfg.width}",
            other,
            best_settings,
            batch=predictor.CPU_BATCH,
            note="untrained, timing only",
        )
    if compile_:
        t0 = time.perf_counter()
        compiled = torch.compile(copy.deepcopy(fold))
        _infer(compiled, tiles[: predictor.CPU_BATCH], best_settings, "inference_mode")
        cost = time.perf_counter() - t0
        measure(
            "+ torch.compile",
            compiled,
            best_settings,
            batch=predictor.CPU_BATCH,
            note=f"compiling took {cost:.0f} s per process",
        )
    plain_ms = rows[0]["ms_per_tile"]
    for r in rows:
        r["speedup"] = plain_ms / r["ms_per_tile"]
    return rows


# ---- 2. accuracy ---------------------------------------------------------------------------------
def accuracy(ckpt: checkpoint.Checkpoint, records: list[dict], precisions=("fp32", "auto")) -> list[dict]:
    """Pooled foreground IoU against the truth masks, per precision; ``agreement``: IoU of each
    mask with the fp32 mask."""
    masks = {p: [] for p in precisions}
    truths = []
    for r in records:
        truths.append(np.load(r["truth"])["mask"].astype(bool))
    for p in precisions:
        model_actor = predictor.Predictor(ckpt.data, "cpu", 1, predictor.CPU_BATCH, p)
        for r in records:
            items = decode.recording_tiles(r["audio"], ckpt.cfg)
            stitcher = recording.stitch(
                items, model_actor, recording.RecordingStitcher(ckpt.cfg, recording.SegmentOptions())
            )
            _, results = stitcher.finish()
            masks[p].append(tables.decode_mask(results[0].mask, ckpt.cfg.n_rows, results[0].n_frames))
    rows = []
    ref = precisions[0]
    for p in precisions:
        settings = engine.precision_settings("cpu", p)
        pooled = sum(confusion(m, t) for m, t in zip(masks[p], truths))
        agree = sum(confusion(m, a) for m, a in zip(masks[p], masks[ref]))
        rows.append(
            dict(precision=p, arithmetic=settings.precision, iou=scores(pooled)["iou"], agreement=scores(agree)["iou"])
        )
    for r in rows:
        r["delta_points"] = 100 * (r["iou"] - rows[0]["iou"])
    return rows


# ---- 3. end to end -------------------------------------------------------------------------------
def end_to_end(
    ckpt: checkpoint.Checkpoint, folder: Path, secs: float, work: Path, cpus: int, ray_configs: list[dict]
) -> list[dict]:
    """``run_local`` with 1 and ``cpus`` threads against ``run`` in each of ``ray_configs``
    (keyword arguments of :func:`raybird.pipelines.segment.run` plus a "name"); ratios are to the faster loop.
    The last loop rows each turn one post-processing step off (:data:`VARIANTS`): its cost."""
    rows = []
    for threads in sorted({1, cpus}):
        t = time.perf_counter()
        loop = segment.run_local([str(folder)], str(work / f"loop{threads}"), ckpt, threads=threads)
        rows.append(
            dict(
                run=f"single-process loop, {threads} thread{'s' if threads > 1 else ''}",
                wall_s=time.perf_counter() - t,
                recordings=loop.recordings,
                segments=loop.segments,
            )
        )
    for i, cfg in enumerate(ray_configs):
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        t = time.perf_counter()
        dist = segment.run([str(folder)], str(work / f"ray{i}"), ckpt, **kwargs)
        rows.append(
            dict(
                run=f"Ray Data: {cfg['name']}",
                wall_s=time.perf_counter() - t,
                recordings=dist.recordings,
                segments=dist.segments,
            )
        )
    if len({(r["recordings"], r["segments"]) for r in rows}) != 1:
        raise AssertionError(f"the runs disagree: {rows}")
    n_full = len(rows)
    for i, (what, options) in enumerate(VARIANTS):
        t = time.perf_counter()
        variant = segment.run_local([str(folder)], str(work / f"variant{i}"), ckpt, options, threads=cpus)
        rows.append(
            dict(
                run=f"single-process loop, {cpus} threads, {what}",
                wall_s=time.perf_counter() - t,
                recordings=variant.recordings,
                segments=variant.segments,
            )
        )
    best_loop = min(r["wall_s"] for r in rows[:n_full] if r["run"].startswith("single"))
    for r in rows:
        r.update(x_realtime=secs / r["wall_s"], x_per_core=secs / r["wall_s"] / cpus, ratio=best_loop / r["wall_s"])
    return rows


VARIANTS = [
    ("regions not cut (`--split-depth off`)", recording.SegmentOptions(split_depth_db=None)),
    ("edges not refined on the audio (`--edges off`)", recording.SegmentOptions(edge_fraction=None)),
]
RAY_CONFIGS = [
    dict(name="raybird segment defaults (an actor per CPU)"),
    dict(name="4 actors x 0.5 CPU", actors=4, actor_cpus=0.5),
]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(checkpoint.DEFAULT_MODEL), help="checkpoint (default: the shipped model)")
    ap.add_argument("--recordings", type=int, default=24)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per recording")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the embedded Ray and threads of the loop")
    ap.add_argument("--tiles", type=int, default=16, help="tiles per ablation measurement")
    ap.add_argument("--accuracy-recordings", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row (compiling costs ~30-60 s)")
    ap.add_argument("--skip-ablation", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 short recordings, few tiles")
    a = ap.parse_args(argv)
    if a.quick:
        a.recordings, a.duration, a.tiles, a.accuracy_recordings = 2, 6.0, 4, 2
    print(f"\n## segment benchmark\n\nmachine: {machine()}; model {a.model}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="raybird-bench-segment-"))
    out: dict = {}
    try:
        ckpt = checkpoint.read_checkpoint(a.model)
        model_file = work / "model.pt"
        model_file.write_bytes(ckpt.data)
        records, secs = make_archive(work / "archive", a.recordings, a.duration)
        spt = tile_seconds(ckpt.cfg)

        if not a.skip_ablation:
            tiles = decoded_tiles(records, ckpt.cfg, a.tiles)
            out["ablation"] = rows = ablation(str(model_file), tiles, spt, a.compile, reps=2 if a.quick else 3)
            print(
                f"\n### model alone ({ckpt.model_id}, {len(tiles)} tiles of {ckpt.cfg.n_rows} x "
                f"{ckpt.cfg.tile_frames}, {spt:.2f} audio-s each)\n"
            )
            print(
                table(
                    ["setting", "batch", "threads", "ms / tile", "audio-s / s", "per core", "vs plain", "Predictor"],
                    [
                        [
                            r["setting"] + (f" ({r['note']})" if r["note"] else ""),
                            r["batch"],
                            r["threads"],
                            f"{r['ms_per_tile']:.1f}",
                            f"{r['x_realtime']:.0f}",
                            f"{r['x_per_core']:.0f}",
                            f"{r['speedup']:.2f}x",
                            "yes" if r["predictor"] else "",
                        ]
                        for r in rows
                    ],
                ),
                flush=True,
            )

        out["accuracy"] = acc = accuracy(ckpt, records[: a.accuracy_recordings])
        ok = all(r["delta_points"] >= -100 * IOU_BUDGET for r in acc)
        print(
            f"\n### accuracy of the fast setting ({min(len(records), a.accuracy_recordings)} synthetic "
            f"recordings, pooled pixels)\n"
        )
        print(
            table(
                ["precision", "arithmetic here", "foreground IoU vs truth", "change (points)", "mask IoU with fp32"],
                [
                    [
                        r["precision"],
                        r["arithmetic"],
                        f"{r['iou']:.4f}",
                        f"{r['delta_points']:+.2f}",
                        f"{r['agreement']:.4f}",
                    ]
                    for r in acc
                ],
            )
        )
        print(
            f"\nwithin {100 * IOU_BUDGET:.0f} points of the most accurate setting: {'yes' if ok else 'NO'}", flush=True
        )
        out["accuracy_ok"] = ok

        import ray

        from raybird.pipelines.runtime import init_ray

        started = not ray.is_initialized()  # (a test's Ray is left running)
        init_ray(num_cpus=a.cpus)
        ray.data.DataContext.get_current().enable_progress_bars = False
        segment.run([r["audio"] for r in records[:2]], str(work / "warmup"), ckpt)  # worker start-up, imports
        out["end_to_end"] = e2e = end_to_end(ckpt, work / "archive", secs, work, a.cpus, RAY_CONFIGS)
        if started:
            ray.shutdown()
        print(
            f"\n### end to end: {len(records)} recordings, {secs:.0f} audio-s -> Parquet, "
            f"{a.cpus} CPUs, precision auto\n"
        )
        print(
            table(
                ["run", "wall s", "audio-s / s", "per core", "vs faster loop"],
                [
                    [
                        r["run"],
                        f"{r['wall_s']:.1f}",
                        f"{r['x_realtime']:.0f}",
                        f"{r['x_per_core']:.0f}",
                        f"{r['ratio']:.2f}",
                    ]
                    for r in e2e
                ],
            ),
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
