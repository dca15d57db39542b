"""Ingest throughput: the Ray Data job on 2 CPUs against a single-process loop doing the same
work (decode, resample, spectrogram tiles, masks, Parquet) on the same files.

    python -m benchmarks.ingest [--recordings 96] [--duration 60]

Prints audio-seconds ingested per wall-second and the ratio, measured in the same process.
Ray's start-up is excluded (on a cluster it is already running); everything else is timed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import soundfile as sf

from benchmarks.common import machine, table
from raybird.pipelines import ingest
from raybird.pipelines.runtime import init_ray
from raybird.synth.generator import generate_archive


def audio_seconds(folder: Path) -> float:
    return sum(sf.info(str(p)).duration for p in folder.iterdir() if p.suffix in (".wav", ".flac"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recordings", type=int, default=96)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--cpus", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raybird-bench-"))
    try:
        generate_archive(work / "archive", a.recordings, seed=1, duration_s=(a.duration, a.duration), sample_rate=44100)
        secs = audio_seconds(work / "archive")
        init_ray(num_cpus=a.cpus)
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
        ingest.run([str(work / "archive")], str(work / "warmup"))  # worker start-up, imports

        t = time.perf_counter()
        loop = ingest.run_local([str(work / "archive")], str(work / "loop"))
        t_loop = time.perf_counter() - t
        t = time.perf_counter()
        dist = ingest.run([str(work / "archive")], str(work / "ray"))
        t_ray = time.perf_counter() - t
        assert (loop.recordings, loop.tiles) == (dist.recordings, dist.tiles)

        print(
            f"\ningest: {a.recordings} recordings, {secs:.0f} audio-s (44.1 kHz FLAC/WAV -> default preset), "
            f"{ray.cluster_resources().get('CPU', 0):.0f} CPUs; {machine()}"
        )
        print(
            table(
                ["run", "wall s", "audio-s per wall-s", "ratio"],
                [
                    ["single-process loop", f"{t_loop:.1f}", f"{secs / t_loop:.0f}", "1.00"],
                    ["Ray Data job", f"{t_ray:.1f}", f"{secs / t_ray:.0f}", f"{t_loop / t_ray:.2f}"],
                ],
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
