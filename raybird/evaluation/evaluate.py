"""Evaluation: a segment run's predictions (``masks/`` + ``segments/``) against reference labels.

**Which reference belongs to which prediction.** References are found the way ingest finds
labels: ``--ref`` takes what ``raybird segment`` takes (folders, globs, archives, ``s3://``
prefixes, manifests) and each recording's labels are looked up next to it
(:func:`raybird.io.label_files.load_labels`); label files can also be named directly (a Raven table,
``<stem>.truth.npz``, ``JSON/<stem>.JSON``, ``Masks/<stem>.png`` ...), for predictions made on
audio that lives elsewhere. A predicted recording is matched to a reference by its ``source``
URI when that is the same recording, else by file stem where that is unambiguous
(:class:`ReferenceIndex`). Predictions without a reference, references without a prediction
and referenced recordings the segment run failed on are listed in the report, not scored.

**Pixel metrics** (:func:`evaluate_masks`, :mod:`raybird.training.metrics`): the reference is drawn onto
the prediction's grid (its ``spec_config``) with :func:`raybird.io.label_masks.label_mask`; foreground
IoU, mean IoU, Dice and pixel accuracy. Time-only references are full-band columns there.
:func:`error_anatomy` sorts the pixel errors: within ``EDGE_PX`` pixels of the other mask (a
boundary traced a little differently), in regions the other mask does not touch (a call missed,
a false alarm), or neither (a region found in part); ``iou_edge_tolerant`` is the IoU with the
first kind forgiven, how much of the shortfall is where the edges are drawn.

**Event metrics.** References with frequencies are matched to predicted segments one-to-one by
time-frequency box IoU >= ``iou`` (:func:`match_events`); time-only references (Audacity,
time-only Raven rows) by onset and offset both within ``tolerance_s`` (:func:`match_onsets`, in
the manner of ``mir_eval.transcription``), the predictions first projected onto the time axis (overlapping
segments merged: a time-only label cannot tell two bands of one call apart). Both maximise the
*number* of matched pairs (maximum bipartite matching, as mir_eval does), closeness only
breaking ties. Reference events are the label boxes; a pixel-mask reference (synthetic truth,
BirdSoundsDenoising) uses the box table next to it when there is one (the synthetic Raven
table: one box per call, all harmonics inside), else the mask's 8-connected regions, boxed like
the segment job's (``events_from="mask"`` always takes the regions: a perfect pixel mask then
scores F1 1, whereas against per-call boxes the separate regions of a call's harmonics count
as misses).
``detected`` counts the reference events that some prediction overlaps at all: a lenient
recall for coarse labels (one box per song) that IoU matching cannot credit. Matched, covered
and detected events are also counted per reference label (:func:`label_counts`, pooled by
:func:`pool_labels`): recall per species or call type, whatever the label files name.

**Coverage** (:func:`coverage`), for coarse labels: a reference event is *covered* when the
predictions overlapping it in frequency cover at least ``min_cover`` (default half) of its time
span, and a prediction is *covered* when the reference events overlapping it in frequency cover
that much of its span (time-only references: time alone). ``covered / n_ref`` is a recall that a
whole-song box earns from the song's syllables, and ``pred_covered / n_pred`` the matching
precision: a prediction mostly outside every labelled box is a false alarm. Not one-to-one, so
for tight per-call labels the IoU and onset matching above remain the measure.

**The field's measures** (:mod:`raybird.evaluation.field_scores`, ``field`` in every row and in the pooled
scores): frame precision/recall/F1 on 10-ms frames, segment F1 with onset and offset within
20 ms, onset F1 within 10 ms, median onset/offset errors, and box recall/precision (a
prediction at least half inside a label), the measures published segmenters report.

**Labels** (:mod:`raybird.evaluation.classes`, ``classes`` in the report), for a class
model's run: per-class precision/recall/F1 of matched segments, the confusion matrix and the
syllable error rate, with and without the majority-vote clean-up.

**Pooling.** Per recording and channel, and pooled: confusion counts summed (micro average),
TP/FP/FN summed. "Nothing there, nothing found" scores 1 (as in :mod:`raybird.training.metrics`).
The report is a JSON file (settings, pooled scores, per-recording rows and the lists above) and
a Parquet table of the per-recording rows (:data:`REPORT_SCHEMA`).
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raybird.dsp.spectrogram import SpecConfig
from raybird.evaluation import classes, field_scores
from raybird.evaluation.field_scores import event_scores
from raybird.evaluation.references import Reference, ReferenceIndex, _stem, load_references
from raybird.evaluation.scores import EDGE_PX, _edge_tolerant_iou, error_shares, evaluate_recording
from raybird.flags import flag
from raybird.io import storage
from raybird.io.outputs import output_dataset, read_outputs
from raybird.io.tables import read_mask, write_file
from raybird.training.metrics import scores

REPORT_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source", pa.string()),
        ("reference", pa.string()),
        ("channel", pa.int16()),
        ("event_mode", pa.string()),
        ("n_pred", pa.int32()),
        ("n_ref", pa.int32()),
        ("tp", pa.int32()),
        ("fp", pa.int32()),
        ("fn", pa.int32()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("f1", pa.float64()),
        ("detected", pa.int32()),
        ("covered", pa.int32()),
        ("pred_covered", pa.int32()),
        ("px_tp", pa.int64()),
        ("px_fp", pa.int64()),
        ("px_fn", pa.int64()),
        ("px_tn", pa.int64()),
        ("iou", pa.float64()),
        ("miou", pa.float64()),
        ("dice", pa.float64()),
        ("pixel_acc", pa.float64()),
        ("px_fn_edge", pa.int64()),
        ("px_fp_edge", pa.int64()),
        ("px_fn_missed", pa.int64()),
        ("px_fp_invented", pa.int64()),
        ("iou_edge_tolerant", pa.float64()),
        ("model_id", pa.string()),
    ]
)


# ---- references ---------------------------------------------------------------------------------
# ---- predictions --------------------------------------------------------------------------------
def _predictions(pred_dir: str) -> Iterator[dict]:
    """One dict per masks-table row (recording x channel): ids, grid, decoded mask, segment boxes,
    and ``split`` (several channels of one recording)."""
    seg = read_outputs(
        pred_dir, "segments", columns=["recording_id", "channel", "start_s", "end_s", "low_hz", "high_hz"]
    )
    cols = {c: seg.column(c).to_numpy() for c in seg.column_names}
    arr = np.c_[cols["start_s"], cols["end_s"], cols["low_hz"], cols["high_hz"]].astype(float)
    rows: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(cols["recording_id"].tolist(), cols["channel"].tolist())):
        rows.setdefault(key, []).append(i)
    boxes = {key: arr[idx] for key, idx in rows.items()}
    n_channels: dict[str, int] = {}
    for rid in read_outputs(pred_dir, "masks", columns=["recording_id"]).column("recording_id").to_pylist():
        n_channels[rid] = n_channels.get(rid, 0) + 1
    if not n_channels:
        return
    ds = output_dataset(pred_dir, "masks")
    columns = ["recording_id", "source", "channel", "n_rows", "n_frames", "mask", "spec_config", "model_id"]
    for batch in ds.to_batches(columns=columns, batch_size=16):
        for row in batch.to_pylist():
            key = (row["recording_id"], row["channel"])
            yield dict(
                row,
                mask=read_mask(row),
                cfg=SpecConfig.from_json(row["spec_config"]),
                boxes=boxes.get(key, np.zeros((0, 4))),
                split=n_channels[row["recording_id"]] > 1,
            )


# ---- the run ------------------------------------------------------------------------------------
def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def pool(rows: Sequence[dict]) -> dict:
    """Pooled scores of per-recording rows: summed confusion counts and summed TP/FP/FN."""
    px = [sum(r[k] for r in rows) for k in ("px_tp", "px_fp", "px_fn", "px_tn")]
    anatomy = {k: sum(r[k] for r in rows) for k in ("px_fn_edge", "px_fp_edge", "px_fn_missed", "px_fp_invented")}
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    n_ref, n_pred = sum(r["n_ref"] for r in rows), sum(r["n_pred"] for r in rows)
    covered, pred_covered = sum(r["covered"] for r in rows), sum(r["pred_covered"] for r in rows)
    return dict(
        recordings=len({r["recording_id"] for r in rows}),
        rows=len(rows),
        n_pred=n_pred,
        n_ref=n_ref,
        tp=tp,
        fp=fp,
        fn=fn,
        **event_scores(tp, fp, fn),
        detected=sum(r["detected"] for r in rows),
        detected_frac=sum(r["detected"] for r in rows) / n_ref if n_ref else 1.0,
        covered=covered,
        pred_covered=pred_covered,
        cover_recall=covered / n_ref if n_ref else 1.0,
        cover_precision=pred_covered / n_pred if n_pred else 1.0,
        **dict(zip(("px_tp", "px_fp", "px_fn", "px_tn"), px)),
        **scores(px),
        **anatomy,
        iou_edge_tolerant=_edge_tolerant_iou(dict(zip(("px_tp", "px_fp", "px_fn"), px), **anatomy)),
        labels=pool_labels(rows),
        field=field_scores.pooled([r["field"] for r in rows]),
    )


def pool_labels(rows: Sequence[dict]) -> dict[str, dict]:
    """Per reference label (species, call type: what the label files name), summed over the
    rows: ``events``, and how many were ``matched`` (one-to-one), ``covered`` and ``detected``,
    with each as a share of the events. Sorted by events, most first."""
    sums: dict[str, np.ndarray] = {}
    for r in rows:
        for label, counts in r["labels"].items():
            sums[label] = sums.get(label, 0) + np.asarray(counts)
    out = {}
    for label, (n, matched, covered, detected) in sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0])):
        out[label] = dict(
            events=int(n),
            matched=int(matched),
            covered=int(covered),
            detected=int(detected),
            recall=matched / n,
            cover_recall=covered / n,
            detected_frac=detected / n,
        )
    return out


@dataclass
class Report:
    rows: list[dict]  # per recording and channel (REPORT_SCHEMA)
    pooled: dict
    settings: dict
    unmatched: list[dict] = field(default_factory=list)  # predictions without a reference
    missing: list[str] = field(default_factory=list)  # references without a prediction
    errors: list[dict] = field(default_factory=list)  # referenced recordings the run failed on
    reference_errors: list[dict] = field(default_factory=list)  # unreadable label files
    classes: Optional[dict] = None  # a class model's labels (raybird.evaluation.classes.pool_classes)

    def to_dict(self) -> dict:
        return _finite(
            dict(
                settings=self.settings,
                pooled=self.pooled,
                classes=self.classes,
                recordings=self.rows,
                unmatched=self.unmatched,
                missing=self.missing,
                errors=self.errors,
                reference_errors=self.reference_errors,
            )
        )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=REPORT_SCHEMA)

    def format(self, max_rows: int = 40) -> str:
        head = (
            f"{'recording':<28} {'ch':>2} {'mode':<5} {'ref':>4} {'pred':>4} {'P':>5} {'R':>5} {'F1':>5} "
            f"{'det':>5} {'cP':>5} {'cR':>5} {'IoU':>5} {'mIoU':>5} {'Dice':>5} {'acc':>5}"
        )

        def line(name, ch, r):
            det, c_r = (r[k] / r["n_ref"] if r["n_ref"] else 1.0 for k in ("detected", "covered"))
            c_p = r["pred_covered"] / r["n_pred"] if r["n_pred"] else 1.0
            return (
                f"{name[-28:]:<28} {ch:>2} {r.get('event_mode', ''):<5} {r['n_ref']:>4} {r['n_pred']:>4} "
                f"{r['precision']:5.3f} {r['recall']:5.3f} {r['f1']:5.3f} {det:5.3f} {c_p:5.3f} {c_r:5.3f} "
                f"{r['iou']:5.3f} {r['miou']:5.3f} {r['dice']:5.3f} {r['pixel_acc']:5.3f}"
            )

        rows = sorted(self.rows, key=lambda r: (r["source"], r["channel"]))
        out = [head] + [line(_stem(r["source"]), r["channel"], r) for r in rows[:max_rows]]
        if len(rows) > max_rows:
            out.append(f"... {len(rows) - max_rows} more rows in the report")
        out.append(line(f"POOLED ({self.pooled['recordings']} recordings)", "", self.pooled))
        by_label = self.pooled["labels"]
        if len(by_label) > 1:
            out.append(f"{'label':<28} {'events':>6} {'R':>5} {'cR':>5} {'det':>5}")
            out += [
                f"{(label or '(none)')[-28:]:<28} {c['events']:>6} {c['recall']:5.3f} {c['cover_recall']:5.3f} "
                f"{c['detected_frac']:5.3f}"
                for label, c in list(by_label.items())[:max_rows]
            ]
            if len(by_label) > max_rows:
                out.append(f"... {len(by_label) - max_rows} more labels in the report")
        out.append(field_line(self.pooled["field"]))
        if self.classes and self.classes["ser"] is not None:  # None: no reference event scored
            c = self.classes
            raw = "" if c["ser_raw"] is None else f", raw {c['ser_raw']:.1%}"
            out.append(f"labels: syllable error rate {c['ser']:.1%}{raw}; class macro F1 {c['macro_f1']:.3f}")
            out.append("per class: " + classes.format_per_class(c))
        if self.pooled["px_fp"] + self.pooled["px_fn"]:
            share = error_shares(self.pooled)
            out.append(
                f"pixel errors: {share['edges']:.0%} within {EDGE_PX} px of the other mask (IoU with those "
                f"forgiven {self.pooled['iou_edge_tolerant']:.3f}), {share['missed']:.0%} in regions missed "
                f"whole, {share['invented']:.0%} in false alarms"
            )
        notes = [
            (self.unmatched, "predictions without a reference"),
            (self.missing, "references not segmented"),
            (self.errors, "recordings the segment run failed on"),
            (self.reference_errors, "unreadable labels"),
        ]
        out += [f"{len(items)} {what}" for items, what in notes if items]
        return "\n".join(out)


def field_line(f: dict) -> str:
    """The pooled measures of :mod:`raybird.evaluation.field_scores` in one line."""

    def num(x, spec=".3f"):
        return "—" if x is None else format(x, spec)

    line = (
        f"field measures: frame P/R/F1 {num(f['frame_precision'])}/{num(f['frame_recall'])}/{num(f['frame_f1'])} "
        f"(10-ms frames), segment F1 {num(f['segment_f1'])} (onset and offset within 20 ms), onset F1 "
        f"{num(f['onset_f1'])} (10 ms), median onset/offset error {num(f['onset_error_ms'], '+.1f')}/"
        f"{num(f['offset_error_ms'], '+.1f')} ms"
    )
    if f["box_recall"] is not None:
        line += f", box recall/precision {num(f['box_recall'])}/{num(f['box_precision'])} (half inside)"
    return line


def evaluate_run(
    pred_dir: str,
    refs: Union[Sequence[str], Sequence[Reference]],
    iou: float = 0.5,
    tolerance_s: float = 0.05,
    offsets: bool = True,
    events_from: str = "labels",
    min_cover: float = 0.5,
) -> Report:
    """Evaluate a segment run's output folder against references (label inputs as for
    ``--ref``, read with :func:`load_references`, or :class:`Reference` objects)."""
    problems: list[dict] = []
    if refs and isinstance(refs[0], str):
        refs, problems = load_references(refs, events_from)
    index = ReferenceIndex(refs)
    failed = read_outputs(pred_dir, "errors", columns=["recording_id", "source", "stage", "reason"]).to_pylist()
    sources = read_outputs(pred_dir, "masks", columns=["source"]).column("source").to_pylist()
    assigned = index.assign(sources + [e["source"] for e in failed])
    rows, unmatched, used = [], [], set()
    for p in _predictions(pred_dir):
        ref, why = assigned[p["source"]]
        if ref is None:
            unmatched.append(dict(recording_id=p["recording_id"], source=p["source"], channel=p["channel"], reason=why))
            continue
        used.add(id(ref))
        ch = p["channel"] if p["split"] else None
        m = evaluate_recording(p["mask"], p["boxes"], ref, p["cfg"], ch, iou, tolerance_s, offsets, min_cover)
        rows.append(
            dict(
                recording_id=p["recording_id"],
                source=p["source"],
                reference=ref.source,
                channel=p["channel"],
                **m,
                model_id=p["model_id"],
            )
        )
    errors = [e for e in failed if assigned[e["source"]][0] is not None]  # the others are not evaluated
    used |= {id(assigned[e["source"]][0]) for e in errors}
    missing = sorted(r.source for r in index.refs if id(r) not in used)
    settings = dict(
        pred=str(pred_dir),
        iou=iou,
        tolerance_s=tolerance_s,
        offsets=offsets,
        events_from=events_from,
        min_cover=min_cover,
    )
    refs_by_source = {s: ref.events for s, (ref, _) in assigned.items() if ref is not None}
    labelled = classes.score_run(pred_dir, refs_by_source, tolerance_s, iou, offsets)
    return Report(rows, pool(rows), settings, unmatched, missing, errors, problems, labelled)


def write_report(report: Report, out: str) -> tuple[str, str]:
    """``out`` ending in ``.json``: that file and the Parquet table beside it (same stem);
    otherwise a folder (local or ``s3://``) receiving ``report.json`` and ``report.parquet``."""
    if out.endswith(".json"):
        json_path, parquet_path = out, out[: -len(".json")] + ".parquet"
    else:
        json_path, parquet_path = storage.join(out, "report.json"), storage.join(out, "report.parquet")
    text = json.dumps(report.to_dict(), indent=1)
    for path, writer in (
        (json_path, lambda p: Path(p).write_text(text)),
        (parquet_path, lambda p: pq.write_table(report.table(), p)),
    ):
        write_file(posixpath.dirname(path) or ".", posixpath.basename(path), writer)
    return json_path, parquet_path


# ---- command line -------------------------------------------------------------------------------
@dataclass
class EvaluateConfig:
    """``raybird evaluate``."""

    pred: str = flag(help="the segment run's output folder or s3:// prefix")
    ref: list[str] = flag(
        help="labelled recordings (folders, globs, archives, s3://, manifests) or label files", nargs="+"
    )
    out: Optional[str] = flag(None, "report folder, or a .json path (default: PRED/evaluation)")
    iou: float = flag(0.5, "box IoU for a matched event")
    tolerance: float = flag(0.05, "onset/offset tolerance (s), time-only labels")
    onsets_only: bool = flag(False, "time-only labels: do not require matching offsets")
    ref_events: str = flag(
        "labels",
        "events of a pixel-mask reference: the box table beside it, or the mask's regions",
        choices=("labels", "mask"),
    )
    min_cover: float = flag(0.5, "coverage scores (cP, cR): fraction of an event's time span the other side must cover")
    max_rows: int = flag(40, "recordings printed in the table")


def cmd_evaluate(c: EvaluateConfig) -> int:
    report = evaluate_run(c.pred, c.ref, c.iou, c.tolerance, not c.onsets_only, c.ref_events, c.min_cover)
    json_path, parquet_path = write_report(report, c.out or storage.join(c.pred, "evaluation"))
    print(report.format(c.max_rows))
    print(f"evaluate: report in {json_path} and {parquet_path}")
    if not report.rows:
        print("evaluate: no prediction matched a reference")
        return 1
    return 0
