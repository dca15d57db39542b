"""Plots of the shared real recordings segmented by a model (issue 5): for each, the spectrogram
with the predicted mask and segment boxes (red) above the reference labels (cyan).

    python -m benchmarks.real_plots                       # the shipped default model -> docs/img/
    python -m benchmarks.real_plots --model runs/unet/best/checkpoint.pt --out docs/img

Each recording is predicted in this process (:func:`raybird.pipelines.segment.predict_recording`, the
segment job's defaults) and drawn by :func:`raybird.evaluation.plot.plot_recording` with the labels read
as ``raybird plot --ref`` reads them. PNGs are kept small for the docs (a palette of 64 colours,
fewer if one exceeds 150 KB).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image

from raybird.evaluation.plot import plot_recording, read_reference, stitched_spectrogram
from raybird.inference import recording
from raybird.io import storage, tables
from raybird.models import checkpoint

MAX_BYTES = 150 * 1024  # images in docs/
REAL_DEFAULT = Path(os.environ.get("RAYBIRD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared/data/real"))


@dataclass(frozen=True)
class Shown:
    png: str  # file name under --out
    audio: str  # relative to the real-data folder
    ref: str  # label file, relative to the real-data folder
    start: float = 0.0  # seconds shown
    end: Optional[float] = None


RECORDINGS = (
    Shown("real_storm_petrel_XC46092.png", "pykanto/storm_petrel/XC46092.wav", "pykanto/storm_petrel/XC46092.xml"),
    Shown(
        "real_great_tit_B32-0415_05-15.png",
        "pykanto/great_tit/WAV/2021-B32-0415_05-15.wav",
        "pykanto/great_tit/JSON/2021-B32-0415_05-15.JSON",
    ),
    Shown(
        "real_great_tit_SW83-0418_04-79.png",
        "pykanto/great_tit/WAV/2021-SW83-0418_04-79.wav",
        "pykanto/great_tit/JSON/2021-SW83-0418_04-79.JSON",
    ),
    Shown("real_bsd_XC41136.png", "bsd_sample/Test/Raw_audios/XC41136.wav", "bsd_sample/Test/Masks/XC41136.png"),
    Shown(
        "real_bengalese_finch_0808.138.png",
        "bengalese_finch/gy6or6_baseline_230312_0808.138.wav",
        "bengalese_finch/gy6or6_baseline_230312_0808.138.txt",
        1.0,
        5.0,
    ),
)


def render(
    shown: Shown,
    real: Path,
    ckpt: checkpoint.Checkpoint,
    out: Path,
    options=recording.SegmentOptions(),
    width_in: float = 10.0,
    dpi: int = 80,
    colours: int = 64,
) -> tuple[Path, int]:
    """Predict, plot and palette-compress one recording; returns the PNG and its segment count."""
    source = str(real / shown.audio)
    cfg = ckpt.cfg
    _, results = recording.predict_recording(source, ckpt, options)
    result = results[0]
    mask = tables.decode_mask(result.mask, cfg.n_rows, result.n_frames)
    start = max(0, int(round(shown.start / cfg.frame_s)))
    stop = mask.shape[1] if shown.end is None else min(mask.shape[1], int(round(shown.end / cfg.frame_s)) + 1)
    spec = stitched_spectrogram(storage.source_bytes(source), cfg, 0, "mix", start, stop)
    boxes = [s.box for s in result.segments if s.end_s >= shown.start and (shown.end is None or s.start_s <= shown.end)]
    ref, ref_events = read_reference(str(real / shown.ref))
    path = out / shown.png
    title = f"{Path(shown.audio).name} — {ckpt.model_id}: {len(boxes)} segments"
    plot_recording(
        path,
        spec,
        cfg,
        mask[:, start:stop],
        boxes,
        ref,
        start,
        title=title,
        width_in=width_in,
        ref_boxes=ref_events,
        panel_in=2.4,
        dpi=dpi,
    )
    rgb = Image.open(path).convert("RGB")
    while True:  # fewer colours until it fits
        rgb.quantize(colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or colours <= 8:
            return path, len(boxes)
        colours //= 2


def main(argv: Optional[list[str]] = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint (default: the shipped model)")
    ap.add_argument("--real", default=str(REAL_DEFAULT), help="the shared real recordings")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"))
    ap.add_argument("--dpi", type=int, default=80)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint.read_checkpoint(a.model)
    paths = []
    for shown in RECORDINGS:
        path, n = render(shown, Path(a.real), ckpt, out, dpi=a.dpi)
        print(f"{path}: {n} segments, {path.stat().st_size / 1024:.0f} KB")
        paths.append(path)
    return paths


if __name__ == "__main__":
    main()
