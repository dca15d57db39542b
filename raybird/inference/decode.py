"""Decoding for segmentation: a unit of input (a file, or an archive's recordings in turn) as a
stream of tile rows, or an error row per recording that cannot be read or decoded."""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from raybird.dsp.spectrogram import SpecConfig, blank_above_nyquist, iter_tiles, to_uint8
from raybird.io import audio, storage

# Rows between decoding and stitching, by kind: "tile", "end" (per channel, with the decoded
# length), "error" (stage, reason). Decoded "tile" rows carry the
# spectrogram (uint8, rows x tile_frames, row-major) and its silent frames (np.packbits of a
# flag per frame) with the tile's first_frame / valid_frames;
# after prediction they carry ``prob`` and ``level`` (the spectrogram), both frame-major uint8,
# of the kept columns; first_frame / n_frames then describe those columns.
_COMMON = [
    ("recording_id", pa.string()),
    ("source", pa.string()),
    ("channel", pa.int16()),
    ("kind", pa.string()),
    ("tile_index", pa.int32()),
    ("first_frame", pa.int64()),
]


_TAIL = [("n_samples", pa.int64()), ("stage", pa.string()), ("reason", pa.string())]


TILE_SCHEMA = pa.schema(
    _COMMON + [("valid_frames", pa.int32()), ("spec", pa.binary()), ("silent", pa.binary())] + _TAIL
)


PROB_SCHEMA = pa.schema(_COMMON + [("n_frames", pa.int32()), ("prob", pa.binary()), ("level", pa.binary())] + _TAIL)


def _row(schema: pa.Schema, **values) -> dict:
    return {name: values.get(name) for name in schema.names}


def _error_rows(source: str, stage: str, reason: str) -> pa.Table:
    return pa.Table.from_pylist(
        [
            _row(
                TILE_SCHEMA,
                recording_id=storage.recording_id(source),
                source=storage.redact(source),
                channel=0,
                kind="error",
                stage=stage,
                reason=storage.redact(reason),
            )
        ],
        schema=TILE_SCHEMA,
    )


def iter_sources(unit: storage.Unit, done: frozenset = frozenset()) -> Iterator[tuple[str, object, Optional[tuple]]]:
    """``(source, src, error)`` for every recording of a unit not in ``done``: ``src`` a path or
    bytes for the decoder, or ``error`` = (stage, reason). Same rules as ingest."""
    if unit.kind == "file":
        if storage.recording_id(unit.uri) in done:
            return
        src, problem = storage.open_listed_file(unit.uri)
        yield unit.uri, None if problem else src, problem
        return
    try:
        for name, data in storage.iter_archive(unit.uri):
            source = f"{unit.uri}{storage.MEMBER_SEP}{name}"
            if storage.is_hidden(name) or storage.is_side_file(name) or storage.recording_id(source) in done:
                continue
            problem = storage.member_problem(name, data)
            yield source, None if problem else data, problem
    except Exception as e:  # a corrupt archive: the archive itself is one error row
        yield unit.uri, None, ("read", f"corrupt or unreadable archive: {storage.describe(e)}")


def recording_tiles(
    source: str, src, cfg: SpecConfig, channels: str = "mix", rows_per_table: int = 16
) -> Iterator[pa.Table]:
    """Stream one recording as :data:`TILE_SCHEMA` tables: its tiles, then one end row per
    channel; an error row instead of the end rows if decoding fails."""
    rec_id = storage.recording_id(source)
    n_samples, rows, n_channels = 0, [], 1

    def counted(blocks):
        nonlocal n_samples
        for b in blocks:
            n_samples += b.shape[1]
            yield b

    try:
        rate = audio.info(src).sample_rate
        for tile in iter_tiles(counted(audio.iter_blocks(src, cfg.sample_rate, channels)), cfg):
            n_channels = tile.spec.shape[0]
            rows += [
                _row(
                    TILE_SCHEMA,
                    recording_id=rec_id,
                    source=source,
                    channel=ch,
                    kind="tile",
                    tile_index=tile.index,
                    first_frame=tile.first_frame,
                    valid_frames=tile.valid_frames,
                    spec=to_uint8(spec).tobytes(),
                    silent=np.packbits(silent).tobytes(),
                )
                for ch, (spec, silent) in enumerate(zip(blank_above_nyquist(tile.spec, cfg, rate), tile.silent))
            ]
            if len(rows) >= rows_per_table:
                yield pa.Table.from_pylist(rows, schema=TILE_SCHEMA)
                rows = []
    except audio.AudioError as e:
        yield _error_rows(source, "decode", str(e))
        return
    except (OSError, EOFError, MemoryError) as e:
        yield _error_rows(source, "read", storage.describe(e))
        return
    except Exception as e:  # one odd file must not stop a run over millions: it gets its error row
        yield _error_rows(source, "decode", f"unexpected {type(e).__name__}: {e}")
        return
    rows += [
        _row(TILE_SCHEMA, recording_id=rec_id, source=source, channel=ch, kind="end", n_samples=n_samples)
        for ch in range(n_channels)
    ]
    yield pa.Table.from_pylist(rows, schema=TILE_SCHEMA)


def unit_tiles(
    unit: storage.Unit,
    cfg: SpecConfig,
    channels: str = "mix",
    done: frozenset = frozenset(),
    sources: Optional[dict] = None,
) -> Iterator[pa.Table]:
    """:func:`recording_tiles` of every recording of a unit; ``sources``, when given, receives
    ``{source: src}`` (a path or the bytes of an archive member) before the recording's first
    table, so that its audio can be read again without reading the archive again."""
    for source, src, error in iter_sources(unit, done):
        if error is not None:
            yield _error_rows(source, *error)
        else:
            if sources is not None:
                sources[source] = src
            yield from recording_tiles(source, src, cfg, channels)
