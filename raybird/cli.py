"""The ``raybird`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _add_ingest(sub):
    from raybird.pipelines.ingest import TIME_LABELS

    p = sub.add_parser("ingest", help="recordings -> Parquet spectrogram shards + errors table")
    p.add_argument("inputs", nargs="+", help="folders, globs, .tar/.tar.gz/.zip, s3:// prefixes, manifest files")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    p.add_argument("--preset", default="default", help="spectrogram preset name or SpecConfig JSON")
    p.add_argument(
        "--channels", choices=("mix", "split"), default="mix", help="mix down to mono, or one row per channel"
    )
    p.add_argument(
        "--time-labels",
        choices=TIME_LABELS,
        default="energy",
        help="how time-only labels (Audacity, time-only Raven rows) become masks: each labelled "
        "column's pixels standing out from its noise floor (energy: the shape the shipped model "
        "draws; trains and fine-tunes better), or full-band columns (default: %(default)s)",
    )
    p.add_argument("--local", action="store_true", help="run in this process without Ray")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 if any input failed")
    p.set_defaults(func=cmd_ingest)


def cmd_ingest(a) -> int:
    from raybird.pipelines import ingest

    if a.local:
        summary = ingest.run_local(a.inputs, a.out, a.preset, a.channels, a.time_labels)
    else:
        from raybird.pipelines.runtime import init_ray

        init_ray()
        summary = ingest.run(a.inputs, a.out, a.preset, a.channels, time_labels=a.time_labels)
    print(summary)
    return 1 if a.fail_on_error and summary.errors else 0


def _add_synth(sub):
    p = sub.add_parser("synth", help="write a deterministic synthetic archive with exact truth")
    p.add_argument("--out", required=True, help="folder for the recordings, their Raven tables and truth masks")
    p.add_argument("-n", "--recordings", type=int, default=20, help="how many recordings")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same archive")
    p.add_argument("--min-duration", type=float, default=5.0, help="shortest recording (s)")
    p.add_argument("--max-duration", type=float, default=15.0, help="longest recording (s)")
    p.add_argument(
        "--backgrounds",
        metavar="DIR",
        help="a folder of real background clips (raybird backgrounds) mixed under the calls",
    )
    p.add_argument(
        "--p-real", type=float, default=0.5, help="share of recordings on a real background (with --backgrounds)"
    )
    p.set_defaults(func=cmd_synth)


def cmd_synth(a) -> int:
    from raybird.synth.backgrounds import BackgroundBank
    from raybird.synth.generator import generate_archive

    records = generate_archive(
        a.out,
        a.recordings,
        seed=a.seed,
        duration_s=(a.min_duration, a.max_duration),
        backgrounds=BackgroundBank(a.backgrounds) if a.backgrounds else None,
        p_real=a.p_real,
    )
    print(f"synth: {len(records)} recordings in {a.out}")
    return 0


def _add_train(sub):
    from raybird.models.networks import ARCHS
    from raybird.pipelines.train import FLAG_HELP, TrainConfig
    from raybird.training.engine import PRECISIONS

    p = sub.add_parser("train", help="train the U-Net on ingest shards with Ray Train (DDP)")
    p.add_argument("data", help="ingest output folder or s3:// prefix (holding shards/)")
    d = TrainConfig()
    for field, default in vars(d).items():
        if field == "data":
            continue
        flag = "--" + field.replace("_", "-")
        text = f"{FLAG_HELP[field]} (default: %(default)s)"
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", default=default, help=text)
        elif field == "arch":  # the threshold baseline has nothing to train: segment/evaluate take it
            p.add_argument(flag, choices=ARCHS, default=default, help=text)
        elif field == "precision":
            p.add_argument(flag, choices=PRECISIONS, default=default, help=text)
        else:
            p.add_argument(flag, type=type(default), default=default, help=text)
    p.set_defaults(func=cmd_train)


def cmd_train(a) -> int:
    from raybird.pipelines.runtime import init_ray
    from raybird.pipelines.train import TrainConfig, fit

    init_ray(dashboard=True)
    tc = TrainConfig(**{k: v for k, v in vars(a).items() if k in TrainConfig.__dataclass_fields__})
    r = fit(tc)
    print(
        f"train: {r.epochs_run} epochs, best val IoU {r.best_val_iou:.3f} at epoch {r.best_epoch + 1}; "
        f"best checkpoint {r.best_checkpoint}; metrics and curves in {r.run_dir}"
    )
    return 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole pipeline on a small synthetic archive, local Ray")
    p.add_argument("--out", default="demo_out", help="folder for everything the demo writes")
    p.add_argument("-n", "--recordings", type=int, default=24, help="synthetic recordings to generate")
    p.add_argument("--epochs", type=int, default=4, help="training epochs")
    p.set_defaults(func=cmd_demo)


def cmd_demo(a) -> int:
    """synth -> ingest -> train -> segment -> evaluate -> plot, each step through the same
    sub-command a user runs, on an embedded local Ray."""
    from raybird.pipelines.runtime import init_ray

    out = Path(a.out)
    archive, shards, runs, seg = out / "archive", out / "ingest", out / "runs", out / "segments"
    init_ray(dashboard=True)  # it trains
    steps = [
        [
            "synth",
            "--out",
            str(archive),
            "-n",
            str(a.recordings),
            "--seed",
            "0",
            "--min-duration",
            "4",
            "--max-duration",
            "10",
        ],
        ["ingest", str(archive), "--out", str(shards)],
        [
            "train",
            str(shards),
            "--storage-path",
            str(runs.resolve()),
            "--name",
            "demo",
            "--epochs",
            str(a.epochs),
            "--width",
            "8",
            "--workers",
            "2",
        ],
        ["segment", str(archive), "--out", str(seg), "--model", str(runs / "demo" / "best" / "checkpoint.pt")],
        ["evaluate", "--pred", str(seg), "--ref", str(archive), "--max-rows", "8"],
    ]
    for i, argv in enumerate(steps, 1):
        print(f"\n[{i}/{len(steps) + 1}] raybird {' '.join(argv)}", flush=True)
        code = main(argv)
        if code:
            return code
    first = sorted(p for p in archive.iterdir() if p.suffix in (".flac", ".wav"))[0]
    png = out / "plot.png"
    print(f"\n[{len(steps) + 1}/{len(steps) + 1}] raybird plot {first} --segments {seg} --out {png}")
    return main(
        [
            "plot",
            str(first),
            "--segments",
            str(seg),
            "--out",
            str(png),
            "--ref",
            str(first.with_name(first.stem + ".truth.npz")),
        ]
    )


def _add_export(sub):
    p = sub.add_parser(
        "export",
        help="copy a checkpoint without optimizer state, ready to ship or to --model; "
        "given several, write the average of their weights",
    )
    p.add_argument(
        "checkpoint",
        nargs="+",
        help="a checkpoint.pt (e.g. RUN/best/checkpoint.pt); several: "
        "checkpoints of one run or fine-tuned from one model, averaged",
    )
    p.add_argument("--out", required=True, help="where to write the inference checkpoint")
    p.add_argument(
        "--recalibrate",
        metavar="DATA",
        help="ingest output (folder or s3://) whose training tiles, un-augmented, the BatchNorm "
        "statistics are recomputed on: do it after averaging, and for a checkpoint of a "
        "run trained before --bn-tiles",
    )
    p.add_argument(
        "--recalibrate-tiles",
        type=int,
        default=256,
        metavar="N",
        help="tiles drawn for --recalibrate (default: %(default)s)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(a) -> int:
    from raybird.dsp.spectrogram import SpecConfig
    from raybird.models.checkpoint import (
        average_checkpoints,
        export_for_inference,
        load_checkpoint,
        recalibrate_checkpoint,
    )
    from raybird.pipelines.train import sample_tiles

    tiles = None
    if a.recalibrate:  # read and checked before anything is written
        tiles, spec_json = sample_tiles(a.recalibrate, a.recalibrate_tiles)
        model_spec = load_checkpoint(a.checkpoint[0])[1]["spec_config"]
        if SpecConfig.from_json(spec_json) != SpecConfig.from_json(model_spec):
            raise ValueError(
                f"--recalibrate {a.recalibrate}: its tiles were made with other spectrogram "
                f"settings than the model's ({spec_json} vs {model_spec})"
            )
    if len(a.checkpoint) == 1:
        out = export_for_inference(a.checkpoint[0], a.out)
    else:
        out = average_checkpoints(a.checkpoint, a.out)
    done = recalibrate_checkpoint(out, tiles, a.recalibrate) if tiles is not None else 0
    print(
        f"export: {out} ({out.stat().st_size / 1e6:.1f} MB)"
        + (f", the average of {len(a.checkpoint)} checkpoints" if len(a.checkpoint) > 1 else "")
        + (f", BatchNorm statistics recomputed on {done} tiles of {a.recalibrate}" if done else "")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from raybird import __version__
    from raybird.evaluation.evaluate import add_evaluate_parser
    from raybird.evaluation.plot import add_plot_parser
    from raybird.io.clips import add_export_clips_parser
    from raybird.pipelines.segment import add_segment_parser
    from raybird.pipelines.tune import add_tune_parser
    from raybird.synth.backgrounds import add_backgrounds_parser

    parser = argparse.ArgumentParser(prog="raybird", description=__doc__)
    parser.add_argument("--version", action="version", version=f"raybird {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_synth,
        _add_ingest,
        _add_train,
        add_tune_parser,
        add_segment_parser,
        add_evaluate_parser,
        add_plot_parser,
        add_export_clips_parser,
        add_backgrounds_parser,
        _add_export,
        _add_demo,
    ):
        add(sub)
    for command in sub.choices.values():
        command.formatter_class = _ShowDefaults
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also show Ray's own log lines (else only in its session's log files)",
        )
    return parser


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every --help line ends with its flag's default, except where there is none to show."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. A missing or unreadable input or a bad argument ends with one
    redacted line and exit code 2 (inputs may be URLs carrying credentials); set
    ``RAYBIRD_TRACEBACK=1`` for the full traceback."""
    from raybird.extras import MissingExtra
    from raybird.io.storage import redact
    from raybird.pipelines.runtime import set_verbose

    a = build_parser().parse_args(argv)
    set_verbose(a.verbose)
    try:
        return a.func(a)
    except (OSError, ValueError, MissingExtra) as e:
        if os.environ.get("RAYBIRD_TRACEBACK"):
            raise
        print(f"raybird {a.command}: {redact(f'{type(e).__name__}: {e}')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
