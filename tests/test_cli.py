"""The command line's own flags, and what a command prints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import raybird

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_printed_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "raybird.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"raybird {raybird.__version__}"


def test_a_command_imports_its_own_modules_only():
    """``raybird --help`` imports no job, ``raybird segment`` not training, tuning, evaluation or
    the generator (a fresh interpreter: the test session has imported them all)."""
    probe = (
        "import sys; from raybird import cli; cli.build_parser(sys.argv[1]).parse_known_args(sys.argv[2:]); "
        "print(sorted(m for m in sys.modules if m.startswith(('raybird.', 'torch', 'ray.tune', 'ray.train'))))"
    )

    def loaded(only: str, *argv: str) -> str:
        return subprocess.run([sys.executable, "-c", probe, only, *argv], capture_output=True, text=True).stdout

    top = loaded("")
    assert "torch" not in top and "raybird.pipelines" not in top, top
    seg = loaded("segment", "segment", "x", "--out", "o")
    assert "raybird.pipelines.segment" in seg and "raybird.inference.recording" in seg, seg
    for other in (
        "raybird.pipelines.train",
        "raybird.pipelines.tune",
        "raybird.evaluation",
        "raybird.synth",
        "ray.tune",
    ):
        assert f"'{other}" not in seg, other


def test_every_flag_of_every_command_has_help_and_shows_its_default():
    import argparse

    from raybird.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        text = command.format_help()
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest}: no help"
            if action.option_strings and action.default not in (None, False, ()):
                assert f"(default: {action.default})" in " ".join(text.split()) or "(default: " in action.help, (
                    f"{name} {action.dest}: default {action.default!r} not shown"
                )


@pytest.mark.ray
@pytest.mark.slow
def test_a_segment_run_shows_its_progress_not_rays_log_unless_verbose(ray_session, real_data, tmp_path):
    """A driver joining the cluster (as a job's does): by default raybird's progress bar and
    summary; Ray Data's INFO lines (execution plan, progress logs) only with --verbose."""
    clips = [str(real_data / "monk_parakeet" / n) for n in ("29-1.flac", "39-3.flac")]
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address, PYTHONPATH=str(ROOT))
    runs = {}
    for flag in ([], ["--verbose"]):
        out = tmp_path / ("verbose" if flag else "quiet")
        done = subprocess.run(
            [sys.executable, "-m", "raybird.cli", "segment", *clips, "--out", str(out), *flag],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs[bool(flag)] = done
    quiet, verbose = runs[False], runs[True]
    assert "2 recordings" in quiet.stdout and "segment: 100%" in quiet.stderr
    assert "Execution plan" not in quiet.stderr and " INFO " not in quiet.stderr
    assert "Execution plan" in verbose.stderr
