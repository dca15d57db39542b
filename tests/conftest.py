"""Shared fixtures: the real data folder, one local Ray for the whole session, and a real S3
endpoint (moto's server) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
if not REAL.exists():  # CI: shared/ sits beside the clone
    REAL = Path(os.environ.get("RAYBIRD_REAL_DATA", "/work/shared/data/real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL.exists():
        pytest.skip("shared real data not found")
    return REAL


# Ray Train's controller polls its workers every 2 s, so every Train run in the tests waited
# ~2 s after its workers finished; 0.2 s takes 2-3 s off each of the suite's ~20 runs.
TRAIN_POLL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session")
def train_poll_env() -> dict:
    """:data:`TRAIN_POLL` as environment variables, for the Ray clusters the tests start."""
    return dict([TRAIN_POLL])


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """One embedded Ray for all integration tests (starting Ray costs seconds). Logical CPUs are
    over-subscribed so train workers with fractional CPUs and Ray Data tasks fit on 2 cores.
    Depends on the S3 server so that Ray's workers inherit its endpoint and credentials."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault(*TRAIN_POLL)
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1; sets the endpoint and dummy credentials in the
    environment (Ray workers started afterwards inherit it)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    proc.terminate()
    proc.wait(10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_server):
    import uuid

    import boto3

    name = f"raybird-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``: for ``os.getpid()``, the embedded Ray
    of this test session (its raylet and workers), not another session's on the same machine."""
    parent, title = {}, {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
                parent[int(proc.name)], title[int(proc.name)] = ppid, argv
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += [(p, title[p]) for p in kids]
        frontier = kids
    return found


@pytest.fixture(scope="session")
def descendants():
    """``descendants(pid)``: see :func:`_descendants`."""
    return _descendants


def _balanced_archive(root: Path, n: int, min_val: int, min_train: int, **synth_kw) -> Path:
    from raybird.pipelines import ingest
    from raybird.synth.generator import generate_archive

    for k in range(1000):
        folder = root / f"archive{k}"
        splits = [ingest.split_of(str(folder / f"syn{i:05d}.wav")) for i in range(n)]
        if splits.count("val") >= min_val and splits.count("train") >= min_train:
            generate_archive(folder, n, formats=("wav",), **synth_kw)
            return folder
    raise AssertionError(f"no folder name under {root} gives {min_val} val and {min_train} train recordings")


@pytest.fixture(scope="session")
def balanced_archive():
    """``balanced_archive(root, n, min_val, min_train, **synth_kw)``: ``n`` synthetic WAV recordings
    in a folder under ``root`` whose name puts at least ``min_val`` of them in val and
    ``min_train`` in train. Splits hash the folder and file names, so the folder name is
    picked for the split."""
    return _balanced_archive
