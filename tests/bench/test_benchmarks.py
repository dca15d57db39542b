"""Smoke runs of the benchmarks on tiny inputs: they run end to end and their tables hold sane
numbers (the measurements themselves need a quiet machine: ``./dev.sh bench``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import archive, memory
from benchmarks import segment as seg_bench
from raybird.inference import decode, predictor
from raybird.models import checkpoint

ROOT = Path(__file__).resolve().parents[2]

MB = 2**20


def test_gpu_benchmark_tiny_on_cpu_without_ray():
    """gpu.py is plain PyTorch: it must not import Ray (a GPU box may not have it set up)."""
    code = (
        "import json, sys; from benchmarks import gpu; r = gpu.main(['--tiny']); "
        "print(json.dumps(dict(r, ray='ray' in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert not r["ray"]
    assert r["device"].startswith("CPU")
    assert [(p["setting"], p["batch"]) for p in r["predictor"]] == [("fp32", 2), ("fp32", 4), ("bf16", 2), ("bf16", 4)]
    for p in r["predictor"]:
        # a tiny tile is 112 new frames = 0.65 audio-s; a 64 x 128 width-4 U-Net runs far above real time
        assert p["x_realtime"] == pytest.approx(p["tiles_per_s"] * 112 * 128 / 22050)
        assert p["tiles_per_s"] > 20
    assert [t["setting"] for t in r["train"]] == ["fp32", "bf16 autocast"]
    assert all(t["samples_per_s"] > 2 for t in r["train"])


def test_segment_benchmark_quick(ray_session):
    """Two 6 s recordings with the shipped model: ablation, accuracy check and Ray vs loop."""
    r = seg_bench.main(["--quick"])
    rows = r["ablation"]
    assert rows[0]["setting"].startswith("plain") and rows[0]["speedup"] == 1.0
    for row in rows:
        assert row["ms_per_tile"] > 0
        assert row["x_realtime"] * row["ms_per_tile"] / 1e3 == pytest.approx(448 * 128 / 22050)
    chosen = [row for row in rows if row["predictor"]]
    assert len(chosen) == 1 and chosen[0]["batch"] == seg_bench.segment.CPU_BATCH
    assert chosen[0]["speedup"] > 1.5  # the Predictor's settings pay (4-5x measured on the 2-core EPYC)

    fp32, fast = r["accuracy"]
    assert (fp32["precision"], fp32["agreement"], fp32["delta_points"]) == ("fp32", 1.0, 0.0)
    assert 0 < fp32["iou"] <= 1 and fast["agreement"] > 0.95
    assert fast["delta_points"] >= -2 and r["accuracy_ok"]

    e2e = r["end_to_end"]
    *timed, uncut, coarse = e2e  # the last rows: the loop without one post-processing step each
    assert "--split-depth off" in uncut["run"] and uncut["segments"] <= timed[0]["segments"]
    assert "--edges off" in coarse["run"] and coarse["segments"] == timed[0]["segments"]
    loops = [row for row in timed if row["run"].startswith("single-process")]
    assert len(loops) == 2 and len(timed) == 2 + len(seg_bench.RAY_CONFIGS)
    assert max(row["ratio"] for row in loops) == 1.0
    fastest = max(row["x_realtime"] for row in loops)
    for row in e2e:
        assert row["recordings"] == 2 and row["x_realtime"] > 0
        assert row["x_realtime"] == pytest.approx(fastest * row["ratio"])


def test_tree_sampler_counts_children():
    """A parent holding 300 MB and its child holding 200 MB: the PSS sum sees both, once."""
    code = (
        "import subprocess, sys, time, numpy as np; a = np.ones(300 * 2**20, np.uint8); "
        "c = subprocess.Popen([sys.executable, '-c', 'import time, numpy as np; b = np.ones(200 * 2**20, np.uint8); "
        "time.sleep(3)']); c.wait()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = memory.TreeSampler(proc.pid)
    while proc.poll() is None:
        sampler.sample()
    assert proc.returncode == 0
    assert sampler.n_processes == 2
    assert 500 * MB < sampler.peak_pss < 700 * MB
    assert sampler.peak_rss >= sampler.peak_pss
    hwm, cmd = sampler.largest()
    assert 300 * MB < hwm < 400 * MB and "np.ones(300" in cmd
    assert set(sampler.groups_at_peak) == {"driver", "other Ray services"}


def test_memory_measure_local(tmp_path):
    """The child-process path on a 20 s recording, single-process loop (no Ray)."""
    audio = tmp_path / "long.flac"
    secs = memory.write_long_recording(audio, 20.0)
    import soundfile as sf

    assert sf.info(str(audio)).duration == pytest.approx(secs) and secs == pytest.approx(20.0)
    r = memory.measure("local", audio, tmp_path / "out", cpus=1)
    assert r["processes"] == 1 and r["wall_s"] > 0 and r["segments"] >= 0
    assert 100 * MB < r["peak_pss"] <= r["peak_rss"] and 100 * MB < r["largest_hwm"] < 2048 * MB
    assert len(list((tmp_path / "out" / "masks").glob("*.parquet"))) == 1


@pytest.mark.slow
def test_train_benchmark_quick(ray_session):
    from benchmarks import train as train_bench

    r = train_bench.main(["--quick"])
    single, ddp, ray_train = r["rows"]
    assert single["samples"] == ddp["samples"] == ray_train["samples"] == r["tiles"] > 0
    assert all(row["per_s"] > 0 for row in r["rows"])
    assert r["overhead"] == pytest.approx(1 - ray_train["per_s"] / ddp["per_s"])
    assert np.isfinite(r["startup_s"])


def _rss() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024


def test_predictor_heap_stays_flat(tmp_path):
    """What the memory benchmark found: without trimming glibc's heap after each batch the model
    actor grew ~5 MB per batch of 4 tiles (here: > 100 MB over these 60 batches with the trim
    switched off); with it, RSS grows by about the outputs kept."""
    from raybird.synth.generator import generate_archive

    rec = generate_archive(tmp_path, 1, seed=4, duration_s=(30.0, 30.0), p_empty=0.0)[0]
    ckpt = checkpoint.read_checkpoint(None)
    tiles = [t for t in decode.recording_tiles(rec["audio"], ckpt.cfg, per_item=10**6) if isinstance(t, decode.Tiles)]
    model_actor = predictor.Predictor(ckpt.data, "cpu", 1, 4)
    outputs = [model_actor(tiles[0])]
    start = _rss()
    outputs += [model_actor(tiles[0]) for _ in range(20)]
    kept = sum(o.prob[0].base.nbytes for o in outputs[1:])  # each call's probabilities
    assert _rss() - start < kept + 40 * MB


def test_archive_benchmark_plans_a_manifest_against_its_journal(tmp_path):
    """The manifest part of benchmarks/archive.py on 3,000 entries: discovery finds them all,
    resume planning leaves the half the journal does not commit, and a run lists all of them
    before it starts (fewer than listing.STREAM_AFTER)."""
    rows = archive.manifest(tmp_path, 3000)
    assert [r[1] for r in rows] == ["3,000", "1,500", "3,000"]
    assert all(float(r[2]) < 60 and 0 < float(r[3]) < 2048 for r in rows), rows


def test_archive_benchmark_short_files_are_real_and_distinct(tmp_path, real_data):
    secs = archive.write_short_files(tmp_path, 3, data=real_data.parent)
    import soundfile as sf

    audio = [sf.read(p)[0] for p in sorted(tmp_path.glob("*.wav"))]
    assert secs == 30.0 and [len(a) for a in audio] == [archive.SR * 10] * 3
    assert not np.allclose(audio[0], audio[1]) and all(np.abs(a).max() > 0.01 for a in audio)
