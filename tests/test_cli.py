"""The command line's own flags."""
import subprocess
import sys

import raybird


def test_version_is_printed_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "raybird.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"raybird {raybird.__version__}"


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
            if action.option_strings and action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()) or "(default: " in action.help, \
                    f"{name} {action.dest}: default {action.default!r} not shown"
