"""One recording through the segment job: tiles -> model -> the streaming stitcher -> its
rows of the tables (segments, summary, masks, to a :class:`raybird.io.outputs.PartWriter`) and
its files (tables for other tools, denoised audio), with the options that
change results (:class:`SegmentOptions`). Used by the Ray job, ``--local`` and the Python API."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import pyarrow as pa

from raybird.dsp import boundaries, denoise
from raybird.dsp.spectrogram import SpecConfig, frame_offset_s, n_frames_for, row_freqs
from raybird.flags import flag, off_or_float
from raybird.inference import grouping, postprocess
from raybird.inference.decode import End, Failed, Item, Tiles, prefetched, recording_tiles, unit_tiles
from raybird.inference.predictor import Predictor, Probabilities, inferred
from raybird.io import audio, outputs, redaction, selections, storage, tables
from raybird.io.tables import MASK_SCHEMA, SEGMENT_SCHEMA, SUMMARY_SCHEMA, error_table, write_file
from raybird.models.checkpoint import Checkpoint


@dataclass(frozen=True)
class SegmentOptions:
    """The segment settings that change results (recorded in run.json; a re-run with others is
    refused), each also a flag of ``raybird segment``."""

    threshold: float = flag(0.5, "bird probability threshold")
    min_duration_s: float = flag(0.02, "shortest segment kept (s)", name="--min-duration")
    min_pixels: int = flag(10, "smallest segment kept (pixels)")
    channels: str = flag("mix", "mix down to mono, or segment each channel on its own", choices=audio.CHANNEL_MODES)
    formats: tuple[str, ...] = flag(
        (),
        "also write a table per recording for other tools, comma-separated from "
        f"{','.join(selections.FORMATS)}: raven/<name>.Table.1.selections.txt, audacity/<name>.txt, "
        "csv/<name>.csv, <name> the recording's path under its input's parent folder, "
        "suffix dropped (see docs/outputs.md)",
        name="--format",
        parse=selections.parse_formats,
        metavar="FORMATS",
    )
    denoise: bool = flag(False, "also write denoised/<name>.wav (mask applied to the STFT)")
    probabilities: bool = flag(False, "store the uint8 probability map in masks/")
    class_map: bool = flag(False, "class models: store the uint8 class of each mask pixel in masks/")
    group_overlap: Optional[float] = flag(
        grouping.GROUP_OVERLAP,
        "regions overlapping in time by this fraction of the shorter one (and --group-gap-hz "
        "apart in frequency, e.g. harmonics) form one segment; 'off': every region is one",
        parse=off_or_float,
    )
    group_gap_hz: float = flag(grouping.GROUP_GAP_HZ, "largest frequency gap between grouped regions (Hz)")
    split_depth_db: Optional[float] = flag(
        postprocess.SPLIT_DEPTH_DB,
        "cut a region where its loudest pixel per frame falls this many dB under its loudest "
        "before and after (a silent gap the STFT window smears shut, as between syllables); "
        "'off': never cut",
        name="--split-depth",
        parse=off_or_float,
        metavar="DB",
    )
    merge_gap_s: Optional[float] = flag(
        None,
        "join segments at most this far apart in time (and --group-gap-hz in frequency) into "
        "one, e.g. 0.3 for one segment per song; default: never",
        name="--merge-gap",
        parse=float,
        metavar="SECONDS",
    )
    edge_fraction: Optional[float] = flag(
        boundaries.FRACTION,
        "move each segment's onset and offset to where the level in its band crosses this "
        "fraction (in dB) of the way from the noise up to the sound, measured on the audio every "
        "1 ms; 'off': the edges of the mask's frames, which the STFT window makes early and "
        "late by ~7 ms",
        name="--edges",
        parse=off_or_float,
        metavar="FRACTION",
    )
    min_level_db: Optional[float] = None  # segments from the mask's pixels this far above the row's noise floor

    @property
    def needs_audio_after_mask(self) -> bool:
        """Edges and denoising work on the audio after the mask: a short recording's is kept."""
        return self.edge_fraction is not None or self.denoise


@dataclass
class ChannelResult:
    channel: int
    segments: list
    mask: bytes
    probability: Optional[bytes]
    n_frames: int
    class_map: Optional[bytes] = None


class StitchError(ValueError):
    """A recording that cannot be finished; ``stage`` and the message go to the errors table."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage


class RecordingStitcher:
    """One recording's items, in the order :func:`raybird.inference.decode.recording_tiles`
    yields them (tiles in time order, channels interleaved; the tiles as
    :class:`raybird.inference.predictor.Probabilities`), into one streaming
    :class:`raybird.inference.postprocess.Segmenter` per channel."""

    def __init__(self, cfg: SpecConfig, opts: SegmentOptions, class_names: tuple = ()):
        self.cfg, self.opts, self.class_names = cfg, opts, class_names
        self.segmenters: dict[int, postprocess.Segmenter] = {}
        self.error: Optional[tuple[str, str]] = None
        self.n_samples: Optional[int] = None
        self.audio: Optional[list] = None  # a short recording's audio blocks, from its End
        self.ended: set[int] = set()

    def add(self, item: Union[Probabilities, End, Failed]) -> None:
        if self.error:
            return
        if isinstance(item, Failed):
            self.error = (item.stage, item.reason)
        elif isinstance(item, End):
            self.n_samples, self.audio = item.n_samples, item.audio
            self.ended.update(range(item.n_channels))
        else:
            for ch, first, prob, level, classes in zip(
                item.channel, item.first_frame, item.prob, item.level, item.classes
            ):
                try:
                    self._segmenter(ch).add(prob, first, level, classes)
                except ValueError as e:
                    self.error = ("stitch", str(e))
                    return

    def _segmenter(self, channel: int) -> postprocess.Segmenter:
        if channel not in self.segmenters:
            o = self.opts
            self.segmenters[channel] = postprocess.Segmenter(
                self.cfg,
                o.threshold,
                o.min_duration_s,
                o.min_pixels,
                keep_probability=o.probabilities,
                group_overlap=o.group_overlap,
                group_gap_hz=o.group_gap_hz,
                split_depth_db=o.split_depth_db,
                merge_gap_s=o.merge_gap_s,
                min_level_db=o.min_level_db,
                class_names=self.class_names,
                keep_class_map=o.class_map,
            )
        return self.segmenters[channel]

    def audio_or(self, src):
        """The recording's audio for the work after the mask: its blocks as kept, else ``src``."""
        return self.audio if self.audio is not None else src

    @property
    def done(self) -> bool:
        return self.error is not None or self.n_samples is not None

    def finish(self) -> tuple[float, list[ChannelResult]]:
        """``(duration_s, per-channel results)``; raises :class:`StitchError` for a recording
        that failed upstream or has tiles missing."""
        if self.error:
            raise StitchError(*self.error)
        if self.n_samples is None:
            raise StitchError("stitch", "no end-of-recording row")
        expected = n_frames_for(self.n_samples, self.cfg)
        duration = self.n_samples / self.cfg.sample_rate
        results = []
        for ch in sorted(self.ended):
            seg = self.segmenters.get(ch) or postprocess.Segmenter(self.cfg)
            if seg.n_frames != expected:
                raise StitchError("stitch", f"tiles cover {seg.n_frames} of {expected} frames")
            segments = seg.finish(duration)
            results.append(
                ChannelResult(
                    ch, segments, seg.mask_bytes(), seg.probability_bytes(), seg.n_frames, seg.class_map_bytes()
                )
            )
        return duration, results


def stitch(items: Iterable[Item], predictor: Predictor, stitcher: RecordingStitcher) -> RecordingStitcher:
    """Feed one recording's items to ``stitcher``, its tiles through the model."""
    for item in items:
        stitcher.add(predictor(item) if isinstance(item, Tiles) else item)
    return stitcher


def finish_with_edges(stitcher: RecordingStitcher, src) -> tuple[float, list[ChannelResult]]:
    """:meth:`RecordingStitcher.finish`, then (``edge_fraction``) the segments' edges refined on
    the recording's audio (:func:`raybird.dsp.boundaries.refine`): as the stitcher kept it, or for
    a long recording ``src`` (the path or bytes it was first decoded from) decoded a second time
    as a stream."""
    duration, results = stitcher.finish()
    fraction, cfg = stitcher.opts.edge_fraction, stitcher.cfg
    if fraction is None or not any(r.segments for r in results):
        return duration, results
    by_channel = {r.channel: r for r in results}
    segments = [by_channel[ch].segments if ch in by_channel else [] for ch in range(max(by_channel) + 1)]
    try:
        blocks = audio_blocks(stitcher.audio_or(src), cfg, stitcher.opts.channels)
        refined = boundaries.refine(segments, blocks, cfg.sample_rate, fraction)
    except audio.AudioError as e:
        raise StitchError("decode", f"second decode, for the segment edges: {e}") from None
    except OSError as e:
        raise StitchError("read", f"second read, for the segment edges: {redaction.describe(e)}") from None
    return duration, [dataclasses.replace(r, segments=refined[r.channel]) for r in results]


def audio_blocks(src, cfg: SpecConfig, channels: str) -> Iterable[np.ndarray]:
    """A recording's audio at the model's rate: the blocks kept from its first decode (a list),
    or ``src`` (a path or bytes) decoded again as a stream."""
    return src if isinstance(src, list) else audio.iter_blocks(src, cfg.sample_rate, channels)


def finish_recording(
    rec_id: str,
    source: str,
    stitcher: RecordingStitcher,
    out: str,
    model_id: str,
    src,
    rel: str,
    parts: outputs.PartWriter,
) -> dict:
    """One stitched recording: its rows (or its error row) to ``parts``, its files for other
    tools to ``out``; returns its status row. ``src``: its audio as decoded first (a path or
    bytes), for the edges and denoising; ``rel``: its relative name
    (:func:`raybird.io.storage.member_rel`)."""
    try:
        duration, results = finish_with_edges(stitcher, src)
    except StitchError as e:
        parts.add(rec_id, dict(errors=error_table(source, e.stage, str(e))))
        return dict(recording_id=rec_id, source=source, status="error", n_segments=0, duration_s=0.0)
    rows = recording_tables(
        rec_id, source, duration, results, stitcher.cfg, model_id, stitcher.opts, stitcher.class_names
    )
    write_tool_files(out, source, rows["segments"], results, stitcher.cfg, stitcher.opts, stitcher.audio_or(src), rel)
    parts.add(rec_id, rows)
    return dict(
        recording_id=rec_id,
        source=source,
        status="ok",
        n_segments=sum(len(r.segments) for r in results),
        duration_s=duration,
    )


def segment_units(
    units: Iterable[storage.Unit],
    predictor: Predictor,
    out: str,
    ckpt: Checkpoint,
    opts: SegmentOptions,
    parts: outputs.PartWriter,
    done: frozenset = frozenset(),
    prefetch: int = 0,
) -> Iterator[dict]:
    """Segment every recording of ``units`` not in ``done``: decode, infer
    (:func:`~raybird.inference.predictor.inferred`: the tiles of consecutive short recordings
    share model calls) and stitch as a stream, hand each
    recording's rows to ``parts`` when its last tile is in; yield a status row per recording. A
    unit is marked done in ``parts`` once all its recordings are in."""
    sources: dict = {}  # the audio of the recordings in flight, read once (archives are not re-read)

    def items() -> Iterator[tuple]:
        for unit in units:
            for source, item in unit_tiles(unit, ckpt.cfg, opts.channels, done, sources, opts.needs_audio_after_mask):
                yield unit, source, item
            yield unit, None, None  # the unit's end

    stitcher = None
    for unit, source, item in inferred(prefetched(items(), prefetch) if prefetch else items(), predictor):
        if source is None:
            parts.unit_done(unit.uri)
            continue
        # items come one recording after another
        stitcher = stitcher or RecordingStitcher(ckpt.cfg, opts, predictor.class_names)
        stitcher.add(item)
        if stitcher.done:
            yield finish_recording(
                storage.recording_id(source),
                source,
                stitcher,
                out,
                ckpt.model_id,
                sources.pop(source, None),
                storage.member_rel(unit, source),
                parts,
            )
            stitcher = None


def predict_recording(
    source: str, ckpt: Checkpoint, opts: SegmentOptions = SegmentOptions(), device: Optional[str] = None, src=None
) -> tuple[float, list[ChannelResult]]:
    """One recording in this process (no Ray, nothing written): ``(duration_s, results)``.
    ``src``: its audio (a path or bytes) when ``source`` names no file. Raises
    :class:`StitchError` (a ``ValueError``) for audio that cannot be used."""
    src = storage.source_bytes(source) if src is None else src
    predictor = Predictor(ckpt.data, device or "cpu", os.cpu_count() or 1)
    stitcher = RecordingStitcher(ckpt.cfg, opts, predictor.class_names)
    items = recording_tiles(src, ckpt.cfg, opts.channels, keep_audio=opts.needs_audio_after_mask)
    stitcher = stitch(items, predictor, stitcher)
    return finish_with_edges(stitcher, src)


def segment_table(rec_id: str, source: str, results: list[ChannelResult], model_id: str) -> pa.Table:
    """One recording's rows of the segments table (:data:`SEGMENT_SCHEMA`)."""
    return pa.Table.from_pylist(
        [
            dict(
                recording_id=rec_id,
                source=source,
                channel=r.channel,
                segment_id=s.segment_id,
                start_s=s.start_s,
                end_s=s.end_s,
                low_hz=s.low_hz,
                high_hz=s.high_hz,
                score=s.score,
                model_id=model_id,
                label=s.label,
                label_score=s.label_score,
                top_labels=[name for name, _ in s.top] if s.top else None,
                top_scores=[p for _, p in s.top] if s.top else None,
            )
            for r in results
            for s in r.segments
        ],
        schema=SEGMENT_SCHEMA,
    )


def recording_tables(
    rec_id: str,
    source: str,
    duration: float,
    results: list[ChannelResult],
    cfg: SpecConfig,
    model_id: str,
    opts: SegmentOptions,
    class_names: tuple = (),
) -> dict[str, pa.Table]:
    """One recording's rows of the segments, summary and masks tables."""
    freqs = row_freqs(cfg)
    step = float(freqs[1] - freqs[0]) if len(freqs) > 1 else cfg.bin_hz
    summary = [
        dict(
            recording_id=rec_id,
            source=source,
            channel=r.channel,
            duration_s=duration,
            n_segments=len(r.segments),
            bird_seconds=postprocess.covered_seconds(r.segments),
        )
        for r in results
    ]
    masks = [
        dict(
            recording_id=rec_id,
            source=source,
            channel=r.channel,
            n_rows=cfg.n_rows,
            n_frames=r.n_frames,
            frame0_s=frame_offset_s(cfg),
            hop_s=cfg.frame_s,
            row0_hz=float(freqs[0]),
            row_step_hz=step,
            mask=r.mask,
            probability=r.probability,
            threshold=opts.threshold,
            spec_config=cfg.to_json(),
            model_id=model_id,
            class_map=r.class_map,
            class_names=list(class_names) or None,
        )
        for r in results
    ]
    return dict(
        segments=segment_table(rec_id, source, results, model_id),
        summary=pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA),
        masks=pa.Table.from_pylist(masks, schema=MASK_SCHEMA),
    )


def write_tool_files(
    out: str,
    source: str,
    segments: pa.Table,
    results: list[ChannelResult],
    cfg: SpecConfig,
    opts: SegmentOptions,
    src=None,
    rel: Optional[str] = None,
) -> None:
    """One recording's tables for other tools (``opts.formats``) and denoised audio, each a file
    named after it. ``src``: its audio (a path or bytes, or its blocks as decoded; default: read
    from ``source`` again); ``rel``: its relative name (default: its whole path)."""
    rel = rel or storage.mirrored(source.replace(storage.MEMBER_SEP, "/"))
    for fmt in opts.formats:
        write_file(out, selections.relative_path(fmt, rel), lambda p: selections.write(fmt, p, segments))
    if opts.denoise:

        def frames(g0: int, g1: int) -> np.ndarray:
            return np.stack([_mask_frames(r.mask, cfg.n_rows, r.n_frames, g0, g1) for r in results])

        blocks = audio_blocks(storage.source_bytes(source) if src is None else src, cfg, opts.channels)
        write_file(
            out,
            f"denoised/{selections.output_stem(rel)}.wav",
            lambda p: denoise.write_denoised(p, blocks, frames, cfg, len(results)),
        )


def _mask_frames(packed: bytes, n_rows: int, n_frames: int, g0: int, g1: int) -> np.ndarray:
    out = np.zeros((n_rows, g1 - g0), np.uint8)
    stop = min(g1, n_frames)
    if stop > g0:
        out[:, : stop - g0] = tables.decode_mask(packed, n_rows, n_frames, g0, stop)
    return out
