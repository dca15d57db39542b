"""PNG plots of a recording: the spectrogram (as the model sees it), the predicted mask and
segment boxes on top, and reference labels (boxes or a pixel mask) in a panel below.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from raybird.dsp.spectrogram import SpecConfig, frame_offset_s, row_freqs
from raybird.extras import require
from raybird.flags import flag
from raybird.inference import postprocess, recording
from raybird.inference.decode import Failed, Tiles, recording_tiles
from raybird.io import label_masks, labels, outputs, storage, tables
from raybird.models import checkpoint

PRED_COLOUR, REF_COLOUR = "#ff3030", "#00e5ff"
Boxes = Sequence[tuple[float, float, float, float]]  # (start_s, end_s, low_hz, high_hz)


def _rows_ascending(cfg: SpecConfig) -> tuple[np.ndarray, bool]:
    f = row_freqs(cfg)
    return (f[::-1], True) if len(f) > 1 and f[0] > f[-1] else (f, False)


def plot_recording(
    path: str | Path,
    spec: np.ndarray,
    cfg: SpecConfig,
    mask: Optional[np.ndarray] = None,
    boxes: Boxes = (),
    ref: Optional[labels.Labels] = None,
    first_frame: int = 0,
    title: str = "",
    width_in: float = 12.0,
    ref_boxes: Optional[Sequence[labels.Box]] = None,
    panel_in: float = 3.2,
    dpi: int = 100,
) -> None:
    """Write a PNG: ``spec`` ``(rows, frames)`` in [0, 1] starting at ``first_frame``, the
    predicted ``mask`` (same shape) shaded and ``boxes`` (start, end, low, high[, label])
    outlined in red, labels written above; with ``ref`` (a list
    of :class:`labels.Box` or a :class:`labels.GridMask`) a second panel shows the reference,
    a mask shaded and boxes (or ``ref_boxes``, e.g. the events of a mask) outlined in cyan."""
    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    freqs, flip = _rows_ascending(cfg)
    n = spec.shape[1]
    t0 = frame_offset_s(cfg) + (first_frame - 0.5) * cfg.frame_s
    extent = (t0, t0 + n * cfg.frame_s, freqs[0] - cfg.bin_hz / 2, freqs[-1] + cfg.bin_hz / 2)
    fig = Figure(figsize=(width_in, panel_in * (2 if ref is not None else 1)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if ref is not None else 1, 1, sharex=True, squeeze=False)[:, 0]

    def show(ax, overlay, colour):
        ax.imshow(
            spec[::-1] if flip else spec,
            origin="lower",
            aspect="auto",
            extent=extent,
            cmap="gray_r",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        if overlay is not None:
            shade = ListedColormap([(0, 0, 0, 0), colour])
            ax.imshow(
                (overlay[::-1] if flip else overlay) > 0,
                origin="lower",
                aspect="auto",
                extent=extent,
                cmap=shade,
                alpha=0.45,
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
        ax.set_ylabel("Hz")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])

    def outline(ax, boxes_, colour):
        for start, end, low, high, *label in boxes_:
            ax.add_patch(Rectangle((start, low), end - start, high - low, fill=False, edgecolor=colour, lw=1.2))
            if label and label[0]:  # a class model's label, or the reference's label text
                ax.text(start, high, label[0], color=colour, fontsize=7, va="bottom", clip_on=True)

    show(axes[0], mask, PRED_COLOUR)
    outline(axes[0], boxes, PRED_COLOUR)
    axes[0].set_title(title or f"prediction: {len(boxes)} segments", fontsize=9)
    if ref is not None:
        is_mask = isinstance(ref, labels.GridMask)
        show(axes[1], label_masks.label_mask(ref, cfg, first_frame, n) if is_mask else None, REF_COLOUR)
        shown = [
            b
            for b in (ref_boxes if ref_boxes is not None else [] if is_mask else ref)
            if b.end_s >= extent[0] and b.begin_s <= extent[1]
        ]  # those in the window shown
        outline(
            axes[1],
            [
                (
                    b.begin_s,
                    b.end_s,
                    extent[2] if b.low_hz is None else b.low_hz,
                    extent[3] if b.high_hz is None else b.high_hz,
                    b.label,
                )
                for b in shown
            ],
            REF_COLOUR,
        )
        what = f"reference mask, {len(shown)} events" if is_mask else f"reference: {len(shown)} labels"
        axes[1].set_title(what, fontsize=9)
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=dpi)


def stitched_spectrogram(
    src,
    cfg: SpecConfig,
    channel: int = 0,
    channels: str = "mix",
    start_frame: int = 0,
    stop_frame: Optional[int] = None,
) -> np.ndarray:
    """Frames ``start_frame..stop_frame`` of the spectrogram the model saw (decoded as the segment
    job decodes, tiles stitched like its predictions), streaming: only the requested frames are kept."""
    parts = []
    for item in recording_tiles(src, cfg, channels):
        if isinstance(item, Failed):
            raise ValueError(f"cannot {item.stage} the recording: {item.reason}")
        if not isinstance(item, Tiles):
            continue
        for ch, index, first, valid, spec in zip(
            item.channel, item.tile_index, item.first_frame, item.valid_frames, item.spec
        ):
            if ch != channel:
                continue
            keep = postprocess.kept_columns(int(index), int(valid), cfg)
            a, b = first + keep.start, first + keep.stop
            if stop_frame is not None and a >= stop_frame:
                return _joined(parts, cfg)
            lo, hi = max(a, start_frame), b if stop_frame is None else min(b, stop_frame)
            if hi > lo:
                parts.append(spec[:, lo - first : hi - first].astype(np.float32) / 255)
    return _joined(parts, cfg)


def _joined(parts: list, cfg: SpecConfig) -> np.ndarray:
    return np.concatenate(parts, axis=1) if parts else np.zeros((cfg.n_rows, 0), np.float32)


def read_reference(path: str) -> tuple[labels.Labels, list[labels.Box]]:
    """A label file named by the conventions ingest and evaluate use (truth ``.npz``, Raven
    table, Audacity ``.txt``, Sonic Visualiser ``.xml``, pykanto ``JSON/<stem>.JSON``,
    BirdSoundsDenoising ``Masks/<stem>.png``): its pixels (boxes or a mask) and its events (the
    boxes, or for a mask the Raven table beside it or the mask's regions)."""
    from raybird.evaluation.references import label_file_reference

    ref = label_file_reference(path)
    return ref.pixels, ref.events


# ---- command line --------------------------------------------------------------------------------
@dataclass
class PlotConfig:
    """``raybird plot``."""

    recording: str = flag(help="audio file (path or s3://)", positional=True)
    out: str = flag(help="PNG file to write")
    segments: Optional[str] = flag(
        None, "output folder of `raybird segment` holding this recording (default: predict now with --model)"
    )
    model: Optional[str] = flag(None, "checkpoint used without --segments (default: the shipped model)")
    ref: Optional[str] = flag(
        None,
        "reference labels: truth .npz, Raven table, Audacity labels, Sonic Visualiser, "
        "pykanto JSON/<stem>.JSON, BirdSoundsDenoising Masks/<stem>.png",
    )
    channels: str = flag("mix", "as given to segment", choices=("mix", "split"))
    channel: int = flag(0, "channel shown (with --channels split)")
    start: float = flag(0.0, "first second shown")
    end: Optional[float] = flag(None, "last second shown (default: the end)", parse=float)


def cmd_plot(c: PlotConfig) -> int:
    require("matplotlib")  # before any work
    source = c.recording if c.recording.startswith("s3://") else os.path.abspath(c.recording)
    if c.segments:
        rec_id = storage.recording_id(source)
        rows = [r for r in outputs.read_outputs(c.segments, "masks", rec_id).to_pylist() if r["channel"] == c.channel]
        if not rows:
            print(f"raybird plot: {source} (channel {c.channel}) is not in {c.segments}/masks")
            return 2
        cfg = SpecConfig.from_json(rows[0]["spec_config"])
        mask = tables.read_mask(rows[0])
        boxes = [
            (s["start_s"], s["end_s"], s["low_hz"], s["high_hz"], s["label"])
            for s in outputs.read_outputs(c.segments, "segments", rec_id).to_pylist()
            if s["channel"] == c.channel
        ]
    else:
        try:
            ckpt = checkpoint.read_checkpoint(c.model)
        except FileNotFoundError as e:
            print(f"raybird plot: {e}")
            return 2
        cfg = ckpt.cfg
        _, results = recording.predict_recording(source, ckpt, recording.SegmentOptions(channels=c.channels))
        result = results[c.channel]
        mask = tables.decode_mask(result.mask, cfg.n_rows, result.n_frames)
        boxes = [(*s.box, s.label) for s in result.segments]
    start = max(0, int(round(c.start / cfg.frame_s)))
    stop = mask.shape[1] if c.end is None else min(mask.shape[1], int(round(c.end / cfg.frame_s)) + 1)
    spec = stitched_spectrogram(storage.source_bytes(source), cfg, c.channel, c.channels, start, stop)
    shown = [b for b in boxes if b[1] >= c.start and (c.end is None or b[0] <= c.end)]
    ref, ref_boxes = read_reference(c.ref) if c.ref else (None, None)
    plot_recording(
        c.out, spec, cfg, mask[:, start:stop], shown, ref, start, title=os.path.basename(source), ref_boxes=ref_boxes
    )
    print(f"plot: {c.out}")
    return 0
