"""End to end on a real multi-node Ray cluster, the way users run raybird on one.

``cluster/local_cluster.sh`` starts a head and two worker nodes on this machine (separate raylets,
1 logical CPU each, in a temp dir of their own, so the embedded Ray of the other tests is left
alone). Every step is a ``ray job submit --working-dir . --runtime-env ... -- python jobs/<job>.py``
with token authentication on, reading and writing ``s3://`` on moto's server. The nodes start
without any AWS setting: the endpoint and the (dummy) credentials reach them only through the
job's runtime_env, and must never show up in the job output.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from raybird.io import outputs, storage
from raybird.io.outputs import read_outputs
from raybird.io.tables import SEGMENT_SCHEMA
from raybird.synth.generator import generate_archive

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
BUCKET = "raybird-cluster"
FOLDER = "archive-2026"  # splits hash folder and file names: its six recordings give 4 train, 2 val
S3 = f"s3://{BUCKET}"
SECRET = f"dummy-secret-{uuid.uuid4().hex}"
BROKEN = "broken.wav"  # an empty file: every archive has some


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    dashboard: str
    env: dict  # for `ray` CLI calls: token auth and the job API address, no AWS settings
    runtime_env: str  # cluster/runtime_env.yaml plus the S3 endpoint and credentials

    def submit(self, job_id: str, *argv: str) -> tuple[int, str]:
        """``ray job submit`` from the repo root: waits for the job, streams its logs, exits 1
        when the job failed. Returns the exit status and the output."""
        p = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                "--submission-id",
                job_id,
                "--working-dir",
                ".",
                "--runtime-env",
                self.runtime_env,
                "--",
                "python",
                *argv,
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = p.stdout + p.stderr
        assert SECRET not in output, f"job {job_id} printed the S3 secret"
        return p.returncode, output

    def run_ok(self, job_id: str, *argv: str) -> str:
        rc, output = self.submit(job_id, *argv)
        assert rc == 0, f"job {job_id} failed:\n{output[-6000:]}"
        return output

    def state(self, kind: str) -> list[dict]:
        """``ray list <kind>`` (jobs, actors, nodes) from the state API."""
        p = subprocess.run(
            [RAY, "list", kind, "--address", self.dashboard, "--format", "json", "--limit", "1000"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(p.stdout)


@pytest.fixture(scope="module")
def cluster(s3_server, train_poll_env):
    tmp = tempfile.mkdtemp(prefix="rbc-", dir="/tmp")  # short: Ray's socket paths live under it
    dash_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    env.update(
        RAYBIRD_CLUSTER_DIR=os.path.join(tmp, "ray"),
        RAYBIRD_GCS_PORT=str(_free_port()),
        RAYBIRD_DASHBOARD_PORT=str(dash_port),
        RAY=RAY,
    )
    runtime_env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    runtime_env["env_vars"] = {
        **runtime_env.get("env_vars", {}),
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "raybird-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        **train_poll_env,
    }
    runtime_env_path = os.path.join(tmp, "runtime_env.yaml")
    with open(os.open(runtime_env_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        yaml.safe_dump(runtime_env, f)
    script = str(ROOT / "cluster" / "local_cluster.sh")
    try:
        started = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        dashboard = f"http://127.0.0.1:{dash_port}"
        assert dashboard in started.stdout
        yield Cluster(dashboard, {**env, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": dashboard}, runtime_env_path)
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(s3_server):
    """Six short synthetic recordings with their labels, and one empty file, in
    s3://raybird-cluster/archive-2026/. Returns the recordings' names."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=BUCKET)
    with tempfile.TemporaryDirectory() as d:
        generate_archive(d, 6, seed=0, duration_s=(2.0, 3.0))
        names = sorted(os.listdir(d))
        for name in names:
            s3.upload_file(os.path.join(d, name), BUCKET, f"{FOLDER}/{name}")
    s3.put_object(Bucket=BUCKET, Key=f"{FOLDER}/{BROKEN}", Body=b"")
    return [n for n in names if n.endswith((".wav", ".flac"))]


def test_three_nodes_with_their_resources(cluster):
    nodes = [n for n in cluster.state("nodes") if n["state"] == "ALIVE"]
    named = sorted(k for n in nodes for k in n["resources_total"] if k in ("head", "node_a", "node_b"))
    assert named == ["head", "node_a", "node_b"]
    assert [n["resources_total"]["CPU"] for n in nodes] == [1.0, 1.0, 1.0]


def test_pipeline_as_ray_jobs_on_s3(cluster, archive):
    # ingest: every input ends in exactly one place, a shard row or an error row
    out = cluster.run_ok("rb-ingest", "jobs/ingest.py", f"{S3}/{FOLDER}", "--out", f"{S3}/ingest")
    assert "7 inputs -> 6 recordings" in out and "+ 1 errors" in out
    tiles = read_outputs(f"{S3}/ingest", "shards", columns=["source", "split", "mask"])
    assert sorted(set(tiles.column("source").to_pylist())) == [f"{S3}/{FOLDER}/{n}" for n in archive]
    assert tiles.column("mask").null_count == 0
    assert {"train", "val"} <= set(tiles.column("split").to_pylist())
    errors = read_outputs(f"{S3}/ingest", "errors", columns=["source", "reason"])
    assert errors.to_pylist() == [{"source": f"{S3}/{FOLDER}/{BROKEN}", "reason": "empty file (0 bytes)"}]

    # train: two DDP workers of 1 CPU each on 1-CPU nodes, hence on two different nodes
    out = cluster.run_ok(
        "rb-train",
        "jobs/train.py",
        f"{S3}/ingest",
        "--storage-path",
        f"{S3}/runs",
        "--name",
        "unet",
        "--workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--epochs",
        "1",
        "--width",
        "4",
        "--batch-size",
        "2",
    )
    assert out.count("epoch 1/1: train loss") == 1, out[-6000:]  # rank 0's line, once (Ray's print patch doubled it)
    job_id = next(j["job_id"] for j in cluster.state("jobs") if j["submission_id"] == "rb-train")
    workers = [a for a in cluster.state("actors") if a["class_name"] == "RayTrainWorker" and a["job_id"] == job_id]
    assert len(workers) == 2 and len({a["node_id"] for a in workers}) == 2
    fs, run_dir = storage.filesystem(f"{S3}/runs/unet")
    assert fs.isfile(f"{run_dir}/best/checkpoint.pt") and fs.isfile(f"{run_dir}/curves.png")
    with fs.open(f"{run_dir}/metrics.csv", "r") as f:
        assert len(f.read().strip().splitlines()) == 2  # header and the one epoch

    # tune: a grid of two learning rates, each trial its own 2-worker Train run
    cluster.run_ok(
        "rb-tune",
        "jobs/tune.py",
        f"{S3}/ingest",
        "--out",
        f"{S3}/tune",
        "--lr",
        "1e-3,3e-4",
        "--epochs",
        "1",
        "--width",
        "4",
        "--batch-size",
        "2",
        "--workers",
        "2",
        "--cpus-per-worker",
        "0.5",
        "--max-concurrent",
        "2",
    )
    fs, tune_dir = storage.filesystem(f"{S3}/tune")
    with fs.open(f"{tune_dir}/results.parquet", "rb") as f:
        results = pq.read_table(f, columns=["lr", "status"])
    assert sorted(results.column("lr").to_pylist()) == [3e-4, 1e-3]
    assert results.column("status").to_pylist() == ["done", "done"]
    assert fs.isfile(f"{tune_dir}/best/checkpoint.pt")

    # segment the archive with the trained model: a mask row per recording, an error for the
    # empty file, in part files of at most 2 recordings committed by the journal; the prefix's
    # listing streams into the work after its first 3 objects
    segment_job = ["jobs/segment.py", f"{S3}/{FOLDER}", "--out", f"{S3}/segment", "--file-recordings", "2"]
    segment_job += ["--stream-after", "3"]
    segment_job += ["--model", f"{S3}/runs/unet/best/checkpoint.pt"]
    cluster.run_ok("rb-segment", *segment_job)
    errors = read_outputs(f"{S3}/segment", "errors")
    assert errors.column("source").to_pylist() == [f"{S3}/{FOLDER}/{BROKEN}"], errors.to_pylist()
    masks = read_outputs(f"{S3}/segment", "masks")
    assert sorted(set(masks.column("source").to_pylist())) == [f"{S3}/{FOLDER}/{n}" for n in archive]
    assert read_outputs(f"{S3}/segment", "segments").schema.names == SEGMENT_SCHEMA.names
    fs, seg_dir = storage.filesystem(f"{S3}/segment")
    entries = sorted(fs.ls(f"{seg_dir}/{outputs.JOURNAL}"))
    assert len(fs.ls(f"{seg_dir}/masks")) <= len(entries) <= 7
    # a part lost before its journal entry (a writer killed between the two): a second job
    # resumes, does only that part's recordings again, and every recording is in the tables once
    lost = json.loads(fs.cat(entries[0]))
    fs.rm(entries[0])
    out = cluster.run_ok("rb-segment-resume", *segment_job)
    n_lost = len(lost["recordings"])
    assert f"{7 - n_lost} already complete, skipped" in out, out[-3000:]
    masks = read_outputs(f"{S3}/segment", "masks").column("source").to_pylist()
    assert sorted(masks) == [f"{S3}/{FOLDER}/{n}" for n in archive]
    assert read_outputs(f"{S3}/segment", "errors").column("source").to_pylist() == [f"{S3}/{FOLDER}/{BROKEN}"]


def test_failed_job_fails_the_submit(cluster, archive):
    rc, output = cluster.submit("rb-missing", "jobs/ingest.py", f"{S3}/no-such-prefix/", "--out", f"{S3}/never")
    assert rc == 1
    assert "input not found" in output
    assert next(j["status"] for j in cluster.state("jobs") if j["submission_id"] == "rb-missing") == "FAILED"
    fs, path = storage.filesystem(f"{S3}/never")
    assert not fs.exists(path)
