"""Accuracy on the shared real recordings, scored as the field scores it, with a classical peer.

    python -m benchmarks.real                                  # every set, the shipped model
    python -m benchmarks.real --model U-Net=runs/unet/best/checkpoint.pt --sets finch,monk
    python -m benchmarks.real --quick                          # monk parakeet + monitor survey -> out/real-quick

**Methods**, run on the same files: each ``--model NAME=CKPT`` (default: the shipped model),
the threshold baseline (:mod:`raybird.models.baseline`), both predicted in this process with the
segment job's default :class:`raybird.inference.recording.SegmentOptions` (cached under ``OUT/pred`` per
checkpoint hash, inputs, options and raybird's code, :func:`benchmarks.accuracy.predict`: a re-run
only scores), and
scikit-maad's documented ROI recipe (:mod:`benchmarks.maad_peer`), the classical peer.

**Measures** (:mod:`raybird.evaluation.field_scores`, counts summed over a set's recordings): frame
precision/recall/F1 on 10-ms frames; segment F1 with onset and offset both within 20 ms,
one-to-one (WhisperSeg's); onset F1 within 10 ms (DAS's); the median onset and offset errors,
predicted minus labelled, signed / absolute, in ms, over the labels matched with both within
50 ms; box recall (a label with a predicted box at least half inside it) and box precision (a
prediction at least half inside a label) where the labels have frequencies.

**Sets** (:data:`SETS`; labels found by :func:`raybird.io.label_files.find_labels`, a pixel mask boxed
into its regions by :func:`raybird.evaluation.scores.mask_events`). Storm-petrel, great tit (its pykanto
JSON files have no onsets: one box per song clip) and the monitoR survey (one box per song) are
*coarse*: segment and onset F1 against them are near 0 by construction and marked †. The
bellbird labels are incomplete (only the calls studied are boxed): recall-type measures only.

Output: per set a table (rows: methods), a summary (the first model against the peer per set,
and the spread of the frame-F1 differences), printed and in ``OUT/real.md``; everything in
``OUT/real.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from benchmarks.accuracy import BASELINE, REAL_DEFAULT, parse_models, predict
from benchmarks.common import table
from benchmarks.maad_peer import maad_rois
from raybird.evaluation.field_scores import pooled, recording_counts
from raybird.evaluation.scores import mask_events
from raybird.inference import recording
from raybird.io import outputs
from raybird.io.label_files import find_labels
from raybird.io.labels import Box, GridMask
from raybird.models import baseline, checkpoint

PEER = "scikit-maad ROIs"


@dataclass(frozen=True)
class FieldSet:
    key: str  # its name for --sets
    name: str
    audio: str  # glob of its recordings under the real-data folder
    labels: str  # what its labels are
    coarse: bool = False  # one box per song: segment and onset F1 are near 0 by construction
    recall_only: bool = False  # incomplete labels: no precision, no F1


SETS = (
    FieldSet("finch", "Bengalese finch", "bengalese_finch/*.wav", "Audacity, time-only, per syllable"),
    FieldSet(
        "great-tit", "great tit", "pykanto/great_tit/WAV/*.wav", "pykanto JSON, one box per song clip", coarse=True
    ),
    FieldSet(
        "storm-petrel", "storm-petrel", "pykanto/storm_petrel/*.wav", "Sonic Visualiser, one box per song", coarse=True
    ),
    FieldSet("bsd", "BSD XC41136", "bsd_sample/Test/Raw_audios/*.wav", "pixel mask, boxed per region"),
    FieldSet("monitor", "monitoR survey", "monitor_survey/survey.flac", "Raven, one box per song", coarse=True),
    FieldSet("monk", "monk parakeet", "monk_parakeet/*.flac", "Audacity, time-only, one call per clip"),
    FieldSet(
        "bellbird", "Costa Rica bellbird", "bellbird/*.flac", "Raven boxes per call, incomplete", recall_only=True
    ),
)
QUICK = ("monk", "monitor")


def reference_events(audio: str) -> list[Box]:
    """The labelled events of one recording (a pixel mask's 8-connected regions, boxed)."""
    labels = find_labels(audio)
    if labels is None:
        raise ValueError(f"{audio}: no labels found")
    return mask_events(labels) if isinstance(labels, GridMask) else labels


def duration_s(audio: str) -> float:
    """The decoded length (the header's is an estimate for MP3 data: 4.47 s for the 4.08 s of BSD's clip)."""
    x, sr = sf.read(audio, dtype="int16", always_2d=True)
    return len(x) / sr


def model_segments(
    ckpt: checkpoint.Checkpoint,
    files: list[str],
    out: Path,
    threads: Optional[int],
    options: recording.SegmentOptions = recording.SegmentOptions(),
) -> tuple[dict[str, list], list[str]]:
    """Segments ``(start_s, end_s, low_hz, high_hz)`` per recording, and the recordings the
    segment job failed on."""
    pred = predict(ckpt, files, out, options, threads)
    rows = outputs.read_outputs(pred, "segments").select(["source", "start_s", "end_s", "low_hz", "high_hz"])
    by_source: dict[str, list] = {}
    for r in rows.to_pylist():
        by_source.setdefault(r["source"], []).append((r["start_s"], r["end_s"], r["low_hz"], r["high_hz"]))
    if unknown := set(by_source) - set(files):
        raise RuntimeError(f"segments of recordings not asked for: {sorted(unknown)[:3]}")
    return by_source, outputs.read_outputs(pred, "errors").column("source").to_pylist()


def segment_options(pairs: list[str]) -> recording.SegmentOptions:
    """``["min_level_db=6", "group_overlap=none"]`` -> the segment job's defaults with those set."""
    fields = {f.name: f for f in dataclasses.fields(recording.SegmentOptions)}
    values = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields:
            raise SystemExit(f"unknown segment option {name!r}; choose from {sorted(fields)}")
        values[name] = None if value.lower() == "none" else json.loads(value)
    return recording.SegmentOptions(**values)


# ---- tables -------------------------------------------------------------------------------------
def _num(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.3f}"


def _signed(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:+.3f}"


def _ms(signed: Optional[float], absolute: Optional[float]) -> str:
    return "—" if signed is None else f"{signed:+.1f} / {absolute:.1f}"


def set_table(fs: FieldSet, methods: dict[str, dict]) -> str:
    """Rows: methods; columns: the measures the set's labels support."""
    mark = " †" if fs.coarse else ""

    def timing(m: dict) -> list:
        return [
            _ms(m["onset_error_ms"], m["onset_abs_error_ms"]),
            _ms(m["offset_error_ms"], m["offset_abs_error_ms"]),
            m["n_timed"],
        ]

    timing_headers = ["onset error ms (median signed / abs)", "offset error ms", "timed labels"]
    if fs.recall_only:
        headers = [
            "method",
            "time predicted",
            "frame R",
            "segment R (20 ms)",
            "onset R (10 ms)",
            *timing_headers,
            "box recall",
            "labels",
            "predictions",
        ]
        rows = [
            [
                name,
                f"{m['predicted_share']:.0%}",
                _num(m["frame_recall"]),
                _num(m["segment_recall"]),
                _num(m["onset_recall"]),
                *timing(m),
                _num(m["box_recall"]),
                m["n_labels"],
                m["n_pred"],
            ]
            for name, m in methods.items()
        ]
    else:
        headers = [
            "method",
            "frame P",
            "frame R",
            "frame F1",
            "segment F1 (20 ms)",
            "onset F1 (10 ms)",
            *timing_headers,
            "box recall",
            "box precision",
            "labels",
            "predictions",
        ]
        rows = [
            [
                name,
                _num(m["frame_precision"]),
                _num(m["frame_recall"]),
                _num(m["frame_f1"]),
                _num(m["segment_f1"]) + mark,
                _num(m["onset_f1"]) + mark,
                *timing(m),
                _num(m["box_recall"]),
                _num(m["box_precision"]),
                m["n_labels"],
                m["n_pred"],
            ]
            for name, m in methods.items()
        ]
    return table(headers, rows)


def _diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def summary(results: dict[str, dict], ours: str) -> tuple[list[dict], dict]:
    """Per set, ``ours`` against the peer (frame F1, box recall, their differences); and the
    min / median / max over sets of the frame-F1 difference (sets with F1 only)."""
    rows = []
    for key, r in results.items():
        a, p = r["methods"][ours], r["methods"][PEER]
        f1 = (None, None) if r["recall_only"] else (a["frame_f1"], p["frame_f1"])
        rows.append(
            dict(
                set=key,
                name=r["name"],
                frame_f1=f1[0],
                peer_frame_f1=f1[1],
                frame_f1_diff=_diff(*f1),
                box_recall=a["box_recall"],
                peer_box_recall=p["box_recall"],
                box_recall_diff=_diff(a["box_recall"], p["box_recall"]),
            )
        )
    d = [r["frame_f1_diff"] for r in rows if r["frame_f1_diff"] is not None]
    spread = dict(zip(("min", "median", "max"), map(float, np.percentile(d, [0, 50, 100])))) if d else {}
    return rows, spread


def summary_table(rows: list[dict], ours: str) -> str:
    return table(
        ["set", f"frame F1: {ours}", PEER, "difference", f"box recall: {ours}", PEER, "difference"],
        [
            [
                r["name"],
                _num(r["frame_f1"]),
                _num(r["peer_frame_f1"]),
                _signed(r["frame_f1_diff"]),
                _num(r["box_recall"]),
                _num(r["peer_box_recall"]),
                _signed(r["box_recall_diff"]),
            ]
            for r in rows
        ],
    )


# ---- main -------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CKPT", help="a checkpoint to score")
    ap.add_argument("--sets", help=f"comma-separated subset of {','.join(s.key for s in SETS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help=f"a smoke run: the sets {','.join(QUICK)} unless --sets")
    ap.add_argument("--out", help="output folder (default out/real, out/real-quick with --quick)")
    ap.add_argument("--real", default=str(REAL_DEFAULT), help="the shared real recordings")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    ap.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a segment option for the models (a raybird.inference.recording.SegmentOptions field; "
        "'none' for None), e.g. --option min_level_db=6",
    )
    a = ap.parse_args(argv)
    options = segment_options(a.option)
    t0 = time.perf_counter()

    by_key = {s.key: s for s in SETS}
    keys = a.sets.split(",") if a.sets else QUICK if a.quick else list(by_key)
    if unknown := [k for k in keys if k not in by_key]:
        raise SystemExit(f"unknown sets {unknown}; choose from {list(by_key)}")
    real, out = Path(a.real), Path(a.out or ("out/real-quick" if a.quick else "out/real"))
    if not real.is_dir():
        raise SystemExit(f"real-data folder not found: {real}")
    out.mkdir(parents=True, exist_ok=True)
    models = parse_models(a.model) or [("U-Net (default model)", str(checkpoint.DEFAULT_MODEL))]
    models.append((BASELINE, str(baseline.write_checkpoint(out / "baseline.pt"))))
    ckpts = [(name, checkpoint.read_checkpoint(path)) for name, path in models]

    results, text = {}, []
    for fs in (by_key[k] for k in keys):
        files = sorted(str(p) for p in real.glob(fs.audio))
        events = {f: reference_events(f) for f in files}
        durations = {f: duration_s(f) for f in files}

        def score(preds: dict[str, list]) -> dict:
            return pooled([recording_counts(events[f], preds.get(f, []), durations[f]) for f in files])

        methods = {}
        for name, ckpt in ckpts:
            preds, errors = model_segments(ckpt, files, out, a.threads, options)
            methods[name] = dict(score(preds), model_id=ckpt.model_id, errors=errors)
        methods[PEER] = score({f: maad_rois(f) for f in files})
        results[fs.key] = dict(asdict(fs), recordings=len(files), seconds=sum(durations.values()), methods=methods)
        block = [
            f"### {fs.name}: {len(files)} recordings, {sum(durations.values()):.0f} s, labels: {fs.labels}",
            "",
            set_table(fs, methods),
        ]
        if fs.coarse:
            block.append("\n† coarse labels (one box per song): segment and onset F1 near 0 by construction.")
        if fs.recall_only:
            block.append(
                "\nLabels incomplete: recall-type measures only; time predicted: the share of the "
                "recordings' 10-ms frames inside a predicted segment."
            )
        block += [
            f"\n{name}: segment job failed on {len(m['errors'])} recordings: {m['errors'][:3]}"
            for name, m in methods.items()
            if m.get("errors")
        ]
        print("\n".join(block) + "\n", flush=True)
        text += block + [""]

    ours = ckpts[0][0]
    rows, spread = summary(results, ours)
    wall = time.perf_counter() - t0
    end = [f"### Summary: {ours} against {PEER}", "", summary_table(rows, ours), ""]
    if spread:
        end.append(
            f"Frame F1 of {ours} minus {PEER} over the sets with F1: min {spread['min']:+.3f}, "
            f"median {spread['median']:+.3f}, max {spread['max']:+.3f}."
        )
    end.append(f"Wall time {wall:.0f} s.")
    print("\n".join(end))
    text += end
    (out / "real.md").write_text("\n".join(text) + "\n")
    result = dict(
        settings=dict(vars(a), out=str(out), models=models), sets=results, summary=rows, spread=spread, wall_s=wall
    )
    (out / "real.json").write_text(json.dumps(result, indent=1))
    print(f"\nreal: {out / 'real.md'}, {out / 'real.json'}")
    return result


if __name__ == "__main__":
    main()
