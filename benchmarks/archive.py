"""Archive scale: many short recordings, a million-entry manifest, one long recording.

    python -m benchmarks.archive [--recordings 500] [--manifest 1000000] [--hours 2] [--quick]

1. **Many short files.** ``--recordings`` recordings of 10 s cut from the real recordings in
   ``../shared/data`` (every whole 10 s of the unlabelled soundscapes and the labelled sets,
   mono, resampled to 22.05 kHz; each recording one clip plus another at -6 dB, so no two are
   alike), 16-bit WAV. Timed as a user runs them, a fresh process each: ``raybird segment``
   (embedded local Ray on 2 CPUs, its start-up included), ``raybird segment --local``, and
   scikit-maad's ROI recipe (:mod:`benchmarks.maad_peer`) over the same files in one process.
   Wall seconds, audio-seconds per second, Parquet files written, ratio to the peer's speed.
2. **Where a short recording's seconds go**: CPU seconds per stage over the first 100
   recordings in one thread, as one model actor spends them (decode and spectrogram tiles, the
   model, stitching, segment edges on the audio, writing).
3. **A million-entry manifest**: discovery (:func:`raybird.io.storage.discover`), resume
   planning against a run whose journal commits half of the entries (the files need not
   exist: neither step opens them), and what a run lists and plans before its actors start
   (:class:`raybird.pipelines.listing.Listing`; the rest streams), each in a fresh process:
   wall time and peak RSS.
4. **One long recording** (``--hours``, default 2): the Ray job end to end (start-up
   included) on 2 CPUs, real-time factor and the peak memory of all its processes
   (:mod:`benchmarks.memory`).

Goals (issue 31): the Ray job at least as fast as the peer on the short files; discovery and
planning under 60 s and 1 GB; at least 100x real time and 2 GB on the long recording.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SR = 22050
CLIP_S = 10.0
MB = 2**20


def real_clips(data: Path = DATA, seconds: float = CLIP_S) -> list[np.ndarray]:
    """Every whole ``seconds`` of the real recordings (unlabelled and labelled sets), mono at
    :data:`SR`."""
    import soundfile as sf
    import soxr

    paths = sorted(p for d in ("unlabelled", "real") for p in (data / d).rglob("*") if p.suffix in (".flac", ".wav"))
    n = int(seconds * SR)
    clips = []
    for p in paths:
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        x = soxr.resample(x, sr, SR) if sr != SR else x
        clips += [x[i : i + n] for i in range(0, len(x) - n + 1, n)]
    return clips


def write_short_files(folder: Path, n: int, seed: int = 5, data: Path = DATA) -> float:
    """``n`` recordings of :data:`CLIP_S` s (module docstring) into ``folder``; their seconds."""
    import soundfile as sf

    clips = real_clips(data)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        i, j = rng.integers(len(clips), size=2)
        x = clips[i] + 0.5 * clips[j]
        sf.write(folder / f"rec{k:05d}.wav", x / max(1.0, np.abs(x).max() / 0.99), SR, subtype="PCM_16")
    return n * CLIP_S


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh Ray, not a running one
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def timed(cmd: list[str]) -> tuple[float, str]:
    """Wall seconds of a command in a fresh process, and its output."""
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
    wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{cmd[:4]} failed ({r.returncode}): {(r.stdout + r.stderr)[-3000:]}")
    return wall, r.stdout


def parquet_files(out: Path) -> int:
    return sum(1 for p in out.rglob("*.parquet") if not p.name.startswith("."))


def short_files(work: Path, n: int) -> list[list]:
    folder = work / "short"
    audio_s = write_short_files(folder, n)
    raybird = [sys.executable, "-m", "raybird.cli", "segment", str(folder), "--no-progress"]
    runs = {
        "scikit-maad ROI recipe, one process": [sys.executable, "-m", "benchmarks.archive", "--peer", str(folder)],
        "`raybird segment` (Ray, 2 CPUs, start-up included)": [*raybird, "--out", str(work / "ray")],
        "`raybird segment --local`": [*raybird, "--out", str(work / "local"), "--local"],
    }
    walls = {name: timed(cmd)[0] for name, cmd in runs.items()}
    peer = walls["scikit-maad ROI recipe, one process"]
    files = {"`raybird segment` (Ray": work / "ray", "`raybird segment --local`": work / "local"}
    rows = []
    for name, wall in walls.items():
        out = next((o for k, o in files.items() if name.startswith(k)), None)
        rows.append(
            [
                name,
                f"{wall:.1f}",
                f"{audio_s / wall:.0f}",
                parquet_files(out) if out else "—",
                f"{peer / wall:.2f}",
            ]
        )
    print(f"\n### {n} recordings of {CLIP_S:.0f} s ({audio_s / 3600:.2f} h of real audio)\n")
    print(table(["run", "wall s", "audio-s / s", "Parquet files", "speed / peer's"], rows))
    one = work / "one"
    one.mkdir()
    shutil.copy(next(folder.glob("*.wav")), one)
    fixed = [
        [
            "`raybird segment` (Ray)",
            f"{timed([*raybird[:4], str(one), '--no-progress', '--out', str(work / 'o1')])[0]:.1f}",
        ],
        [
            "`raybird segment --local`",
            f"{timed([*raybird[:4], str(one), '--local', '--out', str(work / 'o2')])[0]:.1f}",
        ],
        [
            "of which Python and the imports of the driver (`raybird.pipelines.segment`)",
            f"{timed([sys.executable, '-c', 'import raybird.pipelines.segment'])[0]:.1f}",
        ],
    ]
    print("\n### fixed costs: one 10-s recording\n")
    print(table(["run", "wall s"], fixed))
    return rows + fixed


def peer(folder: str) -> None:
    """The peer over every WAV in ``folder`` (run in its own process by :func:`short_files`)."""
    from benchmarks.maad_peer import maad_rois

    n = sum(len(maad_rois(str(p))) for p in sorted(Path(folder).glob("*.wav")))
    print(json.dumps(dict(rois=n)))


def stages(folder: Path, n: int = 100) -> list[list]:
    """CPU seconds per stage for the first ``n`` recordings, one thread (module docstring)."""
    import torch

    from raybird.inference import decode, recording
    from raybird.inference.predictor import Predictor
    from raybird.io import outputs
    from raybird.models.checkpoint import read_checkpoint

    torch.set_num_threads(1)
    ckpt = read_checkpoint("default")
    predictor = Predictor(ckpt.data, "cpu", 1)
    opts = recording.SegmentOptions()
    spent = dict.fromkeys(["decode + tiles", "model", "stitch", "segment edges", "tables"], 0.0)
    parts = outputs.PartWriter(tempfile.mkdtemp(prefix="raybird-bench-stages-"))

    def clock(stage: str, fn, *args):
        t = time.process_time()
        out = fn(*args)
        spent[stage] += time.process_time() - t
        return out

    paths = sorted(folder.glob("*.wav"))[:n]
    for p in paths:
        items = clock("decode + tiles", list, decode.recording_tiles(str(p), ckpt.cfg, keep_audio=True))
        stitcher = recording.RecordingStitcher(ckpt.cfg, opts)
        for item in items:
            item = clock("model", predictor, item) if isinstance(item, decode.Tiles) else item
            clock("stitch", stitcher.add, item)
        duration, results = clock("segment edges", recording.finish_with_edges, stitcher, str(p))
        rows = clock(
            "tables", recording.recording_tables, p.stem, str(p), duration, results, ckpt.cfg, ckpt.model_id, opts
        )
        clock("tables", parts.add, p.stem, rows)
    clock("tables", parts.commit)
    shutil.rmtree(parts.out, ignore_errors=True)
    total = sum(spent.values())
    print(f"\n### where a 10-s recording's CPU time goes ({len(paths)} recordings, one thread)\n")
    rows = [[k, f"{1000 * v / len(paths):.1f}", f"{100 * v / total:.0f} %"] for k, v in spent.items()]
    rows.append(["total", f"{1000 * total / len(paths):.1f}", "100 %"])
    print(table(["stage", "ms per recording", "share"], rows))
    return rows


def manifest_child(step: str, manifest: str, out: str) -> None:
    """One step of the manifest benchmark, in its own process: its wall time and peak RSS."""
    from raybird.io import storage
    from raybird.pipelines.listing import Listing

    before = _rss_now()
    t = time.perf_counter()
    if step == "discover":
        n = len(storage.discover([manifest]))
    elif step == "plan":
        n = len(Listing([manifest], out, stream_after=2**62).pending)
    else:  # what a run lists and plans before its actors start; the rest streams
        n = Listing([manifest], out).n_listed
    wall = time.perf_counter() - t
    print(json.dumps(dict(n=n, wall_s=wall, rss=_status_kb("VmHWM") * 1024, before=before)))


def _rss_now() -> int:
    """This process's resident memory now (bytes; Linux)."""
    return _status_kb("VmRSS") * 1024


def _status_kb(key: str) -> int:
    """A field of /proc/self/status in kB. VmHWM, the peak, is this process's own: getrusage's
    ru_maxrss keeps the peak of the process that forked it across exec (a big parent's)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def manifest(work: Path, n: int) -> list[list]:
    """A manifest of ``n`` entries and a run folder whose journal commits half of them, as a
    run's writers would have (1000 recordings per part)."""
    from raybird.io import outputs, storage

    path, out = work / "big.manifest", work / "half_done"
    entries = [f"/archive/site{i % 200:03d}/2026-05-{i % 28 + 1:02d}/rec{i:07d}.wav" for i in range(n)]
    path.write_text("\n".join(entries) + "\n")
    parts = outputs.PartWriter(str(out), max_recordings=1000)
    for e in entries[: n // 2]:
        parts.add(storage.recording_id(e), {})
    parts.commit()
    rows = []
    steps = (
        ("discover", "discovery"),
        ("plan", "discovery + resume planning"),
        ("start", "listed and planned before the actors start"),
    )
    for step, what in steps:
        cmd = [sys.executable, "-m", "benchmarks.archive", "--manifest-child", step, str(path), str(out)]
        r = json.loads(timed(cmd)[1].strip().splitlines()[-1])
        rows.append(
            [what, f"{r['n']:,}", f"{r['wall_s']:.1f}", f"{r['rss'] / MB:.0f}", f"{(r['rss'] - r['before']) / MB:.0f}"]
        )
    print(f"\n### a manifest of {n:,} entries, half of them done\n")
    print(table(["step", "units out", "wall s", "peak RSS (MB)", "of which the step (MB)"], rows))
    return rows


def long_file(work: Path, hours: float) -> list[list]:
    from benchmarks import memory

    audio = work / "long.flac"
    secs = memory.write_long_recording(audio, hours * 3600)
    r = memory.measure("ray", audio, work / "long_out", cpus=2)
    rows = [[f"{secs / 3600:.2f} h", f"{r['wall_s']:.0f}", f"{secs / r['wall_s']:.0f}x", f"{r['peak_pss'] / MB:.0f}"]]
    print("\n### one long recording, the Ray job end to end (start-up included), 2 CPUs\n")
    print(table(["recording", "wall s", "real time", "peak PSS, all processes (MB)"], rows))
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=500, help="short recordings of 10 s")
    ap.add_argument("--manifest", type=int, default=1_000_000, help="entries of the manifest")
    ap.add_argument("--hours", type=float, default=2.0, help="the long recording; 0: skip it")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 recordings, 10,000 entries, 2 minutes")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--manifest-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.peer:
        return peer(a.peer) or {}
    if a.manifest_child:
        return manifest_child(*a.manifest_child) or {}
    if a.quick:
        a.recordings, a.manifest, a.hours = 20, 10_000, 2 / 60
    print(f"\n## archive benchmark\n\nmachine: {machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="raybird-bench-archive-"))
    try:
        result = dict(short=short_files(work, a.recordings))
        result["stages"] = stages(work / "short", min(100, a.recordings))
        result["manifest"] = manifest(work, a.manifest)
        if a.hours > 0:
            result["long"] = long_file(work, a.hours)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
