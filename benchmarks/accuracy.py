"""Accuracy table (issue 6): every model, and the threshold baseline, on a held-out synthetic test
set broken down by SNR, and on the shared real recordings.

    python -m benchmarks.accuracy                                  # raybird/weights/default.pt + baseline
    python -m benchmarks.accuracy --model U-Net=runs/unet/best/checkpoint.pt --model SegNet=...
    python -m benchmarks.accuracy --train-epochs 35 --train-data ingest/   # trains missing archs

**Models.** ``--model NAME=CKPT`` (repeatable) loads checkpoints; ``--train-epochs N`` with
``--train-data INGEST`` trains each of ``--archs`` not given by ``--model`` with raybird's own
Ray Train job (``raybird.pipelines.train.fit``) into ``OUT/runs/<arch>``, or reuses the best checkpoint a
previous run left there. With neither, the shipped default model. The threshold baseline
(:mod:`raybird.models.baseline`) is always added.

**Synthetic test set.** ``--test-dir`` (default ``OUT/test``): if it holds no audio, an archive of
``--test-n`` recordings is generated there from ``--test-seed`` (default 9001, a seed no training,
tuning or baseline search here uses: they use 0-12, 101 and 2026), SNR uniform over -5..20 dB, and
each recording's SNR is kept in ``records.json``. An existing archive without that file is
scored as a whole only. Rows are pooled per SNR band (<= 0, 0-10, >= 10 dB) and overall
(recordings without birds count in the overall column only): foreground IoU, Dice and pixel
accuracy from summed confusion counts, event F1 of segments matched one-to-one to the per-call
boxes at box IoU >= 0.5 (:func:`raybird.evaluation.evaluate.evaluate_run`). Each band's IoU also gets a 95 %
bootstrap interval (recordings resampled with replacement): with the 60 recordings of earlier
versions the <= 0 dB band held 8 recordings and its IoU moved by 0.26 between two test seeds. The
first model's IoU minus each other model's (the baseline's: the margin) gets a paired interval,
both scored on the same resampled recordings. A last table sorts each model's pixel errors
(:func:`raybird.evaluation.scores.error_anatomy`): within 2 px of the other mask (a boundary drawn a
little differently), in calls missed whole, in false alarms, or inside calls found in part, with
the IoU the model would score were the edge errors forgiven. The first model's calls are then
counted by call type (the synthetic labels name it), detected and covered per band.

**Real recordings** (``--real``, the shared folder): segmented with the same settings and scored
per data set. The labels differ in kind, so each gets the measure it can support:

* storm-petrel (Sonic Visualiser boxes, one per song) and great tit (pykanto JSON, one box per
  song clip, its band): coarse boxes. A box is *found* when predicted segments overlapping its
  band cover at least ``--min-cover`` (half) of its time span; a segment is *correct* when
  labelled boxes cover that much of its own span (:func:`raybird.evaluation.scores.coverage`). Recall and
  precision are counted from these.
* BirdSoundsDenoising XC41136 (a pixel mask): pixel IoU/Dice against the mask on the model's
  grid, and the same coverage over the mask's regions (boxed and grouped like segments).
* Bengalese finch (Audacity, time-only syllables): onset/offset F1 (both within 50 ms, the
  segments first merged on the time axis) and coverage in time.

Strict event F1 (box IoU >= 0.5, or onset/offset) is reported for every set; against one box
per song it is near zero by construction. Outputs: ``OUT/accuracy.json`` (everything),
``OUT/accuracy.parquet`` (one row per model and synthetic band or real data set; ``iou_lo`` and
``iou_hi`` bound the synthetic IoU, null for real sets) and the
markdown tables, printed and in ``OUT/accuracy.md``. Predictions are cached per checkpoint hash,
options and raybird's code under ``OUT/pred`` (:func:`predict`), so a re-run scores only what
changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from benchmarks.accuracy_report import (
    ALL,
    BANDS,
    PUBLISHED,
    REAL_SETS,
    anatomy_table,
    call_type_table,
    difference_table,
    event_ceiling,
    interval_table,
    long_table,
    published_table,
    real_table,
    synthetic_table,
)
from raybird.evaluation.evaluate import evaluate_run, pool
from raybird.evaluation.scores import EDGE_PX
from raybird.inference import recording
from raybird.models import baseline, checkpoint
from raybird.pipelines import segment

ARCH_NAMES = {"unet": "U-Net", "segnet": "SegNet", "deeplabv3": "DeepLabV3", "unet-se": "U-Net-SE"}
BASELINE = "threshold baseline"
TEST_SEED = 9001
BOOTSTRAP = 2000
REAL_DEFAULT = Path(os.environ.get("RAYBIRD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared/data/real"))


# ---- models ---------------------------------------------------------------------------------------
def parse_models(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model takes NAME=CKPT, got {s!r}")
        out.append((name, path))
    return out


def train_missing(
    archs: list[str], given: set[str], data: str, epochs: int, width: int, workers: int, out: Path
) -> list[tuple[str, str]]:
    """A best checkpoint per arch not in ``given``: an earlier run's under ``out/runs``, or a new run."""
    from raybird.pipelines.runtime import init_ray
    from raybird.pipelines.train import TrainConfig, fit

    models = []
    for arch in archs:
        name = ARCH_NAMES.get(arch, arch)
        if name in given:
            continue
        best = out / "runs" / arch / "best" / "checkpoint.pt"
        if not best.exists():
            init_ray()
            tc = TrainConfig(
                data=data,
                storage_path=str((out / "runs").resolve()),
                name=arch,
                arch=arch,
                width=width,
                epochs=epochs,
                workers=workers,
            )
            result = fit(tc)
            print(f"trained {name}: best val IoU {result.best_val_iou:.3f} at epoch {result.best_epoch + 1}")
            best = Path(result.best_checkpoint)
        models.append((name, str(best)))
    return models


# ---- the synthetic test set -----------------------------------------------------------------------
def synthetic_test_set(folder: Path, n: int, seed: int, duration: tuple[float, float]) -> dict[str, Optional[float]]:
    """``{audio file name: SNR dB or None (no bird)}`` of the test archive, generating it if
    absent; ``{}`` for an archive of unknown SNRs."""
    from raybird.synth import generator as synth

    records = folder / "records.json"
    if records.exists() and json.loads(records.read_text())[0].get("generator") != synth.GENERATOR_VERSION:
        print(f"{folder}: made by another version of the generator, generating it again")
        shutil.rmtree(folder)
    if not records.exists():
        if folder.exists() and any(p.suffix in (".wav", ".flac") for p in folder.iterdir()):
            print(f"{folder}: no records.json, the SNR of its recordings is unknown: scored as a whole only")
            return {}
        recs = synth.generate_archive(folder, n, seed=seed, duration_s=duration, snr_db=(-5.0, 20.0))
        keep = [
            dict(
                audio=Path(r["audio"]).name, snr_db=r["snr_db"], n_calls=r["n_calls"], generator=synth.GENERATOR_VERSION
            )
            for r in recs
        ]
        records.write_text(json.dumps(keep, indent=1))
    return {Path(r["audio"]).name: r["snr_db"] for r in json.loads(records.read_text())}


def band_of(snr: Optional[float]) -> Optional[str]:
    if snr is None:
        return None
    return BANDS[0] if snr <= 0 else BANDS[1] if snr < 10 else BANDS[2]


# ---- scoring ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def predictions_code() -> str:
    """A digest of raybird's code (every module: decoding, the network, post-processing, the
    baseline): part of the prediction cache's key, so a code change is never scored from stale
    predictions. Read once per process."""
    import raybird

    digest = hashlib.sha1()
    for f in sorted(Path(raybird.__file__).parent.rglob("*.py")):
        digest.update(str(f.relative_to(Path(raybird.__file__).parent)).encode() + f.read_bytes())
    return digest.hexdigest()


def predict(
    ckpt: checkpoint.Checkpoint, inputs: list[str], out: Path, options: recording.SegmentOptions, threads: Optional[int]
) -> str:
    """Segment ``inputs`` into a folder named by the checkpoint, the inputs, the options and
    :func:`predictions_code` (a re-run resumes there)."""
    from raybird.synth.generator import GENERATOR_VERSION  # a regenerated test set must not reuse predictions

    key = json.dumps([inputs, dataclasses.asdict(options), GENERATOR_VERSION, predictions_code()])
    pred_dir = str(
        out / "pred" / ckpt.model_id / f"{Path(inputs[0]).name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    )
    segment.run_local(inputs, pred_dir, ckpt, options, threads=threads)
    return pred_dir


def _counts_by_recording(rows: list[dict]) -> dict[str, np.ndarray]:
    """Pixel TP, FP, FN summed per recording (its channels together)."""
    out: dict[str, np.ndarray] = {}
    for r in rows:
        out[r["recording_id"]] = out.get(r["recording_id"], 0) + np.array(
            [r["px_tp"], r["px_fp"], r["px_fn"]], np.float64
        )
    return out


def _resampled_iou(counts: np.ndarray, draws: np.ndarray) -> np.ndarray:
    summed = counts[draws].sum(axis=1)
    return summed[:, 0] / np.maximum(summed.sum(axis=1), 1)


def _draws(n_recordings: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_recordings, (n, n_recordings))


def iou_interval(rows: list[dict], n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the pooled foreground IoU, recordings resampled with
    replacement: how far the number could move on another test set of the same size."""
    counts = np.stack(list(_counts_by_recording(rows).values()))
    lo, hi = np.percentile(_resampled_iou(counts, _draws(len(counts), n, seed)), [2.5, 97.5])
    return float(lo), float(hi)


def iou_difference(
    rows_a: list[dict], rows_b: list[dict], n: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float, float]:
    """IoU of A minus IoU of B on the same recordings, with its paired 95 % bootstrap interval
    (both scored on each resampled set): much tighter than comparing two separate intervals,
    because a hard recording is hard for both."""
    ca, cb = _counts_by_recording(rows_a), _counts_by_recording(rows_b)
    if ca.keys() != cb.keys():
        raise ValueError("paired comparison needs both models scored on the same recordings")
    keys = sorted(ca)
    a, b = np.stack([ca[k] for k in keys]), np.stack([cb[k] for k in keys])
    draws = _draws(len(keys), n, seed)
    lo, hi = np.percentile(_resampled_iou(a, draws) - _resampled_iou(b, draws), [2.5, 97.5])
    whole = np.arange(len(keys))[None]
    return float(_resampled_iou(a, whole)[0] - _resampled_iou(b, whole)[0]), float(lo), float(hi)


def score_synthetic(ckpt, test_dir: Path, snr: dict, out: Path, options, threads) -> tuple[dict, dict]:
    """Pooled scores per band (with the IoU's interval), and the per-recording rows of each band."""
    report = evaluate_run(predict(ckpt, [str(test_dir)], out, options, threads), [str(test_dir)])
    groups: dict[str, list[dict]] = {ALL: report.rows}
    for row in report.rows:
        band = band_of(snr.get(Path(row["source"]).name))
        if band is not None:
            groups.setdefault(band, []).append(row)
    scores = {
        band: {**pool(rows), **dict(zip(("iou_lo", "iou_hi"), iou_interval(rows)))} for band, rows in groups.items()
    }
    return scores, groups


def score_real(ckpt, real: Path, out: Path, options, threads, min_cover: float) -> dict:
    result = {}
    for rs in REAL_SETS:
        pred = predict(ckpt, [str(real / i) for i in rs.inputs], out, options, threads)
        report = evaluate_run(pred, [str(real / r) for r in rs.refs], min_cover=min_cover)
        result[rs.name] = dict(
            report.pooled,
            event_mode=report.rows[0]["event_mode"] if report.rows else "",
            missing=report.missing,
            errors=[e["source"] for e in report.errors],
        )
    return result


# ---- main -------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CKPT", help="a checkpoint to score")
    ap.add_argument("--train-epochs", type=int, help="train the --archs not given by --model (needs --train-data)")
    ap.add_argument("--train-data", help="ingest output to train on")
    ap.add_argument("--archs", default="unet,segnet,deeplabv3,unet-se")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="out/accuracy")
    ap.add_argument("--test-dir", help="synthetic test archive (default OUT/test; generated if empty)")
    ap.add_argument(
        "--test-n",
        type=int,
        default=300,
        help="recordings in a generated test set (was 60: 8-13 of "
        "them at SNR <= 0 dB, too few to judge a band; see docs/accuracy.md)",
    )
    ap.add_argument("--test-seed", type=int, default=TEST_SEED)
    ap.add_argument("--test-duration", type=float, nargs=2, default=(4.0, 10.0), metavar=("MIN", "MAX"))
    ap.add_argument("--real", default=str(REAL_DEFAULT), help="the shared real recordings ('' to skip)")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument(
        "--split-depth",
        type=lambda v: None if v == "off" else float(v),
        default=recording.SegmentOptions.split_depth_db,
        help="cut regions at gaps this deep, dB, or 'off' (raybird segment --split-depth)",
    )
    ap.add_argument(
        "--min-duration",
        type=float,
        default=recording.SegmentOptions.min_duration_s,
        help="shortest segment kept, s (raybird segment --min-duration)",
    )
    ap.add_argument(
        "--merge-gap", type=float, help="join a song's calls into one segment (raybird segment --merge-gap)"
    )
    ap.add_argument("--min-cover", type=float, default=0.5, help="coverage criterion for coarse labels")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    a = ap.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    models = parse_models(a.model)
    if a.train_epochs:
        if not a.train_data:
            raise SystemExit("--train-epochs needs --train-data INGEST")
        models += train_missing(
            a.archs.split(","), {n for n, _ in models}, a.train_data, a.train_epochs, a.width, a.workers, out
        )
    if not models:
        models = [("U-Net (default model)", str(checkpoint.DEFAULT_MODEL))]
    models.append((BASELINE, str(baseline.write_checkpoint(out / "baseline.pt"))))

    test_dir = Path(a.test_dir) if a.test_dir else out / "test"
    snr = synthetic_test_set(test_dir, a.test_n, a.test_seed, tuple(a.test_duration))
    options = recording.SegmentOptions(
        threshold=a.threshold, min_duration_s=a.min_duration, split_depth_db=a.split_depth, merge_gap_s=a.merge_gap
    )
    synthetic, rows_of, real = {}, {}, {}
    for name, path in models:
        ckpt = checkpoint.read_checkpoint(path)
        synthetic[name], rows_of[name] = score_synthetic(ckpt, test_dir, snr, out, options, a.threads)
        if a.real:
            real[name] = score_real(ckpt, Path(a.real), out, options, a.threads, a.min_cover)
        print(f"scored {name} ({ckpt.model_id})", flush=True)

    ceiling = event_ceiling(test_dir)
    first_name = models[0][0]
    differences = {
        name: {b: iou_difference(rows_of[first_name][b], rows[b]) for b in rows if b in rows_of[first_name]}
        for name, rows in rows_of.items()
        if name != first_name
    }
    first = synthetic[first_name]
    counts = {b: first[b]["recordings"] for b in [ALL, *BANDS] if b in first}
    text = [
        f"Synthetic test set: {test_dir} (recordings: "
        + ", ".join(f"{b} {n}" for b, n in counts.items())
        + f"), threshold {a.threshold:g}",
        "",
        synthetic_table(synthetic),
        "",
        f"Foreground IoU with 95 % bootstrap intervals ({BOOTSTRAP} resamplings of the recordings):",
        "",
        interval_table(synthetic),
        "",
        "Paired differences (both models scored on the same resampled recordings):",
        "",
        difference_table(first_name, differences),
        "",
        f"Where the pixel errors lie: within {EDGE_PX} px of the other mask (a boundary drawn a little "
        "differently), in whole regions the other mask does not touch, or inside calls found in part:",
        "",
        anatomy_table(synthetic),
        "",
        f"Calls of {first_name} by type: the shares detected (overlapped by a segment at all) and "
        "covered (half their span inside segments of their band):",
        "",
        call_type_table(synthetic[first_name]),
        "",
        f"Event F1 against per-call boxes (box IoU >= 0.5). The exact truth masks themselves score "
        f"F1 {ceiling['f1']:.3f} ({ceiling['n_pred']} regions for {ceiling['n_ref']} calls): the ceiling.",
    ]
    if real:
        text += ["", f"Real recordings ({a.real}), coverage criterion {a.min_cover:g}:", "", real_table(real)]
    text += ["", published_table()]
    print("\n" + "\n".join(text))
    (out / "accuracy.md").write_text("\n".join(text) + "\n")
    result = dict(
        settings=dict(vars(a), models=models),
        synthetic=synthetic,
        differences=differences,
        event_ceiling=ceiling,
        real=real,
        published=PUBLISHED,
    )
    (out / "accuracy.json").write_text(json.dumps(result, indent=1, default=str))
    pq.write_table(long_table(synthetic, real), out / "accuracy.parquet")
    print(f"\naccuracy: {out / 'accuracy.md'}, {out / 'accuracy.json'}, {out / 'accuracy.parquet'}")
    return result


if __name__ == "__main__":
    main()
