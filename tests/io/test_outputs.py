"""Part files and their journal: rolling, what counts as committed, runs of earlier versions."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from raybird.io import outputs, storage, tables


def rows(rec_id: str, n_segments: int) -> dict:
    seg = [dict(recording_id=rec_id, source=f"/x/{rec_id}.wav", segment_id=i) for i in range(n_segments)]
    summary = [dict(recording_id=rec_id, source=f"/x/{rec_id}.wav", n_segments=n_segments)]
    return dict(
        segments=pa.Table.from_pylist(seg, schema=tables.SEGMENT_SCHEMA),
        summary=pa.Table.from_pylist(summary, schema=tables.SUMMARY_SCHEMA),
    )


def test_parts_roll_at_the_recording_limit_and_commit_with_their_journal(tmp_path):
    out = str(tmp_path)
    w = outputs.PartWriter(out, max_recordings=3)
    for i in range(7):
        w.add(f"r{i}", rows(f"r{i}", i))
    assert len(list((tmp_path / "segments").iterdir())) == 2  # two full parts; the third is buffered
    assert outputs.completed_ids(out) == {f"r{i}" for i in range(6)}
    w.add("bad", dict(errors=tables.error_table("/x/bad.wav", "decode", "not audio")))
    w.unit_done("/x")
    w.commit()
    w.commit()  # nothing buffered: no empty part
    journal = sorted((tmp_path / outputs.JOURNAL).iterdir())
    assert len(journal) == 3
    last = json.loads(journal[-1].read_text())
    assert last["recordings"] == ["r6", "bad"] and last["units"] == [storage.recording_id("/x")]
    assert set(last["files"]) == {"segments", "summary", "errors"}
    assert len(outputs.read_outputs(out, "segments")) == sum(range(7))
    assert sorted(outputs.read_outputs(out, "summary").column("recording_id").to_pylist()) == [
        f"r{i}" for i in range(7)
    ]
    assert outputs.read_outputs(out, "errors").column("reason").to_pylist() == ["not audio"]
    assert len(outputs.read_outputs(out, "masks")) == 0  # no masks rows: no file, an empty table
    assert outputs.read_journal(out).units == {storage.recording_id("/x")}


def test_parts_roll_at_the_size_limit(tmp_path):
    w = outputs.PartWriter(str(tmp_path), max_mb=1e-3)  # ~1 kB: every recording is over it
    for i in range(3):
        w.add(f"r{i}", rows(f"r{i}", 20))
    assert len(outputs.read_journal(str(tmp_path)).ids) == 2  # the last one is buffered
    w.commit()
    assert len(list((tmp_path / "segments").iterdir())) == 3


def test_part_files_without_a_journal_entry_are_not_read(tmp_path):
    """A writer killed between its part files and its journal entry: its files are ignored by
    readers and its recordings are not complete (a resume does them again)."""
    out = str(tmp_path)
    w = outputs.PartWriter(out)
    w.add("kept", rows("kept", 2))
    w.commit()
    w.add("lost", rows("lost", 3))
    w.commit()
    lost = [p for p in (tmp_path / outputs.JOURNAL).iterdir() if "lost" in p.read_text()]
    lost[0].unlink()
    assert len(list((tmp_path / "segments").iterdir())) == 2
    assert outputs.read_outputs(out, "segments").column("recording_id").to_pylist() == ["kept"] * 2
    assert outputs.completed_ids(out) == {"kept"}
    # the next run removes them before it starts: the folder holds committed rows only
    assert outputs.remove_uncommitted(out, outputs.read_journal(out)) == 2  # segments and summary
    assert len(pq.read_table(tmp_path / "segments")) == 2


def test_one_file_per_recording_runs_are_read_as_they_are(tmp_path):
    """Runs of earlier versions: <table>/<recording_id>.parquet, no journal."""
    for rec_id in ("a", "b"):
        for name, t in rows(rec_id, 2).items():
            (tmp_path / name).mkdir(exist_ok=True)
            pq.write_table(t, tmp_path / name / f"{rec_id}.parquet")
    pq.write_table(rows("c", 1)["summary"], tmp_path / "summary" / "c.parquet")
    (tmp_path / "masks").mkdir()
    pq.write_table(tables.MASK_SCHEMA.empty_table(), tmp_path / "masks" / "a.parquet")
    out = str(tmp_path)
    assert len(outputs.read_outputs(out, "segments")) == 4
    assert len(outputs.read_outputs(out, "summary")) == 3
    assert outputs.completed_ids(out) == {"a"}  # a masks (or errors) file marks a recording complete


def test_a_setting_added_since_a_run_and_left_off_is_no_difference():
    from raybird.io.runrecord import differences

    old = {"options": {"threshold": 0.5}}
    assert differences(old, {"options": {"threshold": 0.5, "class_map": False}}) == []
    assert differences(old, {"options": {"threshold": 0.5, "class_map": True}}) == ["options.class_map: None -> True"]
    assert differences(old, {"options": {"threshold": 0.6}}) == ["options.threshold: 0.5 -> 0.6"]
