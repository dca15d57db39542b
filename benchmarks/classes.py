"""Syllable classes on real song: a class model trained on part of a Bengalese finch's labelled
song, scored on the rest by syllable error rate and per-class F1.

    python -m benchmarks.classes                         # sizes 20 s, 40 s, all; scratch and from default
    python -m benchmarks.classes --sizes all --inits scratch --epochs 5   # a quick look
    python -m benchmarks.classes --quick                 # smoke run -> out/classes-quick

**Why.** TweetyNet/vak label every syllable with its type; ``raybird train --classes`` does
the same. TweetyNet's published anchor (Cohen et al. 2022, Koumura's Bengalese finch data,
600 s of one bird's song for training): 7.4 % syllable error rate raw, 0.72 % after its
majority-vote clean-up.

**Protocol**: :func:`benchmarks.learning_curve.protocol` on the finch set (10 recordings,
96 s, one bird, 11 syllable types a–k): the last 4 recordings (34 s) are the test set, the one
before them validation, and training takes the first of the rest nearest each ``--sizes``
entry in seconds. Each (size, init) is trained by raybird's trainer with ``--classes``
(1 worker, width 8, batch 4, Adam 2e-3 on a cosine schedule over the budget, patience 60; the defaults
otherwise; init scratch or ``default``, the shipped
bird/background model's body with a new head). Its best checkpoint (by val class mIoU)
segments the test recordings with the segment job's defaults, the class map stored.

**Measures** (:mod:`raybird.evaluation.classes`), counts summed over the test recordings:
syllable error rate (edit distance between predicted and true label sequences over the true
syllables), raw (runs of the frame-wise class, TweetyNet's raw output) and as segmented (one
label per segment, the majority of its pixels' class probability: TweetyNet's clean-up);
segment F1 (onset and offset within 20 ms) regardless of label and per class (a match
counts for its class when the labels agree), macro-averaged over classes; and the confusion of
matched syllables.

Output: the table, printed and in ``OUT/classes.md``; everything in ``OUT/classes.json``
(default OUT: ``out/classes``). Training runs go to ``OUT/work/runs/<name>`` and are reused
when their best checkpoint exists (``--retrain`` trains them again).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Optional

from benchmarks.accuracy import REAL_DEFAULT
from benchmarks.common import machine, table
from benchmarks.learning_curve import SETS, ingest_pool, protocol, seconds, size_data
from benchmarks.real import duration_s, predict, reference_events
from raybird.evaluation import classes
from raybird.inference.recording import SegmentOptions
from raybird.io import outputs
from raybird.models import checkpoint

INITS = ("scratch", "default")
TWEETYNET = "TweetyNet (600 s per bird, Koumura): 7.4 % raw, 0.72 % cleaned"


# 52 s of song is 22 training tiles, 3 steps of the default batch: small batches, a cosine
# schedule over the whole budget and a long patience give the classes steps enough to form
TRAIN = dict(workers=1, width=8, batch_size=4, lr=2e-3, lr_schedule="cosine", patience=60)


def train_one(data: str, runs: Path, name: str, init: str, epochs: int, retrain: bool) -> dict:
    """raybird's trainer with ``--classes`` on ``data``; an earlier run's best checkpoint is
    reused unless ``retrain``."""
    from raybird.pipelines.train import TrainConfig, fit

    best = runs / name / "best" / "checkpoint.pt"
    if best.exists() and not retrain:
        payload = checkpoint.read_payload(best)
        with open(runs / name / "metrics.csv") as f:
            epochs_run = sum(1 for _ in f) - 1
        return dict(
            checkpoint=str(best),
            epochs_run=epochs_run,
            best_epoch=payload["epoch"] + 1,
            train_wall_s=None,
            best_val_class_miou=payload["metrics"]["val_class_miou"],
            history=payload["extra"]["history"],
        )
    shutil.rmtree(runs / name, ignore_errors=True)
    t0 = time.perf_counter()
    tc = TrainConfig(
        data=data,
        storage_path=str(runs),
        name=name,
        epochs=epochs,
        classes=True,
        init="default" if init == "default" else "",
        **TRAIN,
    )
    r = fit(tc)
    return dict(
        checkpoint=r.best_checkpoint,
        epochs_run=r.epochs_run,
        best_epoch=r.best_epoch + 1,
        best_val_class_miou=r.best_metrics["val_class_miou"],
        train_wall_s=time.perf_counter() - t0,
        history=r.history,
    )


def score(ckpt: checkpoint.Checkpoint, test: list[str], out: Path, threads: int) -> dict:
    """The test recordings segmented by ``ckpt`` (class map kept), scored against their labels."""
    pred = predict(ckpt, test, out, SegmentOptions(class_map=True), threads)
    errors = outputs.read_outputs(pred, "errors").column("source").to_pylist()
    if errors:
        raise RuntimeError(f"segment failed on {errors}")
    return classes.score_run(pred, {f: reference_events(f) for f in test}, tolerance_s=0.02)


def result_table(rows: list[dict]) -> str:
    head = [
        "train s (recordings)",
        "init",
        "epochs",
        "best epoch",
        "val class mIoU",
        "SER raw",
        "SER segments",
        "segment F1 @20 ms",
        "class macro F1",
        "predictions / true",
        "train wall s",
    ]
    out = []
    for r in rows:
        s = r["scores"]
        out.append(
            [
                f"{r['train_s']:.1f} ({r['n_train']})",
                r["init"],
                r["epochs_run"],
                r["best_epoch"],
                f"{r['best_val_class_miou']:.3f}",
                f"{100 * s['ser_raw']:.1f} %",
                f"{100 * s['ser']:.1f} %",
                f"{s['segment_f1']:.3f}",
                f"{s['macro_f1']:.3f}",
                f"{s['n_pred']} / {s['n_ref']}",
                "—" if r["train_wall_s"] is None else f"{r['train_wall_s']:.0f}",
            ]
        )
    return table(head, out)


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20,40,all", help="training seconds (nearest whole recordings) or 'all'")
    ap.add_argument("--inits", default=",".join(INITS), help="scratch, default (the shipped model's body) or both")
    ap.add_argument("--epochs", type=int, default=300, help="epoch budget of every run")
    ap.add_argument("--retrain", action="store_true", help="train again where a run's best checkpoint exists")
    ap.add_argument("--quick", action="store_true", help="a smoke run: all the training audio, scratch, 2 epochs")
    ap.add_argument("--out", help="output folder (default out/classes, out/classes-quick with --quick)")
    ap.add_argument("--real", default=str(REAL_DEFAULT), help="the shared real recordings")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for segmenting")
    a = ap.parse_args(argv)
    sizes, inits, epochs = a.sizes.split(","), a.inits.split(","), a.epochs
    if a.quick:
        sizes, inits, epochs = ["all"], ["scratch"], 2
    out = Path(a.out or ("out/classes-quick" if a.quick else "out/classes")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0, head = time.perf_counter(), machine()
    from raybird.pipelines.runtime import init_ray

    init_ray(dashboard=True)  # Ray Train's placement-group cleaner polls the dashboard
    cs = SETS["finch"]
    real = Path(a.real)
    files = sorted(str(p) for p in real.glob(cs.audio))
    durations = {f: duration_s(f) for f in files}
    plan = protocol(files, durations, sizes)
    work = out / "work"
    if not (work / "ingest" / "run.json").exists():
        ingest_pool(cs, real, plan, work / "ingest")
    rows = []
    for size, train in plan["train"].items():
        data = size_data(str(work / "ingest"), train, plan["val"], work / f"data-{size}")
        for init in inits:
            name = f"finch-classes-{size}-{init}"
            print(f"\n[classes] {name}: {len(train)} recordings, {seconds(train, durations):.1f} s", flush=True)
            r = train_one(data, work / "runs", name, init, epochs, a.retrain)
            s = score(checkpoint.read_checkpoint(r["checkpoint"]), plan["test"], out, a.threads)
            rows.append(
                dict(size=size, train_s=seconds(train, durations), n_train=len(train), init=init, **r, scores=s)
            )
            print(result_table(rows[-1:]), flush=True)
    last = rows[-1]["scores"]
    text = "\n".join(
        [
            f"### Bengalese finch syllable classes: test {len(plan['test'])} recordings, "
            f"{seconds(plan['test'], durations):.1f} s, {rows[0]['scores']['n_ref']} syllables; "
            f"val {seconds(plan['val'], durations):.1f} s",
            "",
            result_table(rows),
            "",
            f"Anchor: {TWEETYNET}.",
            "",
            f"Per class (last row): {classes.format_per_class(last)}",
            "",
            "Confusion of matched syllables (last row; rows true, columns predicted):",
            "",
            classes.format_confusion(last),
            "",
            f"{head}. Epoch budget {epochs}, width 8, 1 worker. Wall time {time.perf_counter() - t0:.0f} s.",
        ]
    )
    print("\n" + text)
    (out / "classes.md").write_text(text + "\n")
    result = dict(settings=dict(vars(a), sizes=sizes, inits=inits, epochs=epochs), machine=head, plan=plan, rows=rows)
    (out / "classes.json").write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
