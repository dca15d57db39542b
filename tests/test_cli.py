"""The command line's own flags."""
import subprocess
import sys

import raybird


def test_version_is_printed_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "raybird.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"raybird {raybird.__version__}"
