"""The model on tiles: the segment job's inference step (plain PyTorch, arrays in and out), and
the batching of a stream of tiles across recordings (:func:`inferred`)."""

from __future__ import annotations

import ctypes
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from raybird.dsp.spectrogram import SpecConfig
from raybird.inference import postprocess
from raybird.inference.decode import Tiles
from raybird.models import checkpoint

CPU_BATCH = 4  # tiles per model call on CPU (see Predictor)
GPU_BATCH = 64


@dataclass
class Probabilities:
    """The model's output on :class:`~raybird.inference.decode.Tiles`, cut to the columns each
    tile contributes to its recording (:func:`raybird.inference.postprocess.kept_columns`):
    per tile, its channel, first kept frame, bird probability ``round(p * 255)`` and the input
    spectrogram (both uint8, rows x kept frames), and a class model's probability of each class
    (uint8, classes x rows x kept frames; None from a bird/background model)."""

    channel: list[int]
    first_frame: list[int]
    prob: list[np.ndarray]
    level: list[np.ndarray]
    classes: list[Optional[np.ndarray]]


class Predictor:
    """Loads the checkpoint once (per segment actor, or per ``--local`` run); tiles -> kept
    probability columns.

    Inference settings measured by benchmarks/segment.py (2-core EPYC, default model): torch
    inference_mode, channels_last, BatchNorm folded into the convs, bf16 autocast where the
    device has bf16 (``precision="auto"``) and, on CPU, small model batches (:data:`CPU_BATCH`:
    activations stay in cache; 16 is slower); together ~5.8x faster than plain fp32 NCHW."""

    def __init__(
        self, data: bytes, device: str = "cpu", threads: int = 1, batch_size: int = CPU_BATCH, precision: str = "auto"
    ):
        import torch

        from raybird.training import engine

        torch.set_num_threads(max(1, int(threads)))
        model, payload = checkpoint.load_checkpoint(data, map_location=device)
        self.settings = engine.precision_settings(device, precision)
        self.model = self.settings.prepare_model(engine.fold_batchnorm(model))
        self.cfg = SpecConfig.from_json(payload["spec_config"])
        self.class_names = model.config.class_names  # a class model's; () for bird/background
        self.batch_size = batch_size
        self.trim_heap = heap_trimmer()

    def __call__(self, tiles: Tiles) -> Probabilities:
        out = predict_tiles(tiles, self.model, self.settings, self.cfg, self.batch_size)
        self.trim_heap()
        return out


def heap_trimmer() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)`` (a no-op elsewhere). The model's large transient buffers come
    from glibc's heap (its mmap threshold rises to their size) and fragment between small
    long-lived objects: an actor's RSS grew ~5 MB per batch, 1.8 GB over a 30-minute recording.
    Trimming after each batch returns the freed pages; measured: RSS flat, no slower."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def predict_tiles(tiles: Tiles, model, settings, cfg: SpecConfig, batch_size: int) -> Probabilities:
    """The model on ``tiles``, ``batch_size`` at a time; nothing is found in digitally silent
    frames, whatever the model makes of an empty input."""
    from raybird.training.engine import predict_classes

    spec = tiles.spec
    starts = range(0, len(spec), batch_size)
    batches = [predict_classes(model, spec[i : i + batch_size], settings, quantize=True) for i in starts]
    probs = np.concatenate([bird.numpy() for bird, _ in batches])
    probs[np.broadcast_to(tiles.silent[:, None, :], probs.shape)] = 0
    classes = None
    if batches and batches[0][1] is not None:
        classes = np.concatenate([c.numpy() for _, c in batches])
        classes[np.broadcast_to(tiles.silent[:, None, None, :], classes.shape)] = 0
    out = Probabilities([], [], [], [], [])
    for j in range(len(spec)):
        keep = postprocess.kept_columns(int(tiles.tile_index[j]), int(tiles.valid_frames[j]), cfg)
        out.channel.append(int(tiles.channel[j]))
        out.first_frame.append(int(tiles.first_frame[j]) + keep.start)
        out.prob.append(probs[j][:, keep])
        out.level.append(spec[j][:, keep])
        out.classes.append(None if classes is None else classes[j][..., keep])
    return out


def inferred(stream: Iterable[tuple], predictor: Predictor) -> Iterator[tuple]:
    """``stream``'s tuples, in order, each :class:`~raybird.inference.decode.Tiles` (the last
    element) replaced by the model's :class:`~raybird.inference.predictor.Probabilities`.
    Consecutive tiles, of one recording or of several short ones, go through the model together
    until they fill ``predictor.batch_size``: a 10-s recording is 4 tiles, a GPU batch 64. A
    tile's probabilities do not depend on what shares its batch (bit for bit, measured on this
    CPU), so neither do the tables."""
    window: list[tuple] = []
    n_tiles = 0
    for entry in stream:
        window.append(entry)
        if isinstance(entry[-1], Tiles):
            n_tiles += len(entry[-1].spec)
            if n_tiles >= predictor.batch_size:
                yield from _infer_window(window, predictor)
                window, n_tiles = [], 0
    yield from _infer_window(window, predictor)


def _infer_window(window: list[tuple], predictor: Predictor) -> Iterator[tuple]:
    tiles = [e[-1] for e in window if isinstance(e[-1], Tiles)]
    if tiles:
        joined = tiles[0] if len(tiles) == 1 else Tiles(*(np.concatenate(v) for v in zip(*map(_fields, tiles))))
        probs = predictor(joined)
        ends = np.cumsum([len(t.spec) for t in tiles])
        split = iter(Probabilities(*(v[a:b] for v in _fields(probs))) for a, b in zip([0, *ends[:-1]], ends))
    for e in window:
        yield (*e[:-1], next(split)) if isinstance(e[-1], Tiles) else e


def _fields(x) -> list:
    return [getattr(x, f.name) for f in dataclasses.fields(x)]
