"""Ingest: geometry of the rows, masks from labels, folder + tar + s3 through Ray Data,
corrupt inputs in the errors table, and input count = recordings + errors."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from raybird.dsp.spectrogram import PRESETS, SpecConfig, freq_to_rows, n_frames_for, time_to_frames
from raybird.io import label_files, labels, outputs, storage, tables
from raybird.pipelines import ingest
from raybird.synth import calls
from raybird.synth.generator import generate_archive

CFG = PRESETS["default"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    generate_archive(d, 6, seed=3, duration_s=(3.0, 8.0))
    return d


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".wav", ".flac"))


def test_rows_cover_recording_and_mask_matches_truth(archive):
    path = _audio_files(archive)[0]
    label = label_files.load_labels(str(path), [str(p) for p in archive.iterdir()], storage.read_bytes)
    table = ingest.recording_rows(str(path), str(path), CFG, "mix", label)
    info = sf.info(str(path))
    n_samples = int(round(info.frames * CFG.sample_rate / info.samplerate))
    total_frames = n_frames_for(n_samples, CFG)
    rows = table.to_pylist()
    # tiles start every tile_step frames and together cover every frame exactly
    assert [r["first_frame"] for r in rows] == [i * CFG.tile_step for i in range(len(rows))]
    assert rows[-1]["first_frame"] + rows[-1]["valid_frames"] == total_frames
    assert all(r["valid_frames"] == CFG.tile_frames for r in rows[:-1])
    assert (
        rows[0]["offset_s"] == 0.0 and rows[1]["offset_s"] == pytest.approx(CFG.tile_step * CFG.frame_s)
        if len(rows) > 1
        else True
    )
    # the stored mask is the truth mask of those frames, zero after the end
    truth = np.load(path.with_name(path.stem + ".truth.npz"))["mask"]
    for r in rows:
        spec, mask = ingest.decode_tile(r)
        assert spec.shape == mask.shape == (CFG.n_rows, CFG.tile_frames)
        v = r["valid_frames"]
        np.testing.assert_array_equal(mask[:, :v], truth[:, r["first_frame"] : r["first_frame"] + v])
        assert not mask[:, v:].any() and not spec[:, v:].any()
    assert {r["split"] for r in rows} == {ingest.split_of(str(path))}


def test_synthetic_truth_gives_each_pixel_its_call_kind(archive):
    """The generator's truth carries each pixel's kind of call (sweep, trill, ...): ingest keeps
    it as the classes, a class exactly where the mask is, each call's pixels mostly its own kind
    (calls may overlap: there the later one's)."""
    path = _audio_files(archive)[0]
    label = label_files.load_labels(str(path), [str(p) for p in archive.iterdir()], storage.read_bytes)
    boxes = labels.read_raven(path.with_name(path.stem + ".Table.1.selections.txt"))
    kinds = [b.label.split("-", 1)[1] for b in boxes]  # the generator labels a box "sp<species>-<kind>"
    assert list(label.class_names) == list(dict.fromkeys(kinds)) and set(kinds) <= set(calls.KINDS)
    rows = ingest.recording_rows(str(path), str(path), CFG, "mix", label).to_pylist()
    classes = np.concatenate([ingest.decode_classes(r)[0][:, : r["valid_frames"]] for r in rows], axis=1)
    mask = np.concatenate([ingest.decode_tile(r)[1][:, : r["valid_frames"]] for r in rows], axis=1)
    np.testing.assert_array_equal(classes > 0, mask > 0)
    assert all(ingest.decode_classes(r)[1] == list(label.class_names) for r in rows)
    own = 0
    for b, kind in zip(boxes, kinds):
        cols = time_to_frames(b.begin_s, b.end_s, CFG, 0, classes.shape[1])
        inside = classes[freq_to_rows(b.low_hz, b.high_hz, CFG), cols]
        values, counts = np.unique(inside[inside > 0], return_counts=True)
        own += label.class_names[values[np.argmax(counts)] - 1] == kind
    assert len(boxes) >= 3 and own >= 0.8 * len(boxes)


def test_split_is_stable_near_70_20_10_and_follows_folder_and_file_names():
    names = [f"site{i % 7}/rec_{i}.wav" for i in range(3000)]
    splits = [ingest.split_of(f"/data/{n}") for n in names]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.03)
    assert share["val"] == pytest.approx(0.2, abs=0.03)
    assert share["test"] == pytest.approx(0.1, abs=0.03)
    # the same recordings elsewhere, in a bucket, or as archive members: the same splits
    for where in ("s3://bucket/survey-2026/{}", "/mnt/copy/{}", "/data/sites.tar.gz::{}"):
        assert [ingest.split_of(where.format(n)) for n in names] == splits
    # the folder's name counts: recording 1 of one site is not recording 1 of every site
    assert len({ingest.split_of(f"/data/site{k}/rec_1.wav") for k in range(30)}) == 3


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Corrupt inputs and the stage their error row must name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "noise.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "text.flac").write_text("this is not audio\n" * 50)
    good = io.BytesIO()
    sf.write(good, np.zeros(22050, np.float32), 22050, format="WAV")
    (folder / "truncated.wav").write_bytes(good.getvalue()[:30])
    return {"empty.wav": "decode", "noise.wav": "decode", "text.flac": "decode", "truncated.wav": "decode"}


def _tar(src: Path, dst: Path, names: list[Path]) -> Path:
    with tarfile.open(dst, "w:gz") as tf:
        for p in names:
            tf.add(p, arcname=f"site_b/{p.name}")
    return dst


def _check_outputs(out: str, expect_recordings: int, expect_errors: dict[str, str]):
    tiles = outputs.read_outputs(out, "shards")
    errors = outputs.read_outputs(out, "errors")
    assert tiles.schema.equals(ingest.SHARD_SCHEMA, check_metadata=False)
    assert errors.schema.equals(tables.ERROR_SCHEMA, check_metadata=False)
    recs = set(tiles.column("recording_id").to_pylist())
    assert len(recs) == expect_recordings
    got = {Path(s.split("::")[-1]).name: st for s, st in zip(errors["source"].to_pylist(), errors["stage"].to_pylist())}
    assert got == expect_errors
    assert all(r for r in errors["reason"].to_pylist())
    # no recording both written and failed, none written twice
    assert not recs & set(errors.column("recording_id").to_pylist())
    keys = list(zip(tiles["recording_id"].to_pylist(), tiles["channel"].to_pylist(), tiles["tile_index"].to_pylist()))
    assert len(keys) == len(set(keys))
    assert all(m is not None for m in tiles["mask"].to_pylist())  # synthetic recordings are all labelled
    return tiles, errors


@pytest.mark.ray
def test_ray_ingest_folder_and_tar_with_corrupt_files(ray_session, archive, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(archive, inputs / "site_a")
    bad = _bad_inputs(inputs / "site_a")
    files = _audio_files(archive)
    side = [p for p in archive.iterdir() if p.suffix in (".txt", ".npz")]
    _tar(archive, tmp_path / "site_b.tar.gz", files[:3] + side)
    out = tmp_path / "out"
    summary = ingest.run([str(inputs), str(tmp_path / "site_b.tar.gz")], str(out))
    n_good = len(files) + 3
    tiles, errors = _check_outputs(str(out), n_good, bad)
    assert summary.recordings == n_good and summary.errors == len(bad)
    # inputs = recordings written + error rows
    assert n_good + len(bad) == summary.recordings + summary.errors
    # the same recording from the folder and from the tar yields identical tiles
    by_src = {}
    for r in tiles.select(["source", "tile_index", "spec", "mask"]).to_pylist():
        by_src[(Path(r["source"].split("::")[-1]).name, r["tile_index"], "::" in r["source"])] = (r["spec"], r["mask"])
    name = files[0].name
    assert by_src[(name, 0, True)] == by_src[(name, 0, False)]
    # the single-process path writes the same rows
    local = ingest.run_local([str(inputs), str(tmp_path / "site_b.tar.gz")], str(tmp_path / "out_local"))
    assert (local.recordings, local.tiles, local.errors) == (summary.recordings, summary.tiles, summary.errors)
    # re-running overwrites rather than duplicating, and splits do not move
    again = ingest.run([str(inputs), str(tmp_path / "site_b.tar.gz")], str(out))
    assert again.tiles == summary.tiles
    t2 = outputs.read_outputs(str(out), "shards", columns=["recording_id", "split"])
    assert dict(zip(t2["recording_id"].to_pylist(), t2["split"].to_pylist())) == dict(
        zip(tiles["recording_id"].to_pylist(), tiles["split"].to_pylist())
    )


@pytest.mark.ray
def test_ray_ingest_s3_in_and_out(ray_session, s3_bucket, archive, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(**storage.storage_options())
    for p in list(archive.iterdir())[:9]:
        fs.put(str(p), f"{s3_bucket}/raw/{p.name}")
    fs.pipe(f"{s3_bucket}/raw/broken.wav", b"RIFF\x00\x00")
    n_audio = sum(1 for p in list(archive.iterdir())[:9] if p.suffix in (".wav", ".flac"))
    out = f"s3://{s3_bucket}/ingested"
    summary = ingest.run([f"s3://{s3_bucket}/raw/"], out)
    assert summary.recordings == n_audio and summary.errors == 1
    tiles, errors = _check_outputs(out, n_audio, {"broken.wav": "decode"})
    assert all(s.startswith(f"s3://{s3_bucket}/raw/") for s in tiles["source"].to_pylist())
    assert fs.ls(f"{s3_bucket}/ingested/shards")
    # a local copy of raw/ ingests to the same splits: they hash folder and file names, not the store
    (tmp_path / "raw").mkdir()
    for p in list(archive.iterdir())[:9]:
        shutil.copy(p, tmp_path / "raw")
    ingest.run_local([str(tmp_path / "raw")], str(tmp_path / "local"))
    local = outputs.read_outputs(str(tmp_path / "local"), "shards", columns=["source", "split"])

    def split_by_name(t):
        return {Path(src).name: split for src, split in zip(t["source"].to_pylist(), t["split"].to_pylist())}

    assert split_by_name(local) == split_by_name(tiles) and len(split_by_name(tiles)) == n_audio


def test_time_only_labels_become_the_calls_pixels_or_full_columns(real_data, tmp_path):
    """A Bengalese finch recording with Audacity (time-only) syllable labels: by default each
    labelled column keeps only the pixels standing out from its noise floor (a call's shape, at
    least one pixel per column); ``time_labels="columns"`` keeps the full-band columns."""
    src, folder = real_data / "bengalese_finch", tmp_path / "in"
    folder.mkdir()
    for f in ("gy6or6_baseline_230312_0808.138.wav", "gy6or6_baseline_230312_0808.138.txt"):
        shutil.copy(src / f, folder / f)
    masks = {}
    for mode in ("energy", "columns"):
        ingest.run_local([str(folder)], str(tmp_path / mode), time_labels=mode)
        rows = outputs.read_outputs(str(tmp_path / mode), "shards").to_pylist()
        masks[mode] = np.concatenate([ingest.decode_tile(r)[1][:, : r["valid_frames"]] for r in rows], axis=1)
    columns, energy = masks["columns"].astype(bool), masks["energy"].astype(bool)
    labelled = columns.any(axis=0)
    assert labelled.sum() > 500 and columns[:, labelled].all()  # full band wherever a syllable is
    assert not (energy & ~columns).any()  # never outside a labelled column
    assert (energy.any(axis=0) == labelled).all()  # every labelled column keeps a pixel
    assert 0.05 < energy[:, labelled].mean() < 0.5  # ... but not the whole band
    record = json.loads((tmp_path / "columns" / "run.json").read_text())  # what made these shards
    assert (record["job"], record["settings"]["time_labels"], record["runs"][0]["counts"]["recordings"]) == (
        "ingest",
        "columns",
        1,
    )
    with pytest.raises(ValueError, match="time_labels"):
        ingest.run_local([str(folder)], str(tmp_path / "bad"), time_labels="boxes")


def test_label_text_becomes_each_pixels_class(real_data, tmp_path):
    """Bengalese finch syllables labelled by type (Audacity): every masked pixel carries its
    syllable's class, the background none; the classes are named in order of first label and
    counted in the summary and run.json. A recording whose labels have no text keeps binary
    masks only (no class map)."""
    src, folder = real_data / "bengalese_finch", tmp_path / "in"
    folder.mkdir()
    stem = "gy6or6_baseline_230312_0808.138"
    shutil.copy(src / f"{stem}.wav", folder / f"{stem}.wav")
    lines = (src / f"{stem}.txt").read_text().splitlines()
    (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    shutil.copy(src / f"{stem}.wav", folder / "plain.wav")
    (folder / "plain.txt").write_text("".join(f"{ln.split(chr(9))[0]}\t{ln.split(chr(9))[1]}\n" for ln in lines))
    summary = ingest.run_local([str(folder)], str(tmp_path / "out"))
    names = list(dict.fromkeys(ln.split("\t")[2] for ln in lines))
    assert summary.classes == dict.fromkeys(names, 1) and len(names) >= 8
    assert f"{len(names)} label classes" in str(summary)
    rows = outputs.read_outputs(str(tmp_path / "out"), "shards").to_pylist()
    labelled = [r for r in rows if r["source"].endswith(f"{stem}.wav")]
    assert all(ingest.decode_classes(r) == (None, []) for r in rows if r["source"].endswith("plain.wav"))
    found = set()
    for r in labelled:
        mask = ingest.decode_tile(r)[1]
        classes, row_names = ingest.decode_classes(r)
        assert row_names == names
        np.testing.assert_array_equal(classes > 0, mask > 0)  # a class exactly where the mask is
        found |= {names[k - 1] for k in np.unique(classes[classes > 0])}
    assert found == set(names)
    # each syllable's pixels carry its own class: the first "i" and the first "a" as labelled
    cfg = SpecConfig.from_json(labelled[0]["spec_config"])
    for label in ("i", "a"):
        t0, t1 = next((float(a), float(b)) for a, b, c in (ln.split("\t") for ln in lines) if c == label)
        frame = int(round(((t0 + t1) / 2) * cfg.sample_rate / cfg.hop_length))
        r = next(r for r in labelled if r["first_frame"] <= frame < r["first_frame"] + r["valid_frames"])
        column = ingest.decode_classes(r)[0][:, frame - r["first_frame"]]
        assert set(np.unique(column[column > 0])) == {names.index(label) + 1}
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["runs"][0]["counts"]["classes"] == summary.classes


def test_label_column_names_the_raven_column_of_the_classes(real_data, tmp_path, capsys):
    """``--label-column``: the classes come from the Raven column named; a table without it is
    that recording's error row naming the columns it has, and the job goes on."""
    from raybird.cli import main

    src, folder = real_data / "bengalese_finch", tmp_path / "in"
    folder.mkdir()
    stem = "gy6or6_baseline_230312_0808.138"
    for name in ("a", "b"):
        shutil.copy(src / f"{stem}.wav", folder / f"{name}.wav")
    header = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation"
    rows = [f"{i + 1}\tSpectrogram 1\t1\t{1.0 + i}\t{1.2 + i}\t1000\t6000\tbird" for i in range(4)]
    (folder / "b.Table.1.selections.txt").write_text("\n".join([header, *rows]) + "\n")
    (folder / "a.Table.1.selections.txt").write_text(
        "\n".join([header + "\tCall Type", *(f"{r}\t{'trill' if i % 2 else 'chip'}" for i, r in enumerate(rows))])
        + "\n"
    )
    out = tmp_path / "out"
    assert main(["ingest", str(folder), "--out", str(out), "--local", "--label-column", "Call Type"]) == 0
    assert "2 label classes: chip (1), trill (1)" in capsys.readouterr().out
    shards = outputs.read_outputs(str(out), "shards").to_pylist()
    assert {tuple(r["class_names"]) for r in shards} == {("chip", "trill")}
    errors = outputs.read_outputs(str(out), "errors").to_pylist()
    assert [(Path(e["source"]).name, e["stage"]) for e in errors] == [("b.wav", "labels")]
    assert "no label column 'Call Type'" in errors[0]["reason"] and "Annotation" in errors[0]["reason"]
    assert json.loads((out / "run.json").read_text())["settings"]["label_column"] == "Call Type"
