"""Pixel metrics (bird = class 1 = foreground) from an accumulated binary confusion matrix.

Counts are summed over every pixel of every batch (micro average), so a data set's score does
not depend on how it was batched, and counts from several workers simply add up.

Edge cases, chosen so that "nothing there, nothing found" is a perfect answer:

* foreground IoU ``tp / (tp + fp + fn)`` and Dice ``2 tp / (2 tp + fp + fn)`` are 1.0 when both
  prediction and truth are empty; background IoU likewise when both are all bird;
* ``miou`` is the mean of foreground and background IoU;
* with no counted pixel at all every metric is NaN (nothing was scored).

A class model (outputs 0 = background, 1..K the classes) is scored both ways: the metrics
above treat every class as bird, and :class:`PixelMetrics` with ``n_classes`` also keeps the
class confusion matrix, from which :func:`class_scores` gives each class's IoU, precision and
recall and their mean (``class_miou``) over the classes.

Pixels are left out through ``valid`` (a boolean mask broadcastable to the batch),
``valid_frames`` (per item, the number of leading columns that hold real audio; the zero
padding after the end of a recording must not count) and target values below 0 (the ignore
index used by the training loss).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]
METRIC_NAMES = ("iou", "miou", "dice", "pixel_acc")


def _tensor(x: Array, device: Optional[torch.device] = None) -> torch.Tensor:
    return x.to(device) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), device=device)


def valid_frames_mask(
    valid_frames: Union[int, Sequence[int], Array], n: int, width: int, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Boolean ``(n, 1, width)`` mask, True for columns before each item's ``valid_frames``."""
    vf = torch.as_tensor(valid_frames, device=device).reshape(-1, 1, 1).expand(n, 1, 1)
    return torch.arange(width, device=device).reshape(1, 1, -1) < vf


def _kept(
    target: torch.Tensor, valid: Optional[Array], valid_frames: Union[None, int, Sequence[int], Array]
) -> torch.Tensor:
    """The pixels that count: target >= 0, inside ``valid`` and before ``valid_frames``."""
    ok = target >= 0
    if valid is not None:
        ok = ok & _tensor(valid, target.device).bool()
    if valid_frames is not None:
        lead, width = target.shape[:-2], target.shape[-1]
        cols = valid_frames_mask(valid_frames, int(np.prod(lead)), width, target.device)
        ok = ok & cols.reshape(*lead, 1, width)
    return ok


def confusion(
    pred: Array,
    target: Array,
    valid: Optional[Array] = None,
    valid_frames: Union[None, int, Sequence[int], Array] = None,
) -> np.ndarray:
    """``[tp, fp, fn, tn]`` (int64) of binary predictions against targets, shape ``(N, H, W)``
    or ``(H, W)``. ``pred`` is nonzero for bird; ``target`` > 0 for bird, 0 background, <0 ignored."""
    target = _tensor(target)
    pred = _tensor(pred, target.device)
    ok = _kept(target, valid, valid_frames)
    p, t = pred != 0, target > 0
    tp, fp, fn = (p & t & ok).sum(), (p & ~t & ok).sum(), (~p & t & ok).sum()
    counts = torch.stack([tp, fp, fn, ok.sum() - tp - fp - fn])
    return counts.cpu().numpy().astype(np.int64)  # one device sync per batch


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def scores(counts: Sequence[int]) -> dict[str, float]:
    """``{"iou", "miou", "dice", "pixel_acc"}`` from ``[tp, fp, fn, tn]`` (see module docstring)."""
    tp, fp, fn, tn = (int(c) for c in counts)
    if tp + fp + fn + tn == 0:
        return {k: float("nan") for k in METRIC_NAMES}
    iou_fg, iou_bg = _ratio(tp, tp + fp + fn), _ratio(tn, tn + fp + fn)
    return {
        "iou": iou_fg,
        "miou": (iou_fg + iou_bg) / 2,
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "pixel_acc": (tp + tn) / (tp + fp + fn + tn),
    }


def class_confusion(
    pred: Array,
    target: Array,
    n_classes: int,
    valid: Optional[Array] = None,
    valid_frames: Union[None, int, Sequence[int], Array] = None,
) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 pixel counts, rows the true class, columns the predicted
    one, of the pixels that count (as :func:`confusion`)."""
    target = _tensor(target)
    pred = _tensor(pred, target.device)
    ok = _kept(target, valid, valid_frames)
    flat = target[ok].long() * n_classes + pred[ok].long()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes).cpu().numpy()


def class_scores(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Per class (``class_names``, outputs 1..): ``iou_<name>``, ``precision_<name>``,
    ``recall_<name>``, and ``class_miou``, their IoUs' mean. "Nothing there, nothing found" is 1."""
    m = np.asarray(matrix, np.int64)
    out, ious = {}, []
    for k, name in enumerate(class_names, start=1):
        tp, fp, fn = int(m[k, k]), int(m[:, k].sum() - m[k, k]), int(m[k, :].sum() - m[k, k])
        ious.append(_ratio(tp, tp + fp + fn))
        out[f"iou_{name}"] = ious[-1]
        out[f"precision_{name}"], out[f"recall_{name}"] = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"class_miou": float(np.mean(ious)) if ious else float("nan"), **out}


class PixelMetrics:
    """Accumulates ``[tp, fp, fn, tn]`` over batches, and with ``n_classes`` (a class model's
    outputs, background included) the class confusion matrix (``matrix``); :meth:`compute`
    returns the score dict."""

    def __init__(self, n_classes: int = 0):
        self.counts = np.zeros(4, np.int64)
        self.matrix = np.zeros((n_classes, n_classes), np.int64) if n_classes else None

    def update(
        self,
        pred: Array,
        target: Array,
        valid: Optional[Array] = None,
        valid_frames: Union[None, int, Sequence[int], Array] = None,
    ) -> "PixelMetrics":
        self.counts += confusion(pred, target, valid, valid_frames)
        if self.matrix is not None:
            self.matrix += class_confusion(pred, target, len(self.matrix), valid, valid_frames)
        return self

    def compute(self) -> dict[str, float]:
        return scores(self.counts)
