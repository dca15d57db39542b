"""The ``raybird`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from raybird.flags import add_flags, flag, from_args


@dataclass
class DemoConfig:
    """``raybird demo``."""

    out: str = flag("demo_out", "folder for everything the demo writes")
    recordings: int = flag(24, "synthetic recordings to generate", short="-n")
    epochs: int = flag(4, "training epochs")


def cmd_demo(a: DemoConfig) -> int:
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


@dataclass
class ExportConfig:
    """``raybird export``."""

    checkpoint: list[str] = flag(
        help="a checkpoint.pt (e.g. RUN/best/checkpoint.pt); several: checkpoints of one run or "
        "fine-tuned from one model, averaged",
        positional=True,
        nargs="+",
    )
    out: str = flag(help="where to write the inference checkpoint")
    recalibrate: Optional[str] = flag(
        None,
        "ingest output (folder or s3://) whose training tiles, un-augmented, the BatchNorm "
        "statistics are recomputed on: do it after averaging, and for a checkpoint of a "
        "run trained before --bn-tiles",
        metavar="DATA",
    )
    recalibrate_tiles: int = flag(256, "tiles drawn for --recalibrate", metavar="N")


def cmd_export(a: ExportConfig) -> int:
    from raybird.dsp.spectrogram import SpecConfig
    from raybird.models.checkpoint import (
        average_checkpoints,
        export_for_inference,
        load_checkpoint,
        recalibrate_checkpoint,
    )
    from raybird.pipelines.shards import sample_tiles

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


COMMANDS = {  # name -> (help, "module:function", ("module:Config", ...)); imported when run (see build_parser)
    "synth": (
        "write a deterministic synthetic archive with exact truth",
        "raybird.synth.generator:cmd_synth",
        ("raybird.synth.generator:SynthConfig",),
    ),
    "ingest": (
        "recordings -> Parquet spectrogram shards + errors table",
        "raybird.pipelines.ingest:cmd_ingest",
        ("raybird.pipelines.ingest:IngestConfig",),
    ),
    "train": (
        "train the U-Net on ingest shards with Ray Train (DDP)",
        "raybird.pipelines.train:cmd_train",
        ("raybird.pipelines.train:TrainConfig",),
    ),
    "tune": (
        "grid search over training parameters (Ray Tune over Ray Train)",
        "raybird.pipelines.tune:cmd_tune",
        ("raybird.pipelines.tune:TuneConfig",),
    ),
    "segment": (
        "recordings -> bird masks and segments (+ tables for other tools, denoised audio)",
        "raybird.pipelines.segment:cmd_segment",
        (
            "raybird.pipelines.segment:SegmentRun",
            "raybird.inference.recording:SegmentOptions",
            "raybird.pipelines.segment:FileLimits",
        ),
    ),
    "evaluate": (
        "pixel and event metrics of a segment run against reference labels",
        "raybird.evaluation.evaluate:cmd_evaluate",
        ("raybird.evaluation.evaluate:EvaluateConfig",),
    ),
    "plot": (
        "PNG of a recording: spectrogram, predicted mask and segments, reference labels",
        "raybird.evaluation.plot:cmd_plot",
        ("raybird.evaluation.plot:PlotConfig",),
    ),
    "export-clips": (
        "each segment's audio as a WAV clip with a margin, for listening",
        "raybird.io.clips:cmd_export_clips",
        ("raybird.io.clips:ClipsConfig",),
    ),
    "backgrounds": (
        "cut the stretches of a segment run's recordings where it found no bird into clips, as "
        "backgrounds for raybird synth --backgrounds",
        "raybird.synth.backgrounds:cmd_backgrounds",
        ("raybird.synth.backgrounds:BackgroundsConfig",),
    ),
    "export": (
        "copy a checkpoint without optimizer state, ready to ship or to --model; given several, "
        "write the average of their weights",
        "raybird.cli:cmd_export",
        ("raybird.cli:ExportConfig",),
    ),
    "demo": (
        "the whole pipeline on a small synthetic archive, local Ray",
        "raybird.cli:cmd_demo",
        ("raybird.cli:DemoConfig",),
    ),
}


def _resolve(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def command(name: str) -> tuple[Callable[..., int], tuple[type, ...]]:
    """A sub-command's function and config dataclasses (the function takes one config of each
    class, filled from the command line), imported now."""
    _, run, configs = COMMANDS[name]
    return _resolve(run), tuple(_resolve(c) for c in configs)


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, with the flags of ``only`` alone when given (``""``:
    none), so that a command imports its own modules and not every job's (torch, Ray Tune, the
    generator: ~0.6 s of each command, and most of ``raybird --help``'s 2.6 s)."""
    from raybird import __version__

    parser = argparse.ArgumentParser(prog="raybird", description=__doc__)
    parser.add_argument("--version", action="version", version=f"raybird {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, _, _) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=text, formatter_class=_ShowDefaults)
        if only not in (None, name):
            continue
        for config in command(name)[1]:
            add_flags(command_parser, config)
        command_parser.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also show Ray's own log lines (else only in its session's log files)",
        )
    return parser


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every --help line ends with its flag's default, except where there is none to show."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False, ()) else super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. A missing or unreadable input or a bad argument ends with one
    redacted line and exit code 2 (inputs may be URLs carrying credentials); set
    ``RAYBIRD_TRACEBACK=1`` for the full traceback."""
    from raybird.extras import MissingExtra
    from raybird.io.redaction import redact
    from raybird.pipelines.runtime import set_verbose

    argv = sys.argv[1:] if argv is None else argv
    a = build_parser(argv[0] if argv and argv[0] in COMMANDS else "").parse_args(argv)
    set_verbose(a.verbose)
    run, configs = command(a.command)
    try:
        return run(*(from_args(config, a) for config in configs))
    except (OSError, ValueError, MissingExtra) as e:
        if os.environ.get("RAYBIRD_TRACEBACK"):
            raise
        print(f"raybird {a.command}: {redact(f'{type(e).__name__}: {e}')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
