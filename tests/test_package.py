"""The package as users install it: a wheel carries the shipped model, which loads by name from
anywhere, not only from a clone."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import raybird
from raybird.io import outputs
from raybird.models import checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_segments_with_its_own_model(tmp_path, real_data):
    """``pip wheel .``, then ``pip install`` of that wheel into a new virtual environment, and the
    installed ``raybird`` command run from another folder: the wheel carries the shipped model,
    which loads by name. The new environment sees this one's packages through a ``.pth`` line
    (its dependencies, not fetched again), never this checkout's raybird."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("raybird-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert {"raybird/weights/default.pt", "raybird/weights/MODEL_CARD.md"} <= set(z.namelist())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this environment's: torch, Ray, ...
    Path(site, "dependencies.pth").write_text(deps + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run(
        [str(python), "-c", "import raybird; print(raybird.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(site), where
    version = subprocess.run(
        [str(venv / "bin" / "raybird"), "--version"], cwd=work, env=env, capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.strip() == f"raybird {raybird.__version__}"
    clip = str(real_data / "monk_parakeet" / "29-1.flac")
    done = subprocess.run(
        [str(venv / "bin" / "raybird"), "segment", clip, "--out", "out", "--local", "--no-progress"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 recordings" in done.stdout
    rows = outputs.read_outputs(str(work / "out"), "segments").to_pylist()
    assert rows and {r["model_id"] for r in rows} == {checkpoint.read_checkpoint(None).model_id}
