"""Run every benchmark, each in its own process (a fresh Ray each), and print their tables.

    python -m benchmarks [--quick] [--model CKPT]
    python -m benchmarks --only segment,archive,train,ingest,memory,gpu,ceiling,accuracy,real,learning_curve

``./dev.sh bench`` runs this. ``gpu`` runs on CUDA when there is one, else its tiny CPU
configuration (a smoke run, not a measurement). ``--model`` goes to the benchmarks that load
a model (segment, gpu, accuracy, real); memory segments with the shipped default model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL = ("segment", "archive", "train", "ingest", "memory", "gpu", "ceiling", "accuracy", "real", "learning_curve")


def commands(quick: bool, model: str | None, cuda: bool) -> dict[str, list[str]]:
    m = ["--model", model] if model else []
    q = ["--quick"] if quick else []
    return {
        "segment": ["-m", "benchmarks.segment", *m, *q],
        "archive": ["-m", "benchmarks.archive", *q],
        "train": ["-m", "benchmarks.train", *q],
        "ingest": ["benchmarks/ingest.py", *(["--recordings", "4", "--duration", "5"] if quick else [])],
        "memory": ["-m", "benchmarks.memory", *q],
        "gpu": ["-m", "benchmarks.gpu", *m, *([] if cuda and not quick else ["--tiny"])],
        "ceiling": ["-m", "benchmarks.ceiling", *(["--n", "4"] if quick else [])],
        "accuracy": [
            "benchmarks/accuracy.py",
            *(["--model", f"model={model}"] if model else []),
            *(["--test-n", "4", "--real", "", "--out", "out/accuracy-quick"] if quick else []),
        ],
        "real": ["-m", "benchmarks.real", *(["--model", f"model={model}"] if model else []), *q],
        "learning_curve": ["-m", "benchmarks.learning_curve", *q],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke runs (seconds each), not measurements")
    ap.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--model", help="checkpoint for segment and gpu (default: raybird/weights/default.pt)")
    a = ap.parse_args(argv)
    import torch

    cmds = commands(a.quick, a.model, torch.cuda.is_available())
    failed = []
    for name in a.only.split(","):
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, *cmds[name]], cwd=ROOT)
        print(f"\n[{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t:.0f} s]", flush=True)
        if rc:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
