"""benchmarks/real.py end to end on the smallest real set (52 monk parakeet clips, 20 s in all):
the shipped model, the threshold baseline and scikit-maad's recipe, predicted and scored in this
process (no Ray)."""

import json

import pytest

from benchmarks import real

pytestmark = pytest.mark.skipif(not real.REAL_DEFAULT.is_dir(), reason="shared real data not found")


def test_quick_run_scores_every_method_on_the_monk_parakeet_clips(tmp_path):
    result = real.main(["--quick", "--sets", "monk", "--out", str(tmp_path), "--threads", "1"])
    methods = result["sets"]["monk"]["methods"]
    assert list(methods) == ["U-Net (default model)", real.BASELINE, real.PEER]
    for name, m in methods.items():
        assert (m["recordings"], m["n_labels"]) == (52, 52), name  # one call per clip
        assert 0 <= m["frame_f1"] <= 1 and m["box_recall"] is None, name  # time-only labels: no boxes
    for name in ("U-Net (default model)", real.BASELINE):
        m = methods[name]
        assert 0 < m["frame_f1"] <= 1 and m["n_pred"] > 0 and not m["errors"], name
        assert m["n_timed"] > 0 and m["onset_abs_error_ms"] <= 50, name

    text = (tmp_path / "real.md").read_text()
    assert all(f"| {name} |" in text for name in methods)
    assert json.loads((tmp_path / "real.json").read_text())["summary"][0]["set"] == "monk"
    # a re-run reuses the model's predictions and scores the same
    again = real.main(["--sets", "monk", "--out", str(tmp_path), "--threads", "1"])
    assert again["sets"]["monk"]["methods"] == methods
