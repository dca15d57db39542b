"""Segments as the tables other tools read: one per recording (``segment --format``) and one per
run (``--combine``), beside the Parquet tables.

**Formats** (:data:`FORMATS`), each row a segment with its score and label (a class model's
``label``; "bird" from a bird/background model):

* ``raven``: a Raven Pro selection table, ``raven/<name>.Table.1.selections.txt``: Raven's
  columns, ``Annotation`` (the label: OpenSoundscape's and raybird's readers take it from there),
  ``Score``, ``Segment ID`` (the segments table's ``segment_id``) and, from a class model,
  ``Label Score`` (the label's mean probability).
* ``audacity``: an Audacity label track, ``audacity/<name>.txt`` (File > Import > Labels), the
  label text ``<label> <score>`` (a class model's label score) and the band as Audacity's
  spectral selection.
* ``csv``: ``csv/<name>.csv``, the segments table's columns, ``label`` filled in.

``<name>`` is the recording's path under the parent folder of the input it was found in, its
audio suffix dropped (:attr:`raybird.io.storage.Unit.rel`): the tables mirror the input folders, as
BirdNET-Analyzer's do, and sit under the audio's own file name, so tools that pair
``x.Table.1.selections.txt`` with ``x.wav`` by name find them. Recordings found by a manifest,
or same-named under two inputs, mirror their whole path.

**Combined** (:func:`write_combined`, after a run, from the segments and summary tables, so
recordings segmented by an earlier run resumed into OUT are in it): ``raven/combined.selections.txt``
in Raven's file-sequence convention as BirdNET-Analyzer's ``--combine_results`` writes it (the
recordings one after another in source order: ``Begin Time (s)`` counts from the first one's start,
``File Offset (s)`` from the row's own recording, named in ``Begin Path``), and ``csv/combined.csv``.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from raybird.io.labels import Box, write_audacity, write_raven

FORMATS = ("raven", "audacity", "csv")
SUFFIXES = {"raven": ".Table.1.selections.txt", "audacity": ".txt", "csv": ".csv"}
LABEL = "bird"


def parse_formats(value: str) -> tuple[str, ...]:
    """``"raven,csv"`` -> ``("raven", "csv")``; an unknown name is a ``ValueError``."""
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if unknown := [n for n in names if n not in FORMATS]:
        raise ValueError(f"unknown --format {', '.join(unknown)}: choose from {', '.join(FORMATS)}")
    return names


def output_stem(rel: str) -> str:
    """A recording's relative name (:attr:`raybird.io.storage.Unit.rel`) without its audio suffix:
    the name of its tables for other tools and of its denoised audio."""
    return rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel


def relative_path(fmt: str, rel: str) -> str:
    """Where one recording's table of format ``fmt`` goes under OUT."""
    return f"{fmt}/{output_stem(rel)}{SUFFIXES[fmt]}"


def _boxes(segments: pa.Table) -> list[Box]:
    return [
        Box(r["start_s"], r["end_s"], r["low_hz"], r["high_hz"], r["label"] or LABEL, r["channel"])
        for r in segments.select(["start_s", "end_s", "low_hz", "high_hz", "channel", "label"]).to_pylist()
    ]


def _labelled(segments: pa.Table) -> bool:
    return segments.column("label").null_count < len(segments)


def csv_table(segments: pa.Table) -> pa.Table:
    """The segments with ``label`` filled in and the top classes as ``;``-separated text (CSV
    holds no lists)."""
    i = segments.schema.get_field_index("label")
    segments = segments.set_column(i, "label", pc.fill_null(segments.column("label"), LABEL))
    for name in ("top_labels", "top_scores"):
        text = pc.binary_join(pc.cast(segments.column(name), pa.list_(pa.string())), ";")
        segments = segments.set_column(segments.schema.get_field_index(name), name, text)
    return segments


def _extra_columns(segments: pa.Table) -> dict:
    extra = {"Score": segments.column("score").to_pylist(), "Segment ID": segments.column("segment_id").to_pylist()}
    if _labelled(segments):
        extra["Label Score"] = segments.column("label_score").to_pylist()
    return extra


def write(fmt: str, path: str, segments: pa.Table) -> None:
    """One recording's segments (rows of the segments table) as a ``fmt`` table at ``path``."""
    if fmt == "raven":
        write_raven(path, _boxes(segments), _extra_columns(segments))
    elif fmt == "audacity":
        scores = segments.column("label_score" if _labelled(segments) else "score").to_pylist()
        boxes = [
            Box(b.begin_s, b.end_s, b.low_hz, b.high_hz, f"{b.label} {score:.3f}", b.channel)
            for b, score in zip(_boxes(segments), scores)
        ]
        write_audacity(path, boxes)
    else:
        pacsv.write_csv(csv_table(segments), path)


def write_combined(fmt: str, path: str, segments: pa.Table, durations: dict[str, float]) -> None:
    """Every recording's segments in one ``fmt`` table (``raven`` or ``csv``); ``durations``:
    seconds per source, which place each recording in Raven's file sequence."""
    segments = segments.sort_by([("source", "ascending"), ("start_s", "ascending"), ("segment_id", "ascending")])
    if fmt == "csv":
        pacsv.write_csv(csv_table(segments), path)
        return
    offset, starts = 0.0, {}
    for source in sorted(durations):
        starts[source] = offset
        offset += durations[source]
    sources = segments.column("source").to_pylist()
    shift = pa.array([starts[s] for s in sources], pa.float64())
    shifted = segments.set_column(
        segments.schema.get_field_index("start_s"), "start_s", pc.add(segments.column("start_s"), shift)
    )
    shifted = shifted.set_column(
        shifted.schema.get_field_index("end_s"), "end_s", pc.add(segments.column("end_s"), shift)
    )
    write_raven(
        path,
        _boxes(shifted),
        {
            "Begin Path": sources,
            "File Offset (s)": [repr(float(x)) for x in segments.column("start_s").to_pylist()],
            **_extra_columns(segments),
        },
    )


COMBINED = {"raven": "raven/combined.selections.txt", "csv": "csv/combined.csv"}


def combinable(formats: Sequence[str]) -> list[str]:
    """The formats of ``formats`` that have a combined table (an Audacity track belongs to one file)."""
    return [f for f in formats if f in COMBINED]
