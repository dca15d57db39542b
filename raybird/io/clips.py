"""Each segment's audio as a short file, for listening and review (``raybird export-clips``).

Reads a segment run's segments table and cuts every segment (``--min-score`` and up) out of its
recording, ``--margin`` seconds before and after (clipped to the recording), at the recording's own
sample rate and channels, as 16-bit WAV: ``CLIPS/<file stem>.<recording_id>/<segment_id>.wav``.
``CLIPS/clips.csv`` lists every clip with its segment's columns, where the clip starts in the
recording (``clip_start_s``: a segment starts ``start_s - clip_start_s`` into its clip), and the
reason for any recording that could not be read again (its segments get no clip; the rest go on).
Runs in this process, a recording at a time, each read once (a segment run's recordings may be on
S3 or in archives: read as the segment job read them).
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import soundfile as sf

from raybird.flags import flag
from raybird.io import redaction, selections, storage
from raybird.io.outputs import read_outputs
from raybird.io.storage import source_bytes
from raybird.io.tables import write_file

INDEX = "clips.csv"


def clip_folder(source: str) -> str:
    name = source.split(storage.MEMBER_SEP, 1)[-1].replace("\\", "/")
    return f"{PurePosixPath(name).stem}.{storage.recording_id(source)}"


def _cut(src, rows: list[dict], out_dir: str, margin_s: float) -> list[dict]:
    """Write one recording's clips; its rows with ``clip`` and ``clip_start_s`` filled in."""
    with sf.SoundFile(io.BytesIO(src) if isinstance(src, bytes) else src) as f:
        sr, n = f.samplerate, f.frames
        for r in rows:
            a = max(0, int((r["start_s"] - margin_s) * sr))
            b = min(n, int(round((r["end_s"] + margin_s) * sr)))
            f.seek(a)
            x = f.read(b - a, dtype="float32", always_2d=True)
            rel = f"{clip_folder(r['source'])}/{r['segment_id']:05d}.wav"
            write_file(out_dir, rel, lambda p: sf.write(p, x, sr, format="WAV", subtype="PCM_16"))
            r.update(clip=rel, clip_start_s=a / sr, error=None)
    return rows


def export_clips(
    segments_out: str, out_dir: str, margin_s: float = 0.5, min_score: float = 0.0, show_progress: bool = True
) -> pa.Table:
    """Write the clips of every segment of the run in ``segments_out`` with ``score >= min_score``
    into ``out_dir`` (folder or ``s3://``) and their index; returns the index table."""
    from tqdm import tqdm

    if margin_s < 0:
        raise ValueError(f"--margin must be >= 0, got {margin_s}")
    segs = read_outputs(segments_out, "segments")
    if not len(segs) and not len(read_outputs(segments_out, "summary")):
        raise ValueError(f"{segments_out}: no segment run there (no segments or summary table)")
    segs = segs.filter(pc.greater_equal(segs.column("score"), min_score)).sort_by(
        [("source", "ascending"), ("segment_id", "ascending")]
    )
    by_source: dict[str, list[dict]] = {}
    for r in segs.to_pylist():
        by_source.setdefault(r["source"], []).append(r)
    rows = []
    for source, group in tqdm(
        by_source.items(), unit="rec", desc="export-clips", disable=not show_progress, file=sys.stderr
    ):
        try:
            rows += _cut(source_bytes(source), group, out_dir, margin_s)
        except (OSError, RuntimeError, ValueError, sf.LibsndfileError) as e:
            rows += [
                dict(r, clip=None, clip_start_s=None, error=redaction.redact(f"{type(e).__name__}: {e}")) for r in group
            ]
    schema = (
        segs.schema.append(pa.field("clip", pa.string()))
        .append(pa.field("clip_start_s", pa.float64()))
        .append(pa.field("error", pa.string()))
    )
    index = pa.Table.from_pylist(rows, schema=schema)
    write_file(out_dir, INDEX, lambda p: pacsv.write_csv(selections.csv_table(index), p))
    return index


@dataclass
class ClipsConfig:
    """``raybird export-clips``."""

    segments: str = flag(help="a segment run's --out folder or s3:// prefix", positional=True)
    out: str = flag(help="folder or s3:// prefix for the clips and clips.csv")
    margin: float = flag(0.5, "seconds of audio before and after each segment")
    min_score: float = flag(0.0, "only segments with at least this score")
    no_progress: bool = flag(False, "no progress bar")


def cmd_export_clips(c: ClipsConfig) -> int:
    index = export_clips(c.segments, c.out, c.margin, c.min_score, not c.no_progress)
    failed = sum(e is not None for e in index.column("error").to_pylist())
    print(
        f"export-clips: {len(index) - failed} clips in {c.out} (index: {os.path.join(c.out, INDEX)})"
        + (f"; {failed} segments without a clip (their recording could not be read: see the index)" if failed else "")
    )
    return 0
