"""export-clips: each segment's audio cut from its recording with a margin, on real recordings."""

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from raybird.cli import main
from raybird.io import outputs
from raybird.pipelines import segment


@pytest.fixture(scope="module")
def run(real_data, tmp_path_factory) -> dict:
    """Three monk parakeet clips (copied: one is deleted before export) segmented by the shipped model."""
    root = tmp_path_factory.mktemp("clips")
    src = root / "in"
    src.mkdir()
    for name in ("29-1.flac", "39-3.flac", "ARAP-3.flac"):
        shutil.copy(real_data / "monk_parakeet" / name, src / name)
    out = root / "seg"
    segment.run_local([str(src)], str(out), "default", threads=1, show_progress=False)
    return dict(root=root, src=src, out=out)


def test_every_segment_becomes_a_clip_of_its_audio_with_the_margin(run, capsys):
    clips = run["root"] / "clips"
    assert main(["export-clips", str(run["out"]), "--out", str(clips), "--margin", "0.05", "--no-progress"]) == 0
    segs = outputs.read_outputs(str(run["out"]), "segments").to_pylist()
    with open(clips / "clips.csv") as f:
        index = list(csv.DictReader(f))
    assert len(index) == len(segs) >= 3 and f"{len(segs)} clips" in capsys.readouterr().out
    for row in index:
        x, sr = sf.read(row["source"], dtype="float32")
        y, sr_clip = sf.read(clips / row["clip"], dtype="float32")
        a = int(float(row["clip_start_s"]) * sr)
        assert sr_clip == sr
        assert float(row["clip_start_s"]) == pytest.approx(max(0.0, float(row["start_s"]) - 0.05), abs=1 / sr)
        want = min(len(x) / sr, float(row["end_s"]) + 0.05) - float(row["clip_start_s"])
        assert len(y) / sr == pytest.approx(want, abs=2 / sr)
        np.testing.assert_allclose(y, x[a : a + len(y)], atol=1 / 2**15)  # the recording's own samples
        assert row["error"] == ""


def test_a_recording_gone_since_costs_only_its_own_clips(run):
    gone = run["src"] / "39-3.flac"
    gone.unlink()
    clips = run["root"] / "clips-after"
    assert main(["export-clips", str(run["out"]), "--out", str(clips), "--min-score", "0.5", "--no-progress"]) == 0
    with open(clips / "clips.csv") as f:
        index = list(csv.DictReader(f))
    lost = [r for r in index if r["source"] == str(gone)]
    assert lost and all(r["clip"] == "" and "39-3.flac" in r["error"] for r in lost)
    kept = [r for r in index if r["source"] != str(gone)]
    assert kept and all((clips / r["clip"]).is_file() and float(r["score"]) >= 0.5 for r in kept)


def test_a_folder_without_a_segment_run_is_a_clear_error(tmp_path, capsys):
    assert main(["export-clips", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "no segment run there" in capsys.readouterr().err
