"""Learning curve: what a user gets from a few minutes of their own labelled recordings.

    python -m benchmarks.learning_curve                          # finch + great tit, 30 s / 60 s / all, 30 epochs
    python -m benchmarks.learning_curve --sets finch --sizes 10,30,all --epochs 20
    python -m benchmarks.learning_curve --quick                  # finch, one size, 2 epochs -> out/learning_curve-quick

**Why.** The shipped model was trained on synthetic song. A user with a new species labels a
few minutes and either trains from scratch or fine-tunes the shipped model (``raybird train
--init default``, docs/training.md → Fine-tuning). As vak/TweetyNet publish it, this trains on
growing amounts of one bird's labelled song and tests on the rest, both ways, and scores the
test recordings as the field scores them. The issue's criterion: starting from the shipped
model must reach at least what training from scratch reaches, in fewer epochs.

**Protocol**, per set (:data:`SETS`), recordings sorted by file name (:func:`protocol`):

* *test*: the last recordings, taken from the end until they hold at least a third of the
  audio; fixed, never trained or validated on;
* *val*: the last recording before them; fixed for every size (early stopping and the best
  checkpoint are chosen on it);
* *train*: for each ``--sizes`` entry the first recordings of the rest whose total is nearest
  to that many seconds (whole recordings, cumulative; ``all``: every one); sizes that come to
  the same recordings run once (named ``all`` when they are all of them).

Bengalese finch (10 recordings, 96 s): test = the last 4 (0817.183 … 0821.202, 34 s), val =
0816.179 (10 s), train from 0808.138 … 0813.163 (52 s). Great tit (20 songs, 58 s; sorted by name
the test songs, SW83-0418_04-79 … -92, 22 s, are all of the second nest box, SW83): val =
SW83-0418_04-78 (4 s), train from the other 12 (32 s). The exact files and seconds are printed
and written with the results.

Every recording of a set but the test ones is ingested once (:func:`raybird.pipelines.ingest.run_local`,
the default spectrogram preset, labels found next to the audio); each size's training data is
those shards with the ``split`` column set to ``train`` for its recordings and ``val`` for the
val recording (ingest's own 70/20/10 split by file-name hash would leave val empty or take
training recordings away at this scale). Each (size, init) is trained by raybird's own trainer
(:func:`raybird.pipelines.train.fit`: Ray Train, 1 worker, width 8, the defaults otherwise: Adam 1e-3,
early stopping after 10 epochs without val IoU gain), ``init`` = scratch or ``default`` (the
shipped model) with the same epoch budget. Its best checkpoint (by val IoU) segments the test
recordings (:func:`benchmarks.real.model_segments`: the segment job's defaults), as does the
shipped model untouched ("no training").

**Measures** (:mod:`raybird.evaluation.field_scores`, counts summed over the test recordings): frame
precision/recall/F1 on 10-ms frames; segment F1 (onset and offset within 20 ms, one-to-one);
onset F1 (10 ms); median onset and offset error, signed / absolute, ms. The great tit labels are
one box per song clip (pykanto JSON without onsets), so there: frame scores and box recall /
precision (a label is found when a predicted box lies at least half inside it) instead; as
those boxes span whole clips, every test frame is labelled and frame precision is 1 by
construction. "best val IoU" is the trainer's pixel IoU against the label masks, which ingest
draws from time-only labels as each labelled column's pixels above its noise floor (the default
``--time-labels energy``; with full-band columns, a shape the shipped model starts far from,
fine-tuning scored below training from scratch).

Output: per set a table, printed and in ``OUT/learning_curve.md``; everything, with the
per-epoch val history of every run, in ``OUT/learning_curve.json`` (default OUT:
``out/learning_curve``). Training runs go to ``OUT/work/runs/<name>`` (replaced on a re-run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.accuracy import REAL_DEFAULT
from benchmarks.common import machine, table
from benchmarks.real import _ms, _num, duration_s, model_segments, reference_events
from raybird.evaluation.field_scores import pooled, recording_counts
from raybird.io import outputs
from raybird.models import checkpoint
from raybird.pipelines import ingest


@dataclass(frozen=True)
class CurveSet:
    key: str
    name: str
    audio: str  # glob under the real-data folder
    labels: str  # glob of its label files (found beside the audio by ingest)
    boxes: bool  # one box per song: frame scores and box recall instead of segment/onset F1


SETS = {
    s.key: s
    for s in (
        CurveSet("finch", "Bengalese finch", "bengalese_finch/*.wav", "bengalese_finch/*.txt", boxes=False),
        CurveSet("great_tit", "great tit", "pykanto/great_tit/WAV/*.wav", "pykanto/great_tit/JSON/*.JSON", boxes=True),
    )
}
INITS = ("scratch", "default")


def protocol(files: list[str], durations: dict[str, float], sizes: list[str]) -> dict:
    """Test, val and the training subsets (see the module docstring) of sorted ``files``."""
    total, test = sum(durations[f] for f in files), []
    while sum(durations[f] for f in test) < total / 3:
        test.insert(0, files[len(files) - len(test) - 1])
    rest = files[: len(files) - len(test)]
    val, pool = rest[-1:], rest[:-1]
    cumulative = [sum(durations[f] for f in pool[:k]) for k in range(1, len(pool) + 1)]
    subsets: dict[tuple, str] = {}
    for size in sizes:
        k = (
            len(pool)
            if size == "all"
            else min(range(1, len(pool) + 1), key=lambda k: abs(cumulative[k - 1] - float(size)))
        )
        subsets.setdefault(tuple(pool[:k]), "all" if k == len(pool) else size)
    return dict(test=test, val=val, train={size: list(fs) for fs, size in subsets.items()})


def seconds(files, durations) -> float:
    return sum(durations[f] for f in files)


def size_data(ingested: str, train: list[str], val: list[str], out: Path) -> str:
    """An ingest output folder holding the shards of ``train`` (split "train") and ``val`` (split "val")."""
    t = outputs.read_outputs(ingested, "shards")
    t = t.filter(pc.is_in(t["source"], pa.array(train + val)))
    split = pa.array(["val" if s in val else "train" for s in t["source"].to_pylist()], pa.string())
    t = t.set_column(t.schema.get_field_index("split"), "split", split)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    pq.write_table(t, out / "shards" / "part-0.parquet")
    return str(out)


def ingest_pool(cs: CurveSet, real: Path, plan: dict, out: Path) -> None:
    """Every recording of ``plan`` but the test ones, ingested once into ``out``; labels sit beside
    the audio (or in ../JSON)."""
    pool = sorted(set(plan["val"] + [f for fs in plan["train"].values() for f in fs]))
    stems = {Path(f).stem for f in pool}
    side = sorted(str(p) for p in real.glob(cs.labels) if p.stem in stems)
    summary = ingest.run_local(pool + side, str(out))
    if summary.errors:
        raise RuntimeError(f"ingest: {outputs.read_outputs(str(out), 'errors').to_pylist()}")


def train_one(data: str, runs: Path, name: str, init: str, epochs: int) -> dict:
    """raybird's trainer on ``data``, from scratch or from the shipped model; a fresh run folder."""
    from raybird.pipelines.train import TrainConfig, fit

    shutil.rmtree(runs / name, ignore_errors=True)  # the same name would resume the old run
    t0 = time.perf_counter()
    r = fit(
        TrainConfig(
            data=data,
            storage_path=str(runs),
            name=name,
            workers=1,
            width=8,
            epochs=epochs,
            init="default" if init == "default" else "",
        )
    )
    return dict(
        checkpoint=r.best_checkpoint,
        epochs_run=r.epochs_run,
        best_epoch=r.best_epoch + 1,
        best_val_iou=r.best_val_iou,
        train_wall_s=time.perf_counter() - t0,
        history=[
            {k: h[k] for k in ("epoch", "lr", "train_loss", "train_iou", "val_loss", "val_iou", "val_dice")}
            for h in r.history
        ],
    )


def first_epoch_reaching(history: list[dict], target: float) -> Optional[int]:
    """The first epoch (1-based) whose val IoU is at least ``target``."""
    return next((h["epoch"] + 1 for h in history if h["val_iou"] >= target), None)


# ---- tables ---------------------------------------------------------------------------------------
def set_table(cs: CurveSet, rows: list[dict]) -> str:
    def fmt(x, spec):
        return "—" if x is None else format(x, spec)

    head = [
        "train s (recordings)",
        "init",
        "epochs run",
        "best epoch",
        "best val IoU",
        "frame P",
        "frame R",
        "frame F1",
    ]
    head += (
        ["box recall", "box precision"]
        if cs.boxes
        else ["segment F1 @20 ms", "onset F1 @10 ms", "onset error ms (signed / abs)", "offset error ms"]
    )
    head += ["predictions", "train wall s"]
    out = []
    for r in rows:
        s = r["scores"]
        line = [
            f"{r['train_s']:.1f} ({r['n_train']})",
            r["init"],
            fmt(r.get("epochs_run"), "d"),
            fmt(r.get("best_epoch"), "d"),
            fmt(r.get("best_val_iou"), ".3f"),
            _num(s["frame_precision"]),
            _num(s["frame_recall"]),
            _num(s["frame_f1"]),
        ]
        line += (
            [_num(s["box_recall"]), _num(s["box_precision"])]
            if cs.boxes
            else [
                _num(s["segment_f1"]),
                _num(s["onset_f1"]),
                _ms(s["onset_error_ms"], s["onset_abs_error_ms"]),
                _ms(s["offset_error_ms"], s["offset_abs_error_ms"]),
            ]
        )
        line += [s["n_pred"], fmt(r.get("train_wall_s"), ".0f")]
        out.append(line)
    return table(head, out)


def verdicts(rows: list[dict]) -> list[str]:
    """Per training size: did the fine-tune reach the scratch run's best val IoU, and when."""
    lines = []
    for size in dict.fromkeys(r["size"] for r in rows if r["init"] != "no training"):
        runs = {r["init"]: r for r in rows if r["size"] == size}
        if set(INITS) - set(runs):
            continue
        s, d = runs["scratch"], runs["default"]
        at = first_epoch_reaching(d["history"], s["best_val_iou"])
        lines.append(
            f"- {s['train_s']:.0f} s: scratch best val IoU {s['best_val_iou']:.3f} at epoch {s['best_epoch']}; "
            f"from default best {d['best_val_iou']:.3f} at epoch {d['best_epoch']}, "
            + (f"reached scratch's best at epoch {at}" if at else "never reached scratch's best")
            + f"; test frame F1 {d['scores']['frame_f1'] - s['scores']['frame_f1']:+.3f} (default - scratch)"
        )
    return lines


# ---- main -------------------------------------------------------------------------------------------
def run_set(cs: CurveSet, real: Path, out: Path, sizes: list[str], epochs: int, threads: int) -> tuple[dict, str]:
    files = sorted(str(p) for p in real.glob(cs.audio))
    if not files:
        raise SystemExit(f"no recordings for {cs.key} under {real / cs.audio}")
    durations = {f: duration_s(f) for f in files}
    plan = protocol(files, durations, sizes)
    events = {f: reference_events(f) for f in plan["test"]}
    work = out / "work" / cs.key

    def score(ckpt: checkpoint.Checkpoint) -> dict:
        preds, errors = model_segments(ckpt, plan["test"], out, threads)
        if errors:
            raise RuntimeError(f"segment failed on {errors}")
        return pooled([recording_counts(events[f], preds.get(f, []), durations[f]) for f in plan["test"]])

    rows = [dict(size="0", train_s=0.0, n_train=0, init="no training", scores=score(checkpoint.read_checkpoint(None)))]
    ingest_pool(cs, real, plan, work / "ingest")
    for size, train in plan["train"].items():
        data = size_data(str(work / "ingest"), train, plan["val"], work / f"data-{size}")
        for init in INITS:
            name = f"{cs.key}-{size}-{init}"
            print(f"\n[learning_curve] {name}: {len(train)} recordings, {seconds(train, durations):.1f} s", flush=True)
            r = train_one(data, (out / "work" / "runs").resolve(), name, init, epochs)
            rows.append(
                dict(
                    size=size,
                    train_s=seconds(train, durations),
                    n_train=len(train),
                    init=init,
                    **r,
                    scores=score(checkpoint.read_checkpoint(r["checkpoint"])),
                )
            )

    def names(fs):
        return ", ".join(Path(f).stem for f in fs)

    text = [
        f"### {cs.name}: {len(files)} recordings, {seconds(files, durations):.1f} s",
        "",
        f"test ({len(plan['test'])}, {seconds(plan['test'], durations):.1f} s): {names(plan['test'])}  ",
        f"val ({seconds(plan['val'], durations):.1f} s): {names(plan['val'])}  ",
        *[f"train {size} → {seconds(fs, durations):.1f} s: {names(fs)}  " for size, fs in plan["train"].items()],
        "",
        set_table(cs, rows),
        "",
        *verdicts(rows),
    ]
    result = dict(asdict(cs), durations=durations, test=plan["test"], val=plan["val"], train=plan["train"], rows=rows)
    return result, "\n".join(text)


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    ap.add_argument("--sizes", default="30,60,all", help="training seconds (nearest whole recordings) or 'all'")
    ap.add_argument("--epochs", type=int, default=30, help="epoch budget of every run (scratch and fine-tune)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: finch, the first size, 2 epochs")
    ap.add_argument("--out", help="output folder (default out/learning_curve, out/learning_curve-quick with --quick)")
    ap.add_argument("--real", default=str(REAL_DEFAULT), help="the shared real recordings")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for segmenting")
    a = ap.parse_args(argv)
    keys, sizes, epochs = a.sets.split(","), a.sizes.split(","), a.epochs
    if a.quick:
        keys, sizes, epochs = ["finch"], sizes[:1], 2
    if unknown := [k for k in keys if k not in SETS]:
        raise SystemExit(f"unknown sets {unknown}; choose from {list(SETS)}")
    out = Path(a.out or ("out/learning_curve-quick" if a.quick else "out/learning_curve"))
    out.mkdir(parents=True, exist_ok=True)
    t0, head = time.perf_counter(), machine()
    from raybird.pipelines.runtime import init_ray

    init_ray(dashboard=True)  # Ray Train's placement-group cleaner polls the dashboard

    results, blocks = {}, []
    for key in keys:
        results[key], text = run_set(SETS[key], Path(a.real), out, sizes, epochs, a.threads)
        print("\n" + text + "\n", flush=True)
        blocks.append(text)
    wall = time.perf_counter() - t0
    tail = f"{head}. Epoch budget {epochs}, width 8, 1 worker. Wall time {wall:.0f} s."
    print(tail)
    (out / "learning_curve.md").write_text("\n\n".join(blocks) + "\n\n" + tail + "\n")
    result = dict(
        settings=dict(vars(a), sets=keys, sizes=sizes, epochs=epochs, out=str(out)),
        machine=head,
        sets=results,
        wall_s=wall,
    )
    (out / "learning_curve.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"\nlearning_curve: {out / 'learning_curve.md'}, {out / 'learning_curve.json'}")
    return result


if __name__ == "__main__":
    main()
