"""A class model's labels against the reference labels: per-class precision, recall and F1 of
matched segments, a confusion matrix and the syllable error rate.

**Matching.** Predicted segments are matched one-to-one to the reference events as the event
metrics match them (:mod:`raybird.evaluation.field_scores`): by onset and offset within
``tolerance_s`` for time-only labels, by box IoU otherwise; labels play no part in it. A match
counts for class ``c`` when both labels are ``c``. Per class: precision = such matches over the
segments labelled ``c``, recall = over the reference events labelled ``c``; ``macro_f1`` is the
mean F1 over the reference classes. The confusion matrix counts matched pairs by (reference
label, predicted label), with the unmatched references in a ``(missed)`` column and the
unmatched predictions in a ``(false alarm)`` row.

**Syllable error rate** (TweetyNet's measure, Cohen et al. 2022): per recording the edit
distance (insertions, deletions, substitutions) between the predicted and the reference label
sequences in time order, summed over recordings and divided by the number of reference
events. ``ser`` uses the segments' labels: each segment one label, the majority of its pixels'
class probability (:mod:`raybird.inference.classes`), TweetyNet's clean-up. ``ser_raw`` uses
the frame-wise labels before any clean-up (the segment run's ``--class-map``): each frame the
most common class among its mask pixels, and every run of frames of one class an element of the
sequence, as TweetyNet's raw output is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from raybird.evaluation.field_scores import event_scores, match_events, match_onsets
from raybird.io.label_masks import BIRD
from raybird.io.labels import Box

MISSED, FALSE_ALARM = "(missed)", "(false alarm)"


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two label sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def frame_labels(class_map: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """The raw label sequence of a class map ``(rows, frames)`` (k = ``class_names[k - 1]``, 0 none):
    each frame's most common class, runs of one class collapsed, frames without one separating them."""
    counts = np.stack([(class_map == k).sum(axis=0) for k in range(len(class_names) + 1)])
    counts[0] = 0
    frame = np.where(counts.any(axis=0), counts.argmax(axis=0), 0)
    starts = np.flatnonzero(np.diff(frame, prepend=0) != 0)
    return [class_names[frame[s] - 1] for s in starts if frame[s]]


def recording_classes(
    pred: Sequence[tuple],
    ref: Sequence[Box],
    raw: Optional[list[str]] = None,
    tolerance_s: float = 0.05,
    iou: float = 0.5,
    offsets: bool = True,
) -> dict:
    """One recording's counts: ``pred`` segments ``(start_s, end_s, low_hz, high_hz, label)``
    against ``ref`` events, whose label text is read as ingest reads it (stripped; none is
    :data:`~raybird.io.label_masks.BIRD`); ``raw``: its frame-wise label sequence
    (:func:`frame_labels`)."""
    pred = sorted(pred, key=lambda p: (p[0], p[1]))
    ref = [replace(b, label=b.label.strip() or BIRD) for b in sorted(ref, key=lambda b: (b.begin_s, b.end_s))]
    time_only = any(b.low_hz is None for b in ref)
    if time_only:
        m = match_onsets([p[:2] for p in pred], [(b.begin_s, b.end_s) for b in ref], tolerance_s, offsets)
    else:
        m = match_events([p[:4] for p in pred], [(b.begin_s, b.end_s, b.low_hz, b.high_hz) for b in ref], iou)
    confusion: dict[str, dict[str, int]] = {}

    def count(truth: str, got: str) -> None:
        confusion.setdefault(truth, {})[got] = confusion.get(truth, {}).get(got, 0) + 1

    for i, j in m["pairs"]:
        count(ref[j].label, pred[i][4])
    matched_pred, matched_ref = {i for i, _ in m["pairs"]}, {j for _, j in m["pairs"]}
    for j in set(range(len(ref))) - matched_ref:
        count(ref[j].label, MISSED)
    for i in set(range(len(pred))) - matched_pred:
        count(FALSE_ALARM, pred[i][4])
    truth = [b.label for b in ref]
    return dict(
        confusion=confusion,
        n_pred=len(pred),
        n_ref=len(ref),
        matched=m["tp"],
        edits=edit_distance([p[4] for p in pred], truth),
        edits_raw=None if raw is None else edit_distance(raw, truth),
    )


def pool_classes(rows: Sequence[dict]) -> dict:
    """Pooled over recordings: ``ser``, ``ser_raw`` (None unless every recording has a raw
    sequence), ``segment_f1`` (matching alone, labels aside), ``per_class`` P/R/F1, ``macro_f1``
    over the reference classes, and the ``confusion`` counts."""
    confusion: dict[str, dict[str, int]] = {}
    for r in rows:
        for truth, got in r["confusion"].items():
            for label, n in got.items():
                confusion.setdefault(truth, {})[label] = confusion.get(truth, {}).get(label, 0) + n
    n_ref, n_pred, matched = (sum(r[k] for r in rows) for k in ("n_ref", "n_pred", "matched"))
    classes = sorted({t for t in confusion if t != FALSE_ALARM})
    per_class = {}
    for c in classes:
        tp = confusion.get(c, {}).get(c, 0)
        labelled = sum(got.get(c, 0) for got in confusion.values())
        row = confusion.get(c, {})
        per_class[c] = dict(
            n_ref=sum(row.values()),
            n_pred=labelled,
            **event_scores(tp, labelled - tp, sum(row.values()) - tp),
        )
    raw = [r["edits_raw"] for r in rows]
    return dict(
        n_ref=n_ref,
        n_pred=n_pred,
        ser=sum(r["edits"] for r in rows) / n_ref if n_ref else None,
        ser_raw=sum(raw) / n_ref if n_ref and None not in raw else None,
        segment_f1=event_scores(matched, n_pred - matched, n_ref - matched)["f1"],
        macro_f1=float(np.mean([v["f1"] for v in per_class.values()])) if per_class else None,
        per_class=per_class,
        confusion=confusion,
    )


def format_per_class(pooled: dict) -> str:
    return ", ".join(
        f"{c} F1 {v['f1']:.2f} (P {v['precision']:.2f} R {v['recall']:.2f}, {v['n_ref']})"
        for c, v in pooled["per_class"].items()
    )


def format_confusion(pooled: dict) -> str:
    """The confusion counts as a Markdown table, rows the reference labels, columns the predicted."""
    conf = pooled["confusion"]
    truth = sorted(t for t in conf if t != FALSE_ALARM) + ([FALSE_ALARM] if FALSE_ALARM in conf else [])
    got = sorted({g for row in conf.values() for g in row} - {MISSED})
    got += [MISSED] if any(MISSED in row for row in conf.values()) else []
    lines = ["| true \\ predicted | " + " | ".join(got) + " |", "|---" * (len(got) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(str(conf[t].get(g, 0) or "") for g in got) + " |" for t in truth]
    return "\n".join(lines)


def score_run(
    pred_dir: str, refs: dict[str, Sequence[Box]], tolerance_s: float = 0.05, iou: float = 0.5, offsets: bool = True
):
    """:func:`pool_classes` of a segment run's recordings (and channels) against ``refs`` (source
    -> its reference events), with the raw sequences where the run stored class maps; None for
    a run of a bird/background model (its masks name no classes)."""
    from raybird.io.outputs import read_outputs

    cols = ["source", "channel", "n_rows", "n_frames", "class_map", "class_names"]
    masks = read_outputs(pred_dir, "masks", columns=cols)
    if masks.column("class_names").null_count == len(masks):
        return None
    columns = ["source", "channel", "start_s", "end_s", "low_hz", "high_hz", "label"]
    pred: dict[tuple, list] = {}
    for r in read_outputs(pred_dir, "segments", columns=columns).to_pylist():
        pred.setdefault((r["source"], r["channel"]), []).append(
            (r["start_s"], r["end_s"], r["low_hz"], r["high_hz"], r["label"])
        )
    channels = Counter(masks.column("source").to_pylist())
    rows = []
    for m in masks.to_pylist():
        if m["source"] not in refs:
            continue
        raw = None
        if m["class_map"] is not None:
            raw = frame_labels(
                np.frombuffer(m["class_map"], np.uint8).reshape(m["n_frames"], m["n_rows"]).T, m["class_names"]
            )
        # channels segmented one by one are scored against their own labels (as the pixel metrics are)
        split = channels[m["source"]] > 1
        ref = [b for b in refs[m["source"]] if not split or b.channel is None or b.channel == m["channel"]]
        rows.append(recording_classes(pred.get((m["source"], m["channel"]), []), ref, raw, tolerance_s, iou, offsets))
    return pool_classes(rows)
