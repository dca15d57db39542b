"""What the accuracy benchmark reports: the SNR bands and real sets it scores, the published
numbers beside ours, and its tables (synthetic by band, intervals and differences, error
anatomy, call types, real recordings, and the long-format table behind them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from benchmarks.common import table
from raybird.evaluation.field_scores import event_scores, match_events
from raybird.evaluation.references import load_references
from raybird.evaluation.scores import EDGE_PX, error_shares, mask_events

BANDS = ("≤0 dB", "0–10 dB", "≥10 dB")
ALL = "all"


# The report's Table 2 (foreground IoU %, on BirdSoundsDenoising's test set, not ours) and its
# own U-Net (IoU 63.23 %, pixel accuracy 89.45 %, Dice 0.72); see DESIGN.md.
PUBLISHED = {
    "U-Net": dict(iou=0.629),
    "SegNet": dict(iou=0.653),
    "DeepLabV3": dict(iou=0.723),
    "ViT (Kumar et al.)": dict(iou=0.800),
    "U-Net (the report's own)": dict(iou=0.6323, dice=0.72, pixel_acc=0.8945),
}


@dataclass(frozen=True)
class RealSet:
    name: str
    inputs: tuple[str, ...]  # audio to segment, relative to the real-data folder
    refs: tuple[str, ...]  # where evaluate finds the labels
    labels: str
    pixels: bool  # a pixel-mask reference: pixel IoU means something


REAL_SETS = (
    RealSet(
        "storm-petrel",
        ("pykanto/storm_petrel",),
        ("pykanto/storm_petrel",),
        "Sonic Visualiser boxes, one per song",
        False,
    ),
    RealSet("great tit", ("pykanto/great_tit/WAV",), ("pykanto/great_tit",), "pykanto JSON, one box per song", False),
    RealSet("BSD XC41136", ("bsd_sample/Test/Raw_audios",), ("bsd_sample",), "pixel mask (events: its regions)", True),
    RealSet("Bengalese finch", ("bengalese_finch",), ("bengalese_finch",), "Audacity, time-only syllables", False),
)


METRICS = (("iou", "IoU"), ("dice", "Dice"), ("pixel_acc", "acc"), ("f1", "F1"))


def _f(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.3f}"


def synthetic_table(results: dict[str, dict]) -> str:
    """Rows: models; columns: IoU, Dice, pixel accuracy and event F1 for each SNR band, then all."""
    bands = [*BANDS, ALL]
    headers = ["model"] + [f"{label} {b}" for b in bands for _, label in METRICS]
    rows = [
        [name] + [_f(by_band[b][k]) if b in by_band else "—" for b in bands for k, _ in METRICS]
        for name, by_band in results.items()
    ]
    return table(headers, rows)


def interval_table(results: dict[str, dict]) -> str:
    """Foreground IoU per SNR band with its 95 % bootstrap interval."""
    bands = [*BANDS, ALL]
    rows = [
        [name]
        + [f"{m['iou']:.3f} [{m['iou_lo']:.2f}, {m['iou_hi']:.2f}]" if (m := by_band.get(b)) else "—" for b in bands]
        for name, by_band in results.items()
    ]
    return table(["model"] + [f"IoU {b} [95 % interval]" for b in bands], rows)


def difference_table(first: str, diffs: dict[str, dict]) -> str:
    """IoU of the first model minus each other model's, per band, with the paired interval."""
    bands = [*BANDS, ALL]
    rows = [
        [f"{first} − {name}"]
        + [f"{d[0]:+.3f} [{d[1]:+.2f}, {d[2]:+.2f}]" if (d := by_band.get(b)) else "—" for b in bands]
        for name, by_band in diffs.items()
    ]
    return table(["difference"] + [f"IoU {b} [95 % interval]" for b in bands], rows)


def anatomy_table(results: dict[str, dict]) -> str:
    """Where each model's pixel errors lie, per band (:func:`raybird.evaluation.scores.error_anatomy`):
    shares of all errors (FP + FN) on edges, in calls missed whole, in false alarms, and the rest
    (inside calls found in part); and the IoU with the edge errors forgiven."""
    rows = []
    for name, by_band in results.items():
        for b in [*BANDS, ALL]:
            if (m := by_band.get(b)) is None:
                continue
            share = error_shares(m)
            rows.append(
                [name, b, _f(m["iou"]), _f(m["iou_edge_tolerant"])]
                + [f"{share[k]:.0%}" for k in ("edges", "missed", "invented", "rest")]
            )
    return table(
        [
            "model",
            "band",
            "IoU",
            f"IoU, edges forgiven ({EDGE_PX} px)",
            "errors on edges",
            "in calls missed whole",
            "in false alarms",
            "inside calls found in part",
        ],
        rows,
    )


def call_type_table(by_band: dict[str, dict]) -> str:
    """One model's calls by type (the synthetic labels are ``<species>-<call type>``), per band:
    how many there were, and the shares detected (overlapped by a segment at all) and covered
    (half their span inside segments of their band)."""
    bands = [b for b in [*BANDS, ALL] if b in by_band]
    kinds: dict[str, dict[str, np.ndarray]] = {}
    for b in bands:
        for label, c in by_band[b]["labels"].items():
            sums = kinds.setdefault(label.rsplit("-", 1)[-1], {})
            sums[b] = sums.get(b, 0) + np.array([c["events"], c["detected"], c["covered"]])

    def cell(counts) -> str:
        return "—" if counts is None else f"{counts[1] / counts[0]:.2f} / {counts[2] / counts[0]:.2f} ({counts[0]})"

    rows = [
        [kind] + [cell(sums.get(b)) for b in bands]
        for kind, sums in sorted(kinds.items(), key=lambda kv: -kv[1][ALL][0])
    ]
    return table(["call type"] + [f"{b}: detected / covered (calls)" for b in bands], rows)


def real_table(results: dict[str, dict]) -> str:
    headers = [
        "data set",
        "labels",
        "model",
        "recordings",
        "labelled",
        "segments",
        "precision (coverage)",
        "recall (coverage)",
        "strict P",
        "strict R",
        "strict F1",
        "pixel IoU",
    ]
    rows = []
    for rs in REAL_SETS:
        for name, by_set in results.items():
            r = by_set[rs.name]
            rows.append(
                [
                    rs.name,
                    rs.labels,
                    name,
                    r["recordings"],
                    r["n_ref"],
                    r["n_pred"],
                    _f(r["cover_precision"]),
                    _f(r["cover_recall"]),
                    _f(r["precision"]),
                    _f(r["recall"]),
                    _f(r["f1"]),
                    _f(r["iou"]) if rs.pixels else "—",
                ]
            )
    return table(headers, rows, "lll" + "r" * 9)


def published_table() -> str:
    return table(
        ["model (BirdSoundsDenoising test set, as published)", "IoU", "Dice", "pixel acc"],
        [[name, _f(m.get("iou")), _f(m.get("dice")), _f(m.get("pixel_acc"))] for name, m in PUBLISHED.items()],
    )


def event_ceiling(test_dir: Path) -> dict:
    """Event scores of the exact truth masks themselves: the most a perfect pixel segmenter can
    get against per-call boxes (touching calls make one region, trill notes several)."""
    refs, _ = load_references([str(test_dir)])
    tp = n_pred = n_ref = 0
    for ref in refs:
        boxes = lambda bs: [(b.begin_s, b.end_s, b.low_hz, b.high_hz) for b in bs]  # noqa: E731
        pred = boxes(mask_events(ref.pixels))
        m = match_events(pred, boxes(ref.events))
        tp, n_pred, n_ref = tp + m["tp"], n_pred + len(pred), n_ref + len(ref.events)
    return dict(tp=tp, n_pred=n_pred, n_ref=n_ref, **event_scores(tp, n_pred - tp, n_ref - tp))


def long_table(synthetic: dict, real: dict) -> pa.Table:
    rows = []
    for name, by_band in synthetic.items():
        for band, m in by_band.items():
            rows.append(dict(model=name, data="synthetic", subset=band, **{k: m.get(k) for k in _COLUMNS}))
    for name, by_set in real.items():
        for subset, m in by_set.items():
            rows.append(dict(model=name, data="real", subset=subset, **{k: m.get(k) for k in _COLUMNS}))
    schema = pa.schema(
        [("model", pa.string()), ("data", pa.string()), ("subset", pa.string())]
        + [(k, pa.int64() if k in _INTS else pa.float64()) for k in _COLUMNS]
    )
    return pa.Table.from_pylist(rows, schema=schema)


_INTS = (
    "recordings",
    "n_pred",
    "n_ref",
    "tp",
    "fp",
    "fn",
    "covered",
    "pred_covered",
    "px_fn_edge",
    "px_fp_edge",
    "px_fn_missed",
    "px_fp_invented",
)
_COLUMNS = _INTS + (
    "iou",
    "iou_lo",
    "iou_hi",
    "iou_edge_tolerant",
    "miou",
    "dice",
    "pixel_acc",
    "precision",
    "recall",
    "f1",
    "cover_precision",
    "cover_recall",
)
