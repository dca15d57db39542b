"""The labels of a class model's segments (plain NumPy): a region's class per frame, where it
changes, and each segment's label, score and runners-up.

A class model gives every pixel a probability per class (the bird probability is their sum,
one minus the background's). For each region the segmenter keeps, per frame, the sum of each
class's probability over the region's pixels (a few numbers per frame, so the stream stays
small). From those:

* **Cuts** (:func:`class_spans`): the frame's class is the one with the largest sum; a region
  whose frames change class (two syllables touching, no silent gap between them) is cut where
  they change. Runs shorter than :data:`MIN_RUN_S` join their longer neighbour first, so a
  few frames of doubt inside a syllable do not split it.
* **Label** (:func:`label_of`): a segment's label is the class with the largest probability
  summed over its pixels, a majority vote weighted by confidence (TweetyNet's clean-up takes
  the majority of the frames' labels); ``label_score`` is that class's mean probability over the
  segment's pixels, and the top :data:`TOP` classes come with theirs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

MIN_RUN_S = 0.03  # shorter runs of one class inside a region join a neighbour (see "Cuts")
TOP = 3


def _run_class(sums: np.ndarray, run: list[int]) -> int:
    return int(sums[:, run[0] : run[1] + 1].sum(axis=1).argmax())


def _join_same(runs: list[list[int]], sums: np.ndarray) -> list[list[int]]:
    out = [runs[0]]
    for run in runs[1:]:
        if _run_class(sums, run) == _run_class(sums, out[-1]):
            out[-1] = [out[-1][0], run[1]]
        else:
            out.append(run)
    return out


def class_spans(sums: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """Column ranges (first, last; inclusive) of one class each, covering the ``(K, T)`` class
    sums of a region in order (see "Cuts")."""
    frame_class = sums.argmax(axis=0)
    edges = (np.flatnonzero(np.diff(frame_class)) + 1).tolist()
    runs = [[a, b] for a, b in zip([0, *edges], [e - 1 for e in edges] + [sums.shape[1] - 1])]
    while len(runs) > 1:
        lengths = [b - a + 1 for a, b in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_frames:
            break
        if i == 0 or (i < len(runs) - 1 and lengths[i + 1] > lengths[i - 1]):
            j = i + 1
        else:
            j = i - 1
        lo, hi = min(i, j), max(i, j)
        runs[lo : hi + 1] = [[runs[lo][0], runs[hi][1]]]
        runs = _join_same(runs, sums)
    return [(a, b) for a, b in runs]


def label_of(class_sums: Optional[np.ndarray], n_pixels: int, class_names: Sequence[str]) -> dict:
    """``label``, ``label_score`` and the ``top`` classes ``((name, mean probability), ...)`` of
    a segment from its class probabilities summed over its ``n_pixels`` pixels; None / () for a
    bird/background model (``class_sums`` None)."""
    if class_sums is None:
        return dict(label=None, label_score=None, top=())
    mean = np.asarray(class_sums, np.float64) / max(n_pixels, 1)
    order = np.argsort(-mean, kind="stable")[:TOP]
    top = tuple((class_names[k], float(mean[k])) for k in order)
    return dict(label=top[0][0], label_score=top[0][1], top=top)


def class_map(mask: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """uint8 ``(rows, n)``: 1 + the most probable class where ``mask`` is set, 0 elsewhere."""
    return np.where(mask, classes.argmax(axis=0) + 1, 0).astype(np.uint8)
