import math

import numpy as np
import pytest
import torch

from raybird.training.metrics import PixelMetrics, class_scores, confusion, scores


def pixel_metrics(pred, target, valid=None):
    return scores(confusion(pred, target, valid))


PRED = np.array([[1, 1, 0], [0, 1, 0]], np.uint8)
TRUE = np.array([[1, 0, 0], [1, 1, 0]], np.uint8)


def test_hand_computed_values():
    # tp: (0,0) (1,1); fp: (0,1); fn: (1,0); tn: (0,2) (1,2)
    assert confusion(PRED, TRUE).tolist() == [2, 1, 1, 2]
    m = pixel_metrics(PRED, TRUE)
    assert m == pytest.approx({"iou": 2 / 4, "miou": (2 / 4 + 2 / 4) / 2, "dice": 4 / 6, "pixel_acc": 4 / 6})
    m = scores([3, 1, 0, 6])  # iou 3/4, background iou 6/7
    assert m == pytest.approx({"iou": 0.75, "miou": (0.75 + 6 / 7) / 2, "dice": 6 / 7, "pixel_acc": 0.9})


def test_torch_numpy_and_batches_agree():
    rng = np.random.default_rng(0)
    pred, true = rng.random((4, 16, 20)) > 0.6, rng.random((4, 16, 20)) > 0.5
    acc = PixelMetrics()
    for i in range(4):  # mixing numpy and torch, one item at a time
        acc.update(torch.from_numpy(pred[i]) if i % 2 else pred[i], true[i])
    whole = confusion(torch.from_numpy(pred).long(), torch.from_numpy(true).long())
    assert acc.counts.tolist() == whole.tolist()
    tp = int((pred & true).sum())
    assert whole[0] == tp and whole.sum() == pred.size
    assert acc.compute()["iou"] == pytest.approx(tp / int((pred | true).sum()))


def test_empty_and_full_edge_cases():
    empty = np.zeros((3, 4), np.uint8)
    assert pixel_metrics(empty, empty) == {"iou": 1.0, "miou": 1.0, "dice": 1.0, "pixel_acc": 1.0}
    m = pixel_metrics(np.ones((3, 4)), empty)  # all false positives
    assert (m["iou"], m["dice"], m["miou"], m["pixel_acc"]) == (0.0, 0.0, 0.0, 0.0)
    m = pixel_metrics(np.ones((3, 4)), np.ones((3, 4)))  # background empty in both
    assert m == {"iou": 1.0, "miou": 1.0, "dice": 1.0, "pixel_acc": 1.0}
    assert all(math.isnan(v) for v in PixelMetrics().compute().values())


def test_padded_frames_and_ignored_pixels_do_not_count():
    true = np.zeros((2, 2, 6), np.int64)
    true[:, :, 1] = 1
    pred = true.copy()
    pred[0, :, 4:] = 1  # wrong, but beyond item 0's 4 valid frames
    pred[1, 0, 5] = 1  # wrong, beyond item 1's 5 valid frames
    assert confusion(pred, true, valid_frames=[4, 5]).tolist() == [4, 0, 0, 14]  # 8 + 10 pixels
    assert confusion(pred, true, valid_frames=4).tolist() == [4, 0, 0, 12]  # 8 + 8 pixels
    assert confusion(pred, true).tolist() == [4, 5, 0, 15]
    ignored = np.where(pred != true, -100, true)  # ignore index in the target
    assert confusion(pred, ignored).tolist() == [4, 0, 0, 15]
    valid = np.ones_like(true, bool)
    valid[:, 1] = False  # drop the second row entirely
    assert confusion(pred, true, valid=valid).tolist() == [2, 3, 0, 7]


def test_class_confusion_and_scores_per_class():
    target = torch.tensor([[[0, 1, 1, 2, 2, -100]]])
    pred = torch.tensor([[[0, 1, 2, 2, 2, 1]]])
    m = PixelMetrics(n_classes=3).update(pred, target)
    assert m.matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert m.counts.tolist() == [4, 0, 0, 1]  # as bird/background, every class is bird
    s = class_scores(m.matrix, ["a", "b"])
    assert s["iou_a"] == 0.5 and s["recall_a"] == 0.5 and s["precision_a"] == 1.0
    assert s["iou_b"] == pytest.approx(2 / 3) and s["precision_b"] == pytest.approx(2 / 3) and s["recall_b"] == 1.0
    assert s["class_miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert PixelMetrics().matrix is None  # bird/background: no class matrix
