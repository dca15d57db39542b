"""The package as users install it: a wheel carries the shipped model, which loads by name from
anywhere, not only from a clone."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from raybird import segment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_the_default_model_and_loads_it_by_name(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True)
    (wheel,) = (tmp_path / "dist").glob("raybird-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert {"raybird/weights/default.pt", "raybird/weights/MODEL_CARD.md"} <= set(z.namelist())
        z.extractall(tmp_path / "site")
    # from another folder, with only the unpacked wheel's raybird on the path (dependencies from this env)
    site = str(tmp_path / "site")
    code = ("import raybird, raybird.segment as s; assert raybird.__file__.startswith(%r), raybird.__file__; "
            "print(s.read_checkpoint('default').model_id)" % site)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == segment.read_checkpoint(None).model_id
