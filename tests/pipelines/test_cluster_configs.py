"""The cluster configs in cluster/ are valid and agree with the code, without starting anything:
the launcher YAML passes Ray's own schema, the RayJob asks for the GPUs its job uses, every
``python jobs/<job>.py ...`` they (and cluster/README.md) show runs an existing entry point
with arguments raybird's parser accepts, and the runtime_env uploads the code and nothing big."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from raybird import cli

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def job_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every ``python jobs/... `` line of the RayJob and of the README's
    code blocks (shell line continuations joined)."""
    out = [("rayjob.yaml", load("rayjob.yaml")["spec"]["entrypoint"])]
    readme = (CLUSTER / "README.md").read_text()
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "python jobs/" in line:
                out.append(("README.md", line[line.index("python jobs/") :]))
    return out


@pytest.mark.parametrize("name", ["cluster.yaml", "rayjob.yaml", "runtime_env.yaml"])
def test_yaml_parses_to_a_mapping(name):
    assert isinstance(load(name), dict)


def test_launcher_config_passes_rays_schema():
    ray_dir = Path(importlib.util.find_spec("ray").origin).parent
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load("cluster.yaml"), schema)


def test_launcher_config():
    cfg = load("cluster.yaml")
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu = types["gpu_worker"]
    assert gpu["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5"))
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 2
    assert sum(t.get("max_workers", 0) for t in types.values()) <= cfg["max_workers"]
    # torch is installed before raybird, so pip does not resolve torch on its own
    setup = cfg["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if "torch==" in c)
    raybird_at = next(i for i, c in enumerate(setup) if "~/raybird" in c and "pip install" in c)
    assert torch_at < raybird_at
    assert cfg["file_mounts"]["~/raybird"] == "."
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)


def test_rayjob_manifest():
    job = load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python jobs/train.py ")
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    # the GPUs of the worker groups cover the job's Train workers
    argv = shlex.split(spec["entrypoint"])
    assert "--gpu" in argv
    workers = int(argv[argv.index("--workers") + 1])
    gpus = sum(
        g["replicas"] * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        for g in cluster["workerGroupSpecs"]
        for c in g["template"]["spec"]["containers"]
    )
    assert gpus >= workers
    # one image everywhere, holding the repository at the job's working_dir
    images = {
        c["image"]
        for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for c in g["template"]["spec"]["containers"]
    }
    assert len(images) == 1
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR (\S+)$", dockerfile, re.M).group(1) == runtime_env["working_dir"]
    for folder in ("raybird", "jobs"):
        assert re.search(rf"^COPY .*\b{folder} {folder}$", dockerfile, re.M)


def test_job_commands_run_existing_entry_points_with_valid_arguments():
    parser = cli.build_parser()
    commands = job_commands()
    assert {where for where, _ in commands} == {"rayjob.yaml", "README.md"}
    for where, command in commands:
        _, script, *argv = shlex.split(command, comments=True)
        path = ROOT / script
        assert path.is_file(), f"{where}: {script} does not exist"
        # jobs/<name>.py calls raybird's main with the sub-command <name>
        sub = re.search(r'main\(\["(\w+)", \*sys\.argv\[1:\]\]\)', path.read_text()).group(1)
        try:
            assert parser.parse_args([sub, *argv]).command == sub
        except SystemExit:  # argparse's answer to an unknown flag, a bad value, a missing argument
            pytest.fail(f"{where}: `raybird {sub}` rejects the arguments of: {command}")


def test_runtime_env_uploads_the_code_and_nothing_big(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    runtime_env = load("runtime_env.yaml")
    assert set(runtime_env) <= {"excludes", "env_vars"}  # the working dir comes from --working-dir
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())
    package = tmp_path / "package.zip"
    create_package(str(ROOT), package, include_gitignore=True, excludes=runtime_env["excludes"])
    names = zipfile.ZipFile(package).namelist()
    assert {"raybird/__init__.py", "raybird/cli.py", "jobs/train.py", "jobs/ingest.py", "pyproject.toml"} <= set(names)
    assert "raybird/weights/default.pt" in names  # the jobs' default model
    assert not [
        n for n in names if n.startswith((".venv/", ".git/", "runs/", "demo_out/", "tests/", "benchmarks/", "docs/"))
    ]
    assert package.stat().st_size < 20 * 2**20
