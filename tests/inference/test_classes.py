"""A class model's segments: cut where the class changes, labelled by their pixels' class probabilities."""

import numpy as np
import pytest

from raybird.dsp.spectrogram import SpecConfig
from raybird.inference import classes as labels
from raybird.inference import postprocess as pp
from raybird.io import tables

CFG = SpecConfig(sample_rate=16000, n_fft=256, win_length=256, hop_length=128, tile_frames=128, tile_overlap=32)
NAMES = ("a", "b", "c")


def class_probabilities(n_frames: int, spans: list[tuple[int, int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Bird probability (rows, frames) and class probabilities (3, rows, frames), uint8: each span
    ``(first, stop, class, p)`` is a band of rows 20-40 where ``class`` has probability ``p`` and
    the other two share the rest of 0.9."""
    classes = np.zeros((3, 64, n_frames), np.float32)
    for first, stop, k, p in spans:
        classes[:, 20:40, first:stop] = (0.9 - p) / 2
        classes[k, 20:40, first:stop] = p
    q = np.round(classes * 255).astype(np.uint8)
    return q.sum(axis=0, dtype=np.int32).clip(0, 255).astype(np.uint8), q


def segments(bird, classes, chunk: int = 50, **kw):
    seg = pp.Segmenter(CFG, class_names=NAMES, keep_class_map=True, **kw)
    for a in range(0, bird.shape[1], chunk):  # a stream of chunks, regions crossing their borders
        seg.add(bird[:, a : a + chunk], a, classes=classes[..., a : a + chunk])
    return seg, seg.finish()


def test_touching_syllables_of_two_classes_are_cut_where_the_class_changes():
    bird, classes = class_probabilities(200, [(40, 90, 0, 0.8), (90, 140, 2, 0.7)])
    seg, found = segments(bird, classes)
    assert [(s.first_frame, s.last_frame, s.label) for s in found] == [(40, 89, "a"), (90, 139, "c")]
    assert found[0].label_score == pytest.approx(0.8, abs=0.003) and found[1].label_score == pytest.approx(
        0.7, abs=0.003
    )
    assert [name for name, _ in found[0].top] == ["a", "b", "c"] and found[0].top[1][1] == pytest.approx(
        0.05, abs=0.003
    )
    assert found[0].score == pytest.approx(0.9, abs=0.01)  # the bird probability, as before
    cmap = np.frombuffer(seg.class_map_bytes(), np.uint8).reshape(200, 64).T
    assert set(np.unique(cmap[20:40, 40:90])) == {1} and set(np.unique(cmap[20:40, 90:140])) == {3}
    assert not cmap[:20].any() and not cmap[:, :40].any()


def test_a_few_frames_of_doubt_inside_a_syllable_do_not_cut_it():
    short = max(1, round(labels.MIN_RUN_S / CFG.frame_s)) - 1
    bird, classes = class_probabilities(200, [(40, 140, 1, 0.8), (80, 80 + short, 0, 0.6)])
    _, found = segments(bird, classes)
    assert [(s.first_frame, s.last_frame, s.label) for s in found] == [(40, 139, "b")]


def test_a_segment_of_two_regions_takes_the_class_with_most_probability():
    bird, classes = class_probabilities(200, [(40, 90, 0, 0.5)])
    b2, c2 = class_probabilities(200, [(40, 90, 2, 0.9)])
    bird[45:55], classes[..., 45:55, :] = b2[20:30], c2[..., 20:30, :]  # a harmonic above, more sure of "c"
    _, found = segments(bird, classes)
    assert len(found) == 1 and found[0].label == "c"


def test_bird_background_segmenter_has_no_labels_and_class_segmenter_needs_classes():
    bird, classes = class_probabilities(200, [(40, 90, 0, 0.8)])
    seg = pp.Segmenter(CFG)
    seg.add(bird)
    (s,) = seg.finish()
    assert s.label is None and s.label_score is None and s.top == () and seg.class_map_bytes() is None
    with pytest.raises(ValueError, match="probability of each of its 3 classes"):
        pp.Segmenter(CFG, class_names=NAMES).add(bird)
    assert tables.SEGMENT_SCHEMA.field("label").nullable


def test_class_spans_join_short_runs_to_their_longer_neighbour():
    sums = np.zeros((2, 12))
    sums[0, :5], sums[1, 5:7], sums[0, 7:9], sums[1, 9:] = 1, 1, 1, 1  # a a a a a b b a a b b b
    assert labels.class_spans(sums, 3) == [(0, 8), (9, 11)]
    assert labels.class_spans(sums, 1) == [(0, 4), (5, 6), (7, 8), (9, 11)]
