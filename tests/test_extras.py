"""Optional dependencies: a feature whose extra is missing stops with one line naming the extra,
before any work; everything else runs without it."""

import sys

import pytest

from raybird.cli import main
from raybird.extras import MissingExtra, available, require
from raybird.io import storage


@pytest.fixture
def missing(monkeypatch):
    def hide(*modules):
        for m in modules:
            monkeypatch.setitem(sys.modules, m, None)  # import m raises ImportError

    return hide


def test_a_missing_extra_names_what_to_install(missing):
    missing("librosa", "s3fs", "matplotlib")
    with pytest.raises(MissingExtra, match=r"pip install 'raybird\[denoise\]'"):
        require("librosa")
    with pytest.raises(MissingExtra, match=r"s3:// inputs and outputs need s3fs.*raybird\[s3\]"):
        storage.filesystem("s3://bucket/archive/")
    assert not available("matplotlib")
    assert storage.filesystem("/tmp")[1] == "/tmp"  # local paths need no extra


def test_segment_denoise_without_librosa_stops_before_any_work(missing, tmp_path, capsys):
    missing("librosa")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path), "--out", str(out), "--denoise", "--local"]) == 2
    err = capsys.readouterr().err
    assert "raybird[denoise]" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
