"""Per-class scores, confusion and syllable error rate of a class model's labels."""

import numpy as np
import pytest

from raybird.evaluation.classes import (
    FALSE_ALARM,
    MISSED,
    edit_distance,
    format_confusion,
    frame_labels,
    pool_classes,
    recording_classes,
)
from raybird.io.labels import Box


def test_edit_distance_counts_insertions_deletions_and_substitutions():
    assert edit_distance("abcab", "abcab") == 0
    assert edit_distance("abab", "abcab") == 1  # a deletion
    assert edit_distance("axcab", "abcab") == 1  # a substitution
    assert edit_distance("", "abc") == 3 and edit_distance("ab", "") == 2
    assert edit_distance(["i", "i", "a"], ["i", "a"]) == 1


def test_frame_labels_read_runs_of_each_frames_most_common_class():
    cmap = np.zeros((4, 10), np.uint8)
    cmap[:, 1:3] = 1
    cmap[:3, 3:5], cmap[3, 3:5] = 2, 1  # frames 3-4: class 2 holds most pixels
    cmap[:, 7:9] = 2
    assert frame_labels(cmap, ["a", "b"]) == ["a", "b", "b"]


def test_per_class_scores_confusion_and_error_rates_pool_over_recordings():
    ref = [Box(0.1, 0.2, label="a"), Box(0.3, 0.4, label="b"), Box(0.5, 0.6, label="b")]
    pred = [(0.1, 0.2, 0, 1, "a"), (0.3, 0.41, 0, 1, "a"), (0.8, 0.9, 0, 1, "b")]  # a right, b as a, a false alarm
    one = recording_classes(pred, ref, raw=["a", "a", "a", "b"], tolerance_s=0.02)
    assert one["confusion"] == {"a": {"a": 1}, "b": {"a": 1, MISSED: 1}, FALSE_ALARM: {"b": 1}}
    assert one["edits"] == edit_distance("aab", "abb") == 1 and one["edits_raw"] == 2
    other = recording_classes([(0.1, 0.2, 0, 1, "b")], [Box(0.1, 0.2, label="b")], raw=["b"], tolerance_s=0.02)
    p = pool_classes([one, other])
    assert p["n_ref"] == 4 and p["n_pred"] == 4
    assert p["ser"] == pytest.approx(1 / 4) and p["ser_raw"] == pytest.approx(2 / 4)
    assert p["per_class"]["a"] == dict(n_ref=1, n_pred=2, precision=0.5, recall=1.0, f1=pytest.approx(2 / 3))
    assert p["per_class"]["b"] == dict(n_ref=3, n_pred=2, precision=0.5, recall=pytest.approx(1 / 3), f1=0.4)
    assert p["macro_f1"] == pytest.approx((2 / 3 + 0.4) / 2) and p["segment_f1"] == pytest.approx(0.75)
    assert "| b | 1 | 1 | 1 |" in format_confusion(p)
    assert pool_classes([{**one, "edits_raw": None}, other])["ser_raw"] is None


def test_reference_labels_read_as_ingest_reads_them_and_offsets_can_be_left_out():
    ref = [Box(0.1, 0.2, label=""), Box(0.3, 0.4, label=" b ")]
    pred = [(0.1, 0.2, 0, 1, "bird"), (0.3, 0.45, 0, 1, "b")]
    strict = recording_classes(pred, ref, tolerance_s=0.02)
    assert strict["confusion"]["bird"] == {"bird": 1} and strict["matched"] == 1  # the late offset
    loose = recording_classes(pred, ref, tolerance_s=0.02, offsets=False)
    assert loose["matched"] == 2 and loose["edits"] == 0
    assert pool_classes([])["ser"] is None  # nothing to score: no rate, no crash
