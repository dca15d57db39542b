"""Peak memory of segmenting one long recording (default 2 hours), with Ray and without.

    python -m benchmarks.memory [--hours 2] [--quick]

The recording (22.05 kHz mono FLAC: a 60 s synthetic recording repeated) is segmented in a
child process -- ``raybird.pipelines.segment.run`` on a fresh embedded local Ray with 2 CPUs, then
``raybird.pipelines.segment.run_local`` -- while this process samples, every 0.2 s, every process
descending from the child: the driver, Ray's GCS and raylet (which holds the object store),
its runtime-env agents, and all Ray workers (the segment actor that decodes, infers and
stitches the recording, idle workers). Reported:

* the peak of the summed PSS (proportional set size: a shared page, e.g. of the object store
  or of a library, is split between the processes that map it, so the sum counts each page
  once) -- the memory the job takes from the machine;
* the same summed RSS (counts shared pages once per process: an upper bound);
* the largest per-process peak RSS (``VmHWM``, exact, kept by the kernel).

Not counted: memory freed and re-used between two samples (0.2 s) in the sums, and page
cache (the audio file and the output files are read and written through it; it is
reclaimable).
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

MB = 2**20
LIMIT = 2 * 2**30  # the target: 2 GB for a 2-hour recording


def write_long_recording(path: Path, seconds: float, sr: int = 22050, seed: int = 3) -> float:
    """A ``seconds``-long FLAC made of one 60 s synthetic recording repeated, written block by
    block (never the whole signal in memory)."""
    import soundfile as sf

    from raybird.synth.generator import generate_recording

    piece = generate_recording(np.random.default_rng(seed), min(60.0, seconds), sr, p_clip=0, p_dc=0).audio
    piece = piece if piece.ndim == 1 else piece.mean(axis=1)
    total = int(round(seconds * sr))
    with sf.SoundFile(path, "w", sr, 1, "PCM_16", format="FLAC") as f:
        written = 0
        while written < total:
            chunk = piece[: total - written]
            f.write(chunk)
            written += len(chunk)
    return total / sr


# ---- sampling a process tree from /proc ----------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root: int) -> list[int]:
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _kb(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    vals = {}
    try:
        with open(path) as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in keys:
                    vals[k] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return vals


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
    return cmd


def group_of(cmd: str) -> str:
    for key, name in (
        ("gcs_server", "GCS"),
        ("raylet", "raylet + object store"),
        ("dashboard", "Ray dashboard"),
        ("RuntimeEnvAgent", "other Ray services"),
        ("ray::", "Ray workers (tasks, actors)"),
    ):
        if key.lower() in cmd.lower():
            return name
    return "other Ray services"  # runtime-env agent, log monitor, autoscaler monitor


class TreeSampler:
    """Samples PSS/RSS of a process tree; keeps the peak of the sums and per-process VmHWM."""

    def __init__(self, root: int):
        self.root, self.peak_pss, self.peak_rss, self.shmem_at_peak = root, 0, 0, 0
        self.groups_at_peak: dict[str, list] = {}
        self.hwm: dict[int, tuple[int, str]] = {}
        self.n_processes = 0

    def sample(self) -> None:
        pss = rss = shmem = 0
        groups: dict[str, list] = {}
        pids = tree(self.root)
        self.n_processes = max(self.n_processes, len(pids))
        for pid in pids:
            m = _kb(f"/proc/{pid}/smaps_rollup", ("Pss", "Rss", "Pss_Shmem"))
            s = _kb(f"/proc/{pid}/status", ("VmHWM",))
            if not m:
                continue
            cmd = _name(pid)
            pss, rss, shmem = pss + m.get("Pss", 0), rss + m.get("Rss", 0), shmem + m.get("Pss_Shmem", 0)
            g = groups.setdefault("driver" if pid == self.root else group_of(cmd), [0, 0])
            g[0] += 1
            g[1] += m.get("Pss", 0)
            if s.get("VmHWM", 0) >= self.hwm.get(pid, (0, ""))[0]:
                self.hwm[pid] = (s.get("VmHWM", 0), cmd)
        self.peak_rss = max(self.peak_rss, rss)
        if pss > self.peak_pss:
            self.peak_pss, self.groups_at_peak, self.shmem_at_peak = pss, groups, shmem

    def largest(self) -> tuple[int, str]:
        return max(self.hwm.values(), default=(0, ""))


def measure(mode: str, audio: Path, out: Path, cpus: int, interval: float = 0.2) -> dict:
    """Run ``--child MODE`` and sample its process tree until it exits."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", mode, str(audio), str(out), "--cpus", str(cpus)]
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh Ray, not a running one
    env["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    sampler = TreeSampler(proc.pid)
    while proc.poll() is None:
        sampler.sample()
        time.sleep(interval)
    stdout = proc.stdout.read()
    if proc.returncode:
        raise RuntimeError(f"{mode} run failed ({proc.returncode}): {stdout[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    hwm, who = sampler.largest()
    return dict(
        mode=mode,
        peak_pss=sampler.peak_pss,
        peak_rss=sampler.peak_rss,
        shmem=sampler.shmem_at_peak,
        largest_hwm=hwm,
        largest_cmd=who[:60],
        processes=sampler.n_processes,
        groups=sampler.groups_at_peak,
        **result,
    )


def child(mode: str, audio: str, out: str, cpus: int) -> None:
    from raybird.pipelines import segment

    t = time.perf_counter()
    if mode == "ray":
        import ray

        from raybird.pipelines.runtime import init_ray

        init_ray(num_cpus=cpus)
        ray.data.DataContext.get_current().enable_progress_bars = False
        s = segment.run([audio], out)
    else:
        s = segment.run_local([audio], out, threads=1)
    if s.recordings != 1:
        raise SystemExit(f"segmenting failed: {s}")
    print(json.dumps(dict(wall_s=time.perf_counter() - t, segments=s.segments)), flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=2.0, help="length of the recording")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--skip-local", action="store_true", help="only the Ray run")
    ap.add_argument("--quick", action="store_true", help="smoke run: a 2-minute recording")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "AUDIO", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(*a.child, a.cpus)
        return {}
    seconds = 120.0 if a.quick else a.hours * 3600
    print(f"\n## memory benchmark\n\nmachine: {machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="raybird-bench-memory-"))
    try:
        audio = work / "long.flac"
        secs = write_long_recording(audio, seconds)
        runs = [measure("ray", audio, work / "out_ray", a.cpus)]
        if not a.skip_local:
            runs.append(measure("local", audio, work / "out_local", a.cpus))
        ray_run = runs[0]
        print(f"\n### peak memory, one {secs / 3600:.2f}-hour recording ({audio.stat().st_size / MB:.0f} MB FLAC)\n")
        rows = [
            [
                "Ray (`segment.run`, %d CPUs): all %d processes" % (a.cpus, ray_run["processes"]),
                f"{ray_run['peak_pss'] / MB:.0f}",
                f"{ray_run['peak_rss'] / MB:.0f}",
                f"{ray_run['largest_hwm'] / MB:.0f} ({ray_run['largest_cmd'].split(' ')[0][:40]})",
                f"{ray_run['wall_s']:.0f}",
            ]
        ]
        for g, (n, pss) in sorted(ray_run["groups"].items()):
            rows.append([f"&nbsp;&nbsp;of which {g} ({n})", f"{pss / MB:.0f}", "", "", ""])
        rows.append(
            [
                "&nbsp;&nbsp;of which shared memory (object store pages, all processes)",
                f"{ray_run['shmem'] / MB:.0f}",
                "",
                "",
                "",
            ]
        )
        for r in runs[1:]:
            rows.append(
                [
                    "single-process loop (`segment.run_local`, 1 thread)",
                    f"{r['peak_pss'] / MB:.0f}",
                    f"{r['peak_rss'] / MB:.0f}",
                    f"{r['largest_hwm'] / MB:.0f}",
                    f"{r['wall_s']:.0f}",
                ]
            )
        print(table(["run", "peak PSS sum (MB)", "peak RSS sum (MB)", "largest process peak RSS (MB)", "wall s"], rows))
        ok = ray_run["peak_pss"] <= LIMIT
        print(
            f"\nRay run within {LIMIT / 2**30:.0f} GB: {'yes' if ok else 'NO'} "
            f"(PSS group breakdown at the moment of the peak)",
            flush=True,
        )
        return dict(runs=runs, seconds=secs, ok=ok)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
