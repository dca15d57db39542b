"""The field's measures (raybird.evaluation.field_scores) on hand-computed examples."""

import pytest

from raybird.evaluation.field_scores import frame_positives, inside_fraction, pooled, recording_counts
from raybird.io.labels import Box


def _one(ref, pred, duration_s=10.0) -> dict:
    return pooled([recording_counts(ref, pred, duration_s)])


def test_a_frame_is_positive_when_an_interval_covers_its_centre():
    # centres 5, 15, 25, 35, 45 ms; [12, 35) ms covers 15 and 25, not 35 (end excluded)
    assert frame_positives([(0.012, 0.035)], 5).tolist() == [False, True, True, False, False]
    assert frame_positives([], 3).tolist() == [False] * 3


def test_frame_scores_by_hand():
    # 10 frames; label frames 0-4, prediction frames 3-9 (two overlapping segments, counted once)
    ref = [Box(0.0, 0.05)]
    pred = [(0.03, 0.06, 0, 1), (0.04, 0.10, 0, 1)]
    m = _one(ref, pred, 0.1)
    assert (m["frame_tp"], m["frame_fp"], m["frame_fn"]) == (2, 5, 3)
    assert m["frame_precision"] == pytest.approx(2 / 7)
    assert m["frame_recall"] == pytest.approx(2 / 5)
    assert m["frame_f1"] == pytest.approx(4 / 12)  # 2TP / (2TP + FP + FN)
    assert m["predicted_share"] == pytest.approx(7 / 10)


def test_segment_f1_needs_onset_and_offset_within_20_ms():
    ref = [Box(1.0, 1.5)]
    assert _one(ref, [(1.0, 1.519, 0, 1)])["segment_f1"] == 1.0
    assert _one(ref, [(1.0, 1.521, 0, 1)])["segment_f1"] == 0.0
    assert _one(ref, [(0.981, 1.5, 0, 1)])["segment_f1"] == 1.0
    assert _one(ref, [(0.979, 1.5, 0, 1)])["segment_f1"] == 0.0
    # one-to-one: two predictions for one label make one hit and one false alarm
    m = _one(ref, [(1.0, 1.5, 0, 1), (1.6, 1.7, 0, 1)])
    assert (m["segment_tp"], m["segment_precision"], m["segment_recall"]) == (1, 0.5, 1.0)


def test_predictions_are_merged_on_the_time_axis_before_matching():
    # two bands of one call, overlapping in time: one segment 1.0-1.5 s
    m = _one([Box(1.0, 1.5)], [(1.0, 1.3, 100, 200), (1.2, 1.5, 300, 400)])
    assert (m["n_pred"], m["n_segments"], m["segment_f1"]) == (2, 1, 1.0)


def test_onset_f1_within_10_ms_ignores_offsets():
    ref = [Box(1.0, 1.5)]
    m = _one(ref, [(1.009, 2.0, 0, 1)])
    assert (m["onset_f1"], m["segment_f1"]) == (1.0, 0.0)
    m = _one(ref, [(1.011, 1.5, 0, 1)])
    assert (m["onset_f1"], m["segment_f1"]) == (0.0, 1.0)


def test_median_timing_errors_signed_and_absolute_over_labels_matched_within_50_ms():
    ref = [Box(1.0, 1.2), Box(2.0, 2.2), Box(3.0, 3.2), Box(4.0, 4.2)]
    pred = [
        (0.96, 1.23, 0, 1),  # onset -40 ms, offset +30 ms
        (2.01, 2.21, 0, 1),  # +10, +10
        (3.02, 3.155, 0, 1),  # +20, -45
        (4.0, 4.26, 0, 1),
    ]  # offset +60 ms: not timed
    m = _one(ref, pred)
    assert m["n_timed"] == 3
    assert m["onset_error_ms"] == pytest.approx(10)  # median of -40, +10, +20
    assert m["onset_abs_error_ms"] == pytest.approx(20)  # median of 40, 10, 20
    assert m["offset_error_ms"] == pytest.approx(10)  # median of +30, +10, -45
    assert m["offset_abs_error_ms"] == pytest.approx(30)  # median of 30, 10, 45
    assert _one(ref, [])["onset_error_ms"] is None


def test_a_box_counts_when_at_least_half_of_the_prediction_lies_inside_the_label():
    label = [(0.0, 1.0, 0.0, 1000.0)]
    assert inside_fraction([(0.5, 1.5, 0.0, 1000.0)], label)[0, 0] == pytest.approx(0.5)
    assert inside_fraction([(0.6, 1.6, 0.0, 1000.0)], label)[0, 0] == pytest.approx(0.4)
    # a prediction holding the whole label lies only a quarter inside it
    assert inside_fraction([(0.0, 4.0, 0.0, 1000.0)], label)[0, 0] == pytest.approx(0.25)
    assert inside_fraction([(0.2, 0.2, 0.0, 1000.0)], label)[0, 0] == 0.0  # no area

    ref = [Box(0.0, 1.0, 0.0, 1000.0), Box(10.0, 11.0, 2000.0, 3000.0)]
    pred = [
        (0.5, 1.5, 0.0, 1000.0),  # half inside the first label: found, right
        (0.6, 1.6, 0.0, 1000.0),  # 40 % inside: wrong
        (9.0, 13.0, 0.0, 4000.0),
    ]  # holds the second label, but 1/12 of it lies inside: wrong
    m = _one(ref, pred, 20.0)
    assert (m["box_found"], m["box_right"]) == (1, 1)
    assert m["box_recall"] == pytest.approx(1 / 2)
    assert m["box_precision"] == pytest.approx(1 / 3)


def test_time_only_labels_have_no_box_scores():
    m = _one([Box(0.0, 1.0)], [(0.0, 1.0, 0.0, 1000.0)])
    assert m["box_recall"] is None and m["box_precision"] is None
    assert _one([], [(0.0, 1.0, 0.0, 1000.0)])["box_precision"] is None


def test_pooling_sums_counts_over_recordings():
    ref = [Box(0.0, 0.1)]
    found = recording_counts(ref, [(0.0, 0.1, 0, 1)], 0.1)  # 10 frames right
    missed = recording_counts(ref, [], 0.1)  # 10 frames missed
    m = pooled([found, missed])
    assert (m["frame_tp"], m["frame_fp"], m["frame_fn"], m["recordings"]) == (10, 0, 10, 2)
    assert m["frame_f1"] == pytest.approx(20 / 30)  # not the mean of 1 and 0
    assert m["predicted_share"] == pytest.approx(10 / 20)
    assert (m["segment_precision"], m["segment_recall"]) == (1.0, 0.5)
    assert m["segment_f1"] == pytest.approx(2 / 3)
    assert m["n_labels"] == 2
