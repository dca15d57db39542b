"""Decoding for segmentation: a unit of input (a file, or an archive's recordings in turn) as a
stream of items per recording: :class:`Tiles` (the spectrogram tiles, as the model takes them),
then :class:`End`; or :class:`Failed` for a recording that cannot be read or decoded. Arrays
stay arrays here: this runs in the process that predicts and stitches (Arrow is only at the Ray
Data boundary, :mod:`raybird.pipelines.segment`); :func:`prefetched` decodes ahead of the model
in a thread of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Union

import numpy as np

from raybird.dsp.spectrogram import SpecConfig, blank_above_nyquist, iter_tiles, to_uint8
from raybird.io import audio, storage


@dataclass
class Tiles:
    """Consecutive tiles of one recording in time order, channels interleaved."""

    channel: np.ndarray  # (n,) int
    tile_index: np.ndarray  # (n,) int: the tile's place in its channel
    first_frame: np.ndarray  # (n,) int
    valid_frames: np.ndarray  # (n,) int: frames from there on are padding past the end
    spec: np.ndarray  # (n, rows, tile_frames) uint8: what the model takes
    silent: np.ndarray  # (n, tile_frames) bool: digitally silent frames (nothing is found there)


@dataclass
class End:
    """A recording decoded to its end: its length and channels, and, when asked for and it holds
    at most :data:`KEEP_AUDIO_BYTES`, its audio as decoded (blocks ``(C, n)`` at the model's rate)
    for refining the segment edges (:func:`raybird.dsp.boundaries.refine`), so that only a long
    recording is decoded a second time."""

    n_samples: int
    n_channels: int
    audio: Optional[list[np.ndarray]] = None


KEEP_AUDIO_BYTES = 32 * 2**20  # ~6 min of mono float32 at 22.05 kHz: an AudioMoth file, not a night


@dataclass
class Failed:
    """A recording that could not be read or decoded; ``stage`` and ``reason`` go to the errors table."""

    stage: str
    reason: str


Item = Union[Tiles, End, Failed]


def _tiles(rows: list[tuple]) -> Tiles:
    channel, index, first, valid, spec, silent = zip(*rows)
    return Tiles(*(np.array(v) for v in (channel, index, first, valid)), np.stack(spec), np.stack(silent))


def recording_tiles(
    src, cfg: SpecConfig, channels: str = "mix", per_item: int = 16, keep_audio: bool = False
) -> Iterator[Item]:
    """One recording's audio (a path or bytes) as :class:`Tiles` of up to ``per_item`` tiles,
    then :class:`End` (with ``keep_audio``, holding a short recording's audio); :class:`Failed`
    instead of the end if reading or decoding fails."""
    n_samples, rows, n_channels = 0, [], 1
    kept: Optional[list] = [] if keep_audio else None

    def counted(blocks):
        nonlocal n_samples, kept
        for b in blocks:
            n_samples += b.shape[1]
            if kept is not None and n_samples * b.shape[0] * b.itemsize > KEEP_AUDIO_BYTES:
                kept = None  # too long to hold: decoded again for the edges
            if kept is not None:
                kept.append(b)
            yield b

    try:
        rate = audio.info(src).sample_rate
        for tile in iter_tiles(counted(audio.iter_blocks(src, cfg.sample_rate, channels)), cfg):
            n_channels = tile.spec.shape[0]
            rows += [
                (ch, tile.index, tile.first_frame, tile.valid_frames, to_uint8(spec), silent)
                for ch, (spec, silent) in enumerate(zip(blank_above_nyquist(tile.spec, cfg, rate), tile.silent))
            ]
            if len(rows) >= per_item:
                yield _tiles(rows)
                rows = []
    except Exception as e:  # its error row; the run goes on
        yield Failed(*audio.failure(e))
        return
    if rows:
        yield _tiles(rows)
    yield End(n_samples, n_channels, kept)


def unit_tiles(
    unit: storage.Unit,
    cfg: SpecConfig,
    channels: str = "mix",
    done: frozenset = frozenset(),
    sources: Optional[dict] = None,
    keep_audio: bool = False,
) -> Iterator[tuple[str, Item]]:
    """``(source, item)``: :func:`recording_tiles` of every recording of a unit, in turn;
    ``sources``, when given, receives ``{source: src}`` (a path or the bytes of an archive member)
    before the recording's first item, so that its audio can be read again without reading the
    archive again."""
    for source, src, error in storage.iter_sources(unit, done):
        if error is not None:
            yield source, Failed(*error)
            continue
        if sources is not None:
            sources[source] = src
        for item in recording_tiles(src, cfg, channels, keep_audio=keep_audio):
            yield source, item


def prefetched(items: Iterator, depth: int) -> Iterator:
    """``items`` produced by a background thread, up to ``depth`` ahead: decoding (numpy, soxr,
    FFT; they release the GIL) overlaps with inference on a GPU."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    end = object()

    def produce():
        try:
            for item in items:
                q.put(item)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)
        q.put(end)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield item
