"""The segmentation job end to end: a tiny U-Net trained here in seconds on synthetic calls,
run through Ray Data (and without Ray) over local folders, archives and S3."""

import csv
import json
import os
import shutil
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from PIL import Image

from raybird.cli import main
from raybird.dsp.spectrogram import SpecConfig, iter_tiles, magnitude, n_frames_for
from raybird.evaluation.classes import score_run as score_classes
from raybird.evaluation.field_scores import match_events
from raybird.inference import postprocess
from raybird.inference.recording import SegmentOptions
from raybird.io import audio, labels, outputs, storage, tables
from raybird.models import checkpoint
from raybird.models.networks import ModelConfig
from raybird.pipelines import segment
from raybird.pipelines.listing import Listing
from raybird.synth import generator as synth
from raybird.synth.calls import Call, render_call
from raybird.training import engine

# A small grid keeps training and inference fast: 16 kHz, 8 ms hop, 128 rows, 128-frame tiles.
CFG = SpecConfig(sample_rate=16000, n_fft=256, win_length=256, hop_length=128, tile_frames=128, tile_overlap=32)
OPTIONS = SegmentOptions(formats=("raven", "audacity", "csv"), denoise=True, probabilities=True)


def sweep(start: float, dur: float, fa: float, fb: float, amp: float) -> Call:
    p = dict(
        contour="lin",
        fa=fa,
        fb=fb,
        dev=0.0,
        fm=0.0,
        phi=0.0,
        drift=0.0,
        bend=0.0,
        shape=1.0,
        note_rate=0.0,
        note_duty=0.0,
        am_rate=0.0,
        am_depth=0.0,
        env="tukey",
        env_p=0.3,
        decay=1.0,
        harm=(1.0,),
        harm_phase=(0.0,),
    )
    return Call("sweep", start, dur, amp, p, min(fa, fb), max(fa, fb), (1.0,), 0, "bird")


def recording(rng, duration: float, calls=None, noise: float = 0.01):
    """White noise plus pure FM sweeps (one connected region each); returns the audio at
    CFG's rate, the truth mask (pixels within TRUTH_DB of each call's peak) and one truth box per
    call with edges on pixel edges."""
    sr = CFG.sample_rate
    n = int(duration * sr)
    x = (noise * rng.standard_normal(n)).astype(np.float32)
    if calls is None:
        calls, t = [], rng.uniform(0.1, 0.5)
        while t < duration - 0.6:
            dur = rng.uniform(0.08, 0.5)
            fa = rng.uniform(1500, 6500)
            calls.append(
                sweep(t, dur, fa, float(np.clip(fa * 2 ** rng.uniform(-0.7, 0.7), 1200, 7500)), rng.uniform(0.1, 0.3))
            )
            t += dur + rng.uniform(0.2, 1.0)
    nf = n_frames_for(n, CFG)
    mask = np.zeros((CFG.n_rows, nf), np.uint8)
    boxes = []
    for c in calls:
        y = render_call(c, sr)
        a, b = c.span(sr)
        x[a:b] += y
        mag, first = synth.call_magnitude(y, a, CFG, nf)
        m = synth.core_of(mag)  # the call within TRUTH_DB of its peak
        mask[:, first : first + m.shape[1]] |= m
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0)) + first
        boxes.append(postprocess.box_of(cols[0], cols[-1], rows[0], rows[-1], CFG, n / sr))
    return x, mask, boxes


def fit_tiny(config: ModelConfig, spec: list, target: list, valid: list, steps: int):
    """A model of ``config`` (seed 0) after ``steps`` Adam steps (3e-3, batches of 8 drawn at
    random, one thread) on the tiles."""
    spec, target, valid = np.stack(spec), np.stack(target), np.array(valid)
    torch.manual_seed(0)
    model = config.build()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = engine.pick_device("cpu")
    settings.prepare_model(model)
    opt, loss = engine.make_optimizer(model, lr=3e-3), engine.make_loss("ce+dice")
    pick = np.random.default_rng(1)
    for _ in range(steps):
        i = pick.choice(len(spec), 8, replace=False)
        engine.train_step(model, {"spec": spec[i], "mask": target[i], "valid_frames": valid[i]}, opt, loss, settings)
    torch.set_num_threads(threads)
    return model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    """A width-4, depth-3 U-Net trained for 100 steps (a few seconds) on 12 six-second recordings."""
    rng = np.random.default_rng(0)
    spec, target, valid = [], [], []
    for _ in range(12):
        x, mask, _ = recording(rng, 6.0)
        for tile in iter_tiles([x[None]], CFG):
            m = np.zeros((CFG.n_rows, CFG.tile_frames), np.uint8)
            got = mask[:, tile.first_frame : tile.first_frame + tile.valid_frames]
            m[:, : got.shape[1]] = got
            spec.append(tile.spec[0]), target.append(m), valid.append(tile.valid_frames)
    model = fit_tiny(ModelConfig(width=4, depth=3, dropout=0.0), spec, target, valid, steps=100)
    return str(
        checkpoint.save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", model, spec_config_json=CFG.to_json())
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict:
    """Six recordings (WAV and FLAC, one with a call across a tile border), two broken files
    and a tar holding one more recording and a broken member."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(7)
    truth = {}
    for i in range(6):
        calls = [sweep(0.72, 0.3, 3000.0, 4500.0, 0.2)] if i == 0 else None  # crosses frames 96..128
        x, mask, boxes = recording(rng, 6.0 if i else 2.0, calls)
        path = root / f"rec{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, x, CFG.sample_rate, subtype="PCM_16")
        truth[str(path)] = dict(boxes=boxes, mask=mask, n=len(x))
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    (root / "empty.flac").write_bytes(b"")
    x, mask, boxes = recording(rng, 4.0)
    member = root / "member.wav"
    sf.write(member, x, CFG.sample_rate, subtype="PCM_16")
    (root / "broken.wav").write_bytes(b"not audio at all")
    tar_dir = tmp_path_factory.mktemp("tar")
    with tarfile.open(tar_dir / "more.tar", "w") as tf:
        tf.add(member, "site/member.wav")
        tf.add(root / "broken.wav", "site/broken.wav")
    member.unlink()
    (root / "broken.wav").unlink()
    truth[f"{tar_dir / 'more.tar'}::site/member.wav"] = dict(boxes=boxes, mask=mask, n=len(x))
    return dict(
        folder=str(root),
        tar=str(tar_dir / "more.tar"),
        truth=truth,
        broken=[str(root / "corrupt.wav"), str(root / "empty.flac"), f"{tar_dir / 'more.tar'}::site/broken.wav"],
    )


@pytest.fixture(scope="module")
def full_run(ray_session, model_path, archive, tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("out"))
    summary = segment.run([archive["folder"], archive["tar"]], out, model_path, OPTIONS, actors=2, combine=True)
    return dict(out=out, summary=summary)


def output_names(archive: dict) -> dict:
    """source -> the name of its per-recording files: its path under the parent folder of the
    input it was found in, suffix dropped (archive members under the archive's name)."""
    folder = os.path.basename(archive["folder"])
    names = {s: f"{folder}/{Path(s).stem}" for s in archive["truth"] if "::" not in s}
    names[f"{archive['tar']}::site/member.wav"] = "more/site/member"
    return names


def read_tables(out: str) -> dict:
    sort = dict(
        segments=["recording_id", "channel", "segment_id"],
        masks=["recording_id", "channel"],
        summary=["recording_id", "channel"],
        errors=["recording_id"],
    )
    return {
        name: outputs.read_outputs(out, name).sort_by([(k, "ascending") for k in keys]) for name, keys in sort.items()
    }


# ---- end to end ---------------------------------------------------------------------------------------
@pytest.mark.ray
def test_segments_match_truth_and_tables_follow_the_contract(full_run, archive, model_path):
    t = read_tables(full_run["out"])
    assert pq.read_schema(next(Path(full_run["out"], "segments").glob("*.parquet"))) == tables.SEGMENT_SCHEMA
    assert t["segments"].schema == tables.SEGMENT_SCHEMA
    segs = t["segments"].to_pylist()
    tp = n_pred = n_ref = 0
    for source, truth in archive["truth"].items():
        pred = [(s["start_s"], s["end_s"], s["low_hz"], s["high_hz"]) for s in segs if s["source"] == source]
        m = match_events(pred, truth["boxes"])
        tp, n_pred, n_ref = tp + m["tp"], n_pred + len(pred), n_ref + len(truth["boxes"])
    precision, recall = tp / n_pred, tp / n_ref
    assert n_ref >= 35 and 2 * precision * recall / (precision + recall) >= 0.9, (tp, n_pred, n_ref)

    # the call crossing the tile border is one segment, its box within a pixel of the truth
    first = [s for s in segs if s["source"].endswith("rec0.wav")]
    assert len(first) == 1
    box = np.array([first[0][k] for k in ("start_s", "end_s", "low_hz", "high_hz")])
    want = np.array(archive["truth"][archive["folder"] + "/rec0.wav"]["boxes"][0])
    np.testing.assert_allclose(box[:2], want[:2], atol=CFG.frame_s + 1e-9)
    np.testing.assert_allclose(box[2:], want[2:], atol=CFG.bin_hz + 1e-3)

    for rec in {s["recording_id"] for s in segs}:
        mine = [s for s in segs if s["recording_id"] == rec]
        assert [s["segment_id"] for s in mine] == list(range(len(mine)))
        assert [s["start_s"] for s in mine] == sorted(s["start_s"] for s in mine)
    assert {s["model_id"] for s in segs} == {checkpoint.read_checkpoint(model_path).model_id}


@pytest.mark.ray
def test_every_recording_lands_in_masks_or_errors(full_run, archive):
    t = read_tables(full_run["out"])
    masks, errors, summary = t["masks"].to_pylist(), t["errors"].to_pylist(), t["summary"].to_pylist()
    assert len(masks) + len(errors) == len(archive["truth"]) + len(archive["broken"])
    assert sorted(m["source"] for m in masks) == sorted(archive["truth"])
    assert sorted(e["source"] for e in errors) == sorted(archive["broken"])
    assert {e["stage"] for e in errors} == {"decode"} and all(e["reason"] for e in errors)
    assert sorted(s["recording_id"] for s in summary) == sorted(m["recording_id"] for m in masks)
    assert full_run["summary"].recordings == len(masks) and full_run["summary"].errors == len(errors)
    n_segments = {}
    for s in t["segments"].to_pylist():
        n_segments[s["recording_id"]] = n_segments.get(s["recording_id"], 0) + 1
    for row, m in zip(summary, masks):
        truth = archive["truth"][m["source"]]
        assert m["n_frames"] == n_frames_for(truth["n"], CFG) and m["n_rows"] == CFG.n_rows
        assert row["duration_s"] == truth["n"] / CFG.sample_rate
        assert row["n_segments"] == n_segments.get(row["recording_id"], 0)
        assert 0 < row["bird_seconds"] < row["duration_s"]
        mask, prob = tables.read_mask(m), tables.read_probability(m)
        np.testing.assert_array_equal(mask, prob >= 0.5)
        pixel_iou = (mask & truth["mask"]).sum() / (mask | truth["mask"]).sum()
        assert pixel_iou > 0.5
        assert SpecConfig.from_json(m["spec_config"]) == CFG and m["hop_s"] == CFG.frame_s
        assert m["row0_hz"] + (CFG.n_rows - 1) * m["row_step_hz"] == CFG.sample_rate / 2


@pytest.mark.ray
def test_tables_for_other_tools_read_back_as_the_segments(full_run, archive):
    """Raven (through our reader and OpenSoundscape's Annotation convention), Audacity and CSV,
    one per recording under its input's folder structure, and the run's combined tables."""
    out = Path(full_run["out"])
    segs = read_tables(full_run["out"])["segments"].to_pylist()
    durations = {r["source"]: r["duration_s"] for r in read_tables(full_run["out"])["summary"].to_pylist()}
    for source, name in output_names(archive).items():
        mine = sorted((s for s in segs if s["source"] == source), key=lambda s: (s["start_s"], s["end_s"]))
        assert mine
        raven = out / "raven" / f"{name}.Table.1.selections.txt"
        boxes = labels.read_raven(raven)
        assert [(b.begin_s, b.end_s, b.low_hz, b.high_hz, b.channel, b.label) for b in boxes] == [
            (s["start_s"], s["end_s"], s["low_hz"], s["high_hz"], s["channel"], "bird") for s in mine
        ]
        with open(raven) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        assert [r["Annotation"] for r in rows] == ["bird"] * len(mine)
        assert [float(r["Score"]) for r in rows] == pytest.approx([s["score"] for s in mine])
        assert [int(r["Segment ID"]) for r in rows] == [s["segment_id"] for s in mine]
        track = labels.read_audacity(out / "audacity" / f"{name}.txt")
        assert [(b.begin_s, b.end_s, b.low_hz, b.high_hz, b.label) for b in track] == [
            (s["start_s"], s["end_s"], s["low_hz"], s["high_hz"], f"bird {s['score']:.3f}") for s in mine
        ]
        table = pacsv.read_csv(out / "csv" / f"{name}.csv").to_pylist()
        assert [(r["segment_id"], r["start_s"], r["label"]) for r in table] == [
            (s["segment_id"], s["start_s"], "bird") for s in segs if s["source"] == source
        ]
    # combined: every segment once, in Raven's file sequence (sources in order, one after another)
    with open(out / "raven" / "combined.selections.txt") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == len(segs) == len(pacsv.read_csv(out / "csv" / "combined.csv"))
    starts, t = {}, 0.0
    for source in sorted(durations):
        starts[source], t = t, t + durations[source]
    by_key = {(s["source"], s["segment_id"]): s for s in segs}
    for r in rows:
        s = by_key[(r["Begin Path"], int(r["Segment ID"]))]
        assert float(r["File Offset (s)"]) == s["start_s"]
        assert float(r["Begin Time (s)"]) == pytest.approx(starts[s["source"]] + s["start_s"], abs=1e-9)


@pytest.mark.ray
def test_denoised_audio_keeps_the_calls_and_drops_the_noise(full_run, archive):
    masks = {m["source"]: m for m in read_tables(full_run["out"])["masks"].to_pylist()}
    names = output_names(archive)
    for source, truth in archive["truth"].items():
        y, sr = sf.read(Path(full_run["out"], "denoised", names[source] + ".wav"), dtype="float32")
        assert sr == CFG.sample_rate and y.shape == (truth["n"],)
        x = audio.decode(storage.source_bytes(source), CFG.sample_rate)[0]
        mask = tables.read_mask(masks[source]).astype(bool)
        e_in, e_out = magnitude(x, CFG) ** 2, magnitude(y, CFG) ** 2
        assert e_out[~mask].sum() < 0.05 * e_in[~mask].sum()
        assert e_out[mask].sum() > 0.5 * e_in[mask].sum()


@pytest.mark.ray
def test_interrupted_run_resumes_to_the_same_tables(full_run, archive, model_path, tmp_path):
    out = str(tmp_path / "out")
    first = sorted(archive["truth"])[:2] + archive["broken"][:1]  # the "interrupted" run got this far
    # writes the same rows as Ray (see below), a part file per recording
    s1 = segment.run_local(first, out, model_path, OPTIONS, threads=1, files=segment.FileLimits(recordings=1))
    assert (s1.recordings, s1.errors) == (2, 1)
    # a half-written file from a killed task, and a writer killed between a part's files and
    # its journal entry: those files are not read, and their recording is done again
    Path(out, "masks", ".abc.parquet.1234.tmp").write_bytes(b"PAR1 half")
    victim = storage.recording_id(first[0])
    journal = Path(out, outputs.JOURNAL)
    entries = [p for p in journal.iterdir() if victim in json.loads(p.read_text())["recordings"]]
    assert len(entries) == 1 and len(list(journal.iterdir())) == 3
    entries[0].unlink()
    assert victim not in outputs.completed_ids(out) and len(outputs.read_outputs(out, "masks")) == 1
    s2 = segment.run([archive["folder"], archive["tar"]], out, model_path, OPTIONS)
    assert s2.skipped == 2 and s2.recordings == len(archive["truth"]) - 1
    want, got = read_tables(full_run["out"]), read_tables(out)
    for name in want:
        assert got[name].equals(want[name]), name
    s3 = segment.run([archive["folder"], archive["tar"]], out, model_path, OPTIONS)
    assert (s3.recordings, s3.errors, s3.skipped) == (0, 0, 9)  # the tar too: the journal says it is finished
    assert read_tables(out)["segments"].equals(want["segments"])


@pytest.mark.ray
def test_runs_of_earlier_versions_read_and_resume(full_run, archive, model_path, tmp_path):
    """A run written one Parquet file per recording per table (raybird before part files): read
    as it is, and a resume skips its recordings, does the one whose files were lost and adds it
    as a part file; the tables equal a run of this version."""
    out = tmp_path / "old"
    want = read_tables(full_run["out"])
    for name, t in want.items():
        (out / name).mkdir(parents=True)
        for rec_id in set(t.column("recording_id").to_pylist()):
            pq.write_table(t.filter(pc.field("recording_id") == rec_id), out / name / f"{rec_id}.parquet")
    shutil.copy(Path(full_run["out"], "run.json"), out / "run.json")
    got = read_tables(str(out))
    for name in want:
        assert got[name].equals(want[name]), name
    assert outputs.completed_ids(str(out)) == set(want["masks"]["recording_id"].to_pylist()) | set(
        want["errors"]["recording_id"].to_pylist()
    )
    victim = want["masks"]["recording_id"][0].as_py()
    for name in ("masks", "segments", "summary"):
        (out / name / f"{victim}.parquet").unlink()
    s = segment.run([archive["folder"], archive["tar"]], str(out), model_path, OPTIONS)
    assert s.recordings == 1 and s.errors == 0
    assert [p.name for p in (out / "masks").glob("part-*.parquet")] and victim in outputs.read_journal(str(out)).ids
    got = read_tables(str(out))
    for name in want:
        assert got[name].equals(want[name]), name


@pytest.mark.ray
def test_local_run_writes_the_same_tables_as_ray(full_run, archive, model_path, tmp_path, capsys):
    out = str(tmp_path / "local")
    # one torch thread, as the actors: the same arithmetic, so the same bits
    assert (
        main(
            [
                "segment",
                archive["folder"],
                archive["tar"],
                "--out",
                out,
                "--model",
                model_path,
                "--local",
                "--actor-cpus",
                "1",
                "--format",
                "raven,audacity,csv",
                "--denoise",
                "--probabilities",
            ]
        )
        == 0
    )
    assert "7 recordings" in capsys.readouterr().out
    want, got = read_tables(full_run["out"]), read_tables(out)
    for name in want:
        assert got[name].equals(want[name]), name
    for fmt in ("raven", "audacity", "csv", "denoised"):
        files = [
            sorted(p.relative_to(o) for p in Path(o, fmt).rglob("*") if "combined" not in p.name)
            for o in (out, full_run["out"])
        ]
        assert files[0] == files[1] and len(files[0]) >= 7, fmt


@pytest.mark.ray
def test_a_large_listing_streams_into_the_work(full_run, archive, model_path, tmp_path):
    """Past ``stream_after`` units of one input, the rest is segmented while it is listed: by
    the Ray job through a queue into its actors, by --local one unit at a time. The tables are
    those of the run planned whole; a re-run skips every unit."""
    manifest = tmp_path / "all.manifest"
    files = sorted(s for s in archive["truth"] if "::" not in s) + archive["broken"][:2]
    manifest.write_text("\n".join([*files, archive["tar"]]))
    assert Listing([str(manifest)], str(tmp_path / "plan"), stream_after=2).streams
    want = read_tables(full_run["out"])
    for name, run in (("ray", segment.run), ("local", partial(segment.run_local, threads=1))):
        out = str(tmp_path / name)
        s = run([str(manifest)], out, model_path, OPTIONS, stream_after=2)
        assert (s.inputs, s.recordings, s.errors, s.skipped) == (9, 7, 3, 0), name
        got = read_tables(out)
        for table in want:
            assert got[table].equals(want[table]), (name, table)
        s = run([str(manifest)], out, model_path, OPTIONS, stream_after=2)
        assert (s.inputs, s.recordings, s.errors, s.skipped) == (9, 0, 0, 9), name


@pytest.mark.ray
def test_thirty_minute_recording_streams_and_the_border_call_is_one_segment(ray_session, model_path, tmp_path):
    rng = np.random.default_rng(11)
    seam = 1500 * CFG.tile_step + CFG.tile_overlap // 2  # first frame taken from tile 1500
    t_seam = seam * CFG.frame_s
    calls = [
        sweep(95.0, 0.3, 2500.0, 3500.0, 0.2),
        sweep(t_seam - 0.2, 0.4, 5000.0, 4000.0, 0.2),
        sweep(1700.0, 0.25, 2000.0, 2600.0, 0.2),
    ]
    x, mask, boxes = recording(rng, 1800.0, calls)
    path = tmp_path / "long.flac"
    sf.write(path, x, CFG.sample_rate, subtype="PCM_16")
    del x, mask
    out = str(tmp_path / "out")
    summary = segment.run([str(path)], out, model_path, SegmentOptions(), actors=2, batch_size=32)
    assert summary.recordings == 1
    segs = outputs.read_outputs(out, "segments").to_pylist()
    across = [s for s in segs if s["start_s"] < t_seam < s["end_s"]]
    assert len(across) == 1
    m = match_events([(s["start_s"], s["end_s"], s["low_hz"], s["high_hz"]) for s in segs], boxes)
    assert m["tp"] == 3 and (segs.index(across[0]), 1) in m["pairs"]
    assert len(segs) <= 4  # at most one false alarm in 30 minutes of noise
    masks = outputs.read_outputs(out, "masks").to_pylist()
    assert masks[0]["n_frames"] == n_frames_for(1800 * CFG.sample_rate, CFG)


@pytest.mark.ray
def test_s3_in_and_out(ray_session, model_path, archive, s3_bucket, tmp_path):
    fs, _ = storage.filesystem("s3://")
    sources = sorted(archive["truth"])[:2] + archive["broken"][:1]
    for p in sources:
        fs.put_file(p, f"{s3_bucket}/in/{os.path.basename(p)}")
    out = f"s3://{s3_bucket}/out"
    opts = SegmentOptions(formats=("raven",), denoise=True)
    summary = segment.run([f"s3://{s3_bucket}/in/"], out, model_path, opts)
    assert (summary.recordings, summary.errors) == (2, 1)
    segs = outputs.read_outputs(out, "segments").to_pylist()
    assert {s["source"] for s in segs} == {f"s3://{s3_bucket}/in/{os.path.basename(p)}" for p in sources[:2]}
    local = segment.run_local(sources, str(tmp_path), model_path, opts, threads=1)
    assert local.segments == summary.segments == len(segs)
    src0, src1 = (f"s3://{s3_bucket}/in/{os.path.basename(p)}" for p in sources[:2])
    assert fs.exists(f"{s3_bucket}/out/raven/in/{Path(src0).stem}.Table.1.selections.txt")
    y, sr = sf.read(fs.open(f"{s3_bucket}/out/denoised/in/{Path(src1).stem}.wav", "rb"))
    assert len(y) == archive["truth"][sources[1]]["n"]
    again = segment.run([f"s3://{s3_bucket}/in/"], out, model_path, opts)
    assert (again.recordings, again.errors, again.skipped) == (0, 0, 3)
    assert len(outputs.read_outputs(out, "segments")) == len(segs)


# ---- command line -------------------------------------------------------------------------------------
def test_cli_merge_gap_makes_a_song_one_segment(model_path, tmp_path):
    """Three notes 0.25 s apart, then a lone call 1.5 s later: four segments, or with
    ``--merge-gap 0.4`` the song and the lone call."""
    notes = [sweep(t, 0.15, 3000.0, 4000.0, 0.2) for t in (0.5, 0.9, 1.3)]
    x, _, boxes = recording(np.random.default_rng(5), 4.0, notes + [sweep(2.95, 0.2, 3000.0, 4000.0, 0.2)])
    path = tmp_path / "song.wav"
    sf.write(path, x, CFG.sample_rate)
    found = {}
    for flags in ([], ["--merge-gap", "0.4"]):
        out = str(tmp_path / f"out{len(flags)}")
        assert main(["segment", str(path), "--out", out, "--model", model_path, "--local", *flags]) == 0
        found[len(flags)] = outputs.read_outputs(out, "segments").sort_by("start_s").to_pylist()
    assert len(found[0]) == 4
    assert match_events([(s["start_s"], s["end_s"], s["low_hz"], s["high_hz"]) for s in found[0]], boxes)["tp"] == 4
    song, lone = found[2]
    assert song["start_s"] == found[0][0]["start_s"] and song["end_s"] == found[0][2]["end_s"]
    assert (lone["start_s"], lone["end_s"]) == (found[0][3]["start_s"], found[0][3]["end_s"])


def test_syllables_touching_in_the_mask_are_cut_at_their_gap(model_path, tmp_path):
    """Two syllables 4 ms apart, under the 16-ms window: the smeared gap joins them in the mask.
    By default (``--split-depth 25``) the segment job cuts the region where its loudest pixel falls
    at the gap and finds each syllable; ``--split-depth off`` gives one segment; the mask is the
    same either way."""
    gap_start, gap_end = 0.58, 0.584
    notes = [sweep(0.5, gap_start - 0.5, 3000.0, 3600.0, 0.2), sweep(gap_end, 0.08, 3000.0, 3600.0, 0.2)]
    x, _, boxes = recording(np.random.default_rng(5), 1.5, notes)
    path = tmp_path / "syllables.wav"
    sf.write(path, x, CFG.sample_rate)
    found, masks = {}, {}
    for flags in ([], ["--split-depth", "off"]):
        out = str(tmp_path / f"out{len(flags)}")
        assert (
            main(["segment", str(path), "--out", out, "--model", model_path, "--local", "--edges", "off", *flags]) == 0
        )  # edges on the mask's frames
        found[len(flags)] = outputs.read_outputs(out, "segments").sort_by("start_s").to_pylist()
        masks[len(flags)] = tables.read_mask(outputs.read_outputs(out, "masks").to_pylist()[0])
    [whole] = found[2]
    first, second = found[0]
    assert match_events([(s["start_s"], s["end_s"], s["low_hz"], s["high_hz"]) for s in found[0]], boxes)["tp"] == 2
    # the cut frame is the gap: it belongs to neither syllable
    assert first["start_s"] == whole["start_s"] and second["end_s"] == whole["end_s"]
    assert second["start_s"] - first["end_s"] == pytest.approx(CFG.frame_s)
    assert first["end_s"] < gap_end + CFG.frame_s and second["start_s"] > gap_start - CFG.frame_s
    np.testing.assert_array_equal(masks[0], masks[2])


def test_nothing_is_found_in_silence(real_data, tmp_path):
    """With the shipped model (which, before silence was handled, found 231 "birds" in 10 minutes
    of zeros): an all-zero file, a constant (DC) file and a real field survey with a 10-s zero-filled
    dropout give no segment in silence; the survey's calls outside the dropout are still found."""
    survey, sr = sf.read(real_data / "monitor_survey" / "survey.flac", dtype="float32")
    dropout = survey.copy()
    dropout[8 * sr : 18 * sr] = 0
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "zeros.flac", np.zeros(60 * 22050, np.int16), 22050)
    sf.write(folder / "dc.wav", np.full(20 * 22050, 0.3, np.float32), 22050, subtype="FLOAT")
    sf.write(folder / "survey.flac", survey, sr)
    sf.write(folder / "dropout.flac", dropout, sr)
    out = str(tmp_path / "out")
    summary = segment.run_local([str(folder)], out, threads=2)
    assert (summary.recordings, summary.errors) == (4, 0)
    rows = outputs.read_outputs(out, "segments").to_pylist()
    by_file = {
        name: [(r["start_s"], r["end_s"]) for r in rows if r["source"].endswith(name)]
        for name in ("zeros.flac", "dc.wav", "survey.flac", "dropout.flac")
    }
    assert by_file["zeros.flac"] == [] and by_file["dc.wav"] == []
    assert not [s for s in by_file["dropout.flac"] if s[1] > 8.0 + 0.02 and s[0] < 18.0 - 0.02]
    # the calls clear of the dropout (and of its edges) are found as without it
    clear = [s for s in by_file["survey.flac"] if s[1] < 7.5 or s[0] > 18.5]
    assert len(clear) >= 20
    found = [any(abs(a - c) < 0.02 and abs(b - d) < 0.02 for c, d in by_file["dropout.flac"]) for a, b in clear]
    assert np.mean(found) >= 0.9
    masks = {r["source"].rsplit("/", 1)[1]: tables.read_mask(r) for r in outputs.read_outputs(out, "masks").to_pylist()}
    assert not masks["zeros.flac"].any()
    assert not masks["dc.wav"][:, 4:-4].any()  # only the step into the zero padding past the end may show


def test_a_rerun_with_other_settings_is_refused_unless_it_overwrites(model_path, archive, tmp_path, capsys):
    """OUT/run.json records the settings and each run; resuming with the same settings appends a
    run and skips everything; another --threshold is refused before any work (exit 2, one line
    naming the change), and with --overwrite everything is segmented again with the new one."""
    out = str(tmp_path / "out")
    args = ["segment", archive["folder"], "--out", out, "--model", model_path, "--local"]
    assert main(args) == 0
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]  # the progress bar's last state
    assert bar.startswith("segment: 100%") and "8/8" in bar and "rec/s" in bar and "h audio" in bar, bar
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["job"] == "segment" and record["settings"]["options"]["threshold"] == 0.5
    (first,) = record["runs"]
    assert first["counts"]["recordings"] == 6 and first["finished"] >= first["started"]
    assert first["versions"]["torch"] == torch.__version__ and first["run"]["ray"] is False
    assert main(args) == 0 and "8 already complete, skipped" in capsys.readouterr().out  # 2 are errors
    assert len(json.loads((tmp_path / "out" / "run.json").read_text())["runs"]) == 2

    before = outputs.read_outputs(out, "masks").sort_by("recording_id")
    assert main(args + ["--threshold", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "options.threshold: 0.5 -> 0.9" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert outputs.read_outputs(out, "masks").sort_by("recording_id").equals(before)  # nothing touched

    assert main(args + ["--threshold", "0.9", "--overwrite"]) == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["settings"]["options"]["threshold"] == 0.9 and len(record["runs"]) == 1
    assert (record["runs"][0]["counts"]["recordings"], record["runs"][0]["counts"]["skipped"]) == (6, 0)
    assert outputs.read_outputs(out, "masks").column("threshold").to_pylist() == [pytest.approx(0.9)] * 6


def test_cli_reports_a_missing_model(tmp_path, capsys):
    assert main(["segment", str(tmp_path), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "no.pt")]) == 2
    assert "model checkpoint not found" in capsys.readouterr().out


@pytest.mark.ray
def test_cli_plot_draws_prediction_and_reference(full_run, archive, tmp_path):
    source = archive["folder"] + "/rec1.flac"
    truth = tmp_path / "rec1.Table.1.selections.txt"
    labels.write_raven(truth, [labels.Box(*b) for b in archive["truth"][source]["boxes"]])
    png = tmp_path / "rec1.png"
    assert main(["plot", source, "--out", str(png), "--segments", full_run["out"], "--ref", str(truth)]) == 0
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape == (640, 1200, 3)
    red = (img[..., 0] > 200) & (img[..., 1] < 90) & (img[..., 2] < 90)
    cyan = (img[..., 0] < 60) & (img[..., 1] > 180) & (img[..., 2] > 200)
    assert red[:320].sum() > 200 and red[320:].sum() == 0
    assert cyan[320:].sum() > 200 and cyan[:320].sum() == 0


def test_cli_plot_predicts_when_no_segments_are_given(model_path, archive, tmp_path):
    png = tmp_path / "rec3.png"
    assert (
        main(
            [
                "plot",
                archive["folder"] + "/rec3.flac",
                "--out",
                str(png),
                "--model",
                model_path,
                "--start",
                "1.0",
                "--end",
                "3.0",
            ]
        )
        == 0
    )
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape == (320, 1200, 3)
    assert ((img[..., 0] > 200) & (img[..., 1] < 90) & (img[..., 2] < 90)).sum() > 100


@pytest.mark.ray
def test_a_lone_actor_takes_the_spare_cpus_of_one_node_only(ray_session):
    import ray

    node = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
    assert segment.spare_cpus(1, 1) == 1
    assert segment.spare_cpus(1, 2) == min(2, node)
    assert segment.spare_cpus(1, 100) == node  # never more than a node holds: it could not be placed
    assert segment.spare_cpus(0.5, 100) == node


# ---- class models ---------------------------------------------------------------------------------
def labelled_recording(rng, duration: float, kinds: list[str]):
    """Rising ("up") and falling ("down") sweeps of ``kinds``, in order: the audio, each
    pixel's class (1 down, 2 up, 0 background) and the calls' boxes with their kinds. (A
    convolutional network tells shapes apart, not absolute frequencies.)"""
    calls, t = [], 0.3
    for kind in kinds:
        dur, fa = rng.uniform(0.15, 0.35), rng.uniform(2500, 4000)
        fb = fa * (1.8 if kind == "up" else 1 / 1.8)
        calls.append(sweep(t, dur, fa, fb, rng.uniform(0.15, 0.3)))
        t += dur + rng.uniform(0.25, 0.5)
    x, mask, boxes = recording(rng, max(duration, t + 0.3), calls)
    classes = np.zeros_like(mask)
    for c, kind in zip(calls, kinds):
        a, _ = c.span(CFG.sample_rate)
        mag, first = synth.call_magnitude(render_call(c, CFG.sample_rate), a, CFG, mask.shape[1])
        m = synth.core_of(mag)
        classes[:, first : first + m.shape[1]][m > 0] = 1 if kind == "down" else 2
    return x, classes, list(zip(boxes, kinds))


@pytest.fixture(scope="module")
def class_model_path(tmp_path_factory) -> str:
    """A width-4 class model (down, up) trained for 150 steps on 12 recordings of both kinds."""
    rng = np.random.default_rng(3)
    spec, target, valid = [], [], []
    for _ in range(12):
        x, classes, _ = labelled_recording(rng, 6.0, list(rng.choice(["down", "up"], 6)))
        for tile in iter_tiles([x[None]], CFG):
            m = np.zeros((CFG.n_rows, CFG.tile_frames), np.uint8)
            got = classes[:, tile.first_frame : tile.first_frame + tile.valid_frames]
            m[:, : got.shape[1]] = got
            spec.append(tile.spec[0]), target.append(m), valid.append(tile.valid_frames)
    config = ModelConfig.with_classes(["down", "up"], width=4, depth=3, dropout=0.0)
    model = fit_tiny(config, spec, target, valid, steps=150)
    path = tmp_path_factory.mktemp("model") / "classes.pt"
    return str(checkpoint.save_checkpoint(path, model, spec_config_json=CFG.to_json()))


def test_a_class_model_labels_every_segment_in_every_table(class_model_path, tmp_path):
    kinds = ["up", "down", "down", "up", "down", "up"]
    x, _, truth = labelled_recording(np.random.default_rng(99), 5.0, kinds)
    path = tmp_path / "calls.wav"
    sf.write(path, x, CFG.sample_rate)
    out = str(tmp_path / "out")
    flags = ["--local", "--format", "raven,csv", "--class-map"]
    assert main(["segment", str(path), "--out", out, "--model", class_model_path, *flags]) == 0
    segs = outputs.read_outputs(out, "segments").sort_by("start_s").to_pylist()
    pairs = match_events([(s["start_s"], s["end_s"], s["low_hz"], s["high_hz"]) for s in segs], [b for b, _ in truth])
    assert pairs["tp"] >= 5
    found = [(segs[i]["label"], truth[j][1]) for i, j in pairs["pairs"]]
    assert sum(a == b for a, b in found) >= 5, found
    for s in segs:
        assert s["label"] in ("down", "up") and 0 < s["label_score"] <= s["score"] + 1e-6
        assert s["top_labels"][0] == s["label"] and sorted(s["top_labels"]) == ["down", "up"]
        assert s["top_scores"][0] == pytest.approx(s["label_score"]) and s["top_scores"][0] >= s["top_scores"][1]
    (mask_row,) = outputs.read_outputs(out, "masks").to_pylist()
    assert mask_row["class_names"] == ["down", "up"]
    cmap = np.frombuffer(mask_row["class_map"], np.uint8).reshape(mask_row["n_frames"], mask_row["n_rows"]).T
    bits = tables.decode_mask(mask_row["mask"], mask_row["n_rows"], mask_row["n_frames"], 0, mask_row["n_frames"])
    assert ((cmap > 0) == (bits > 0)).all() and set(np.unique(cmap)) == {0, 1, 2}
    raven = labels.read_raven(os.path.join(out, "raven", "calls.Table.1.selections.txt"))
    assert [b.label for b in sorted(raven, key=lambda b: b.begin_s)] == [s["label"] for s in segs]
    rows = list(csv.DictReader(open(os.path.join(out, "raven", "calls.Table.1.selections.txt")), delimiter="\t"))
    assert [float(r["Label Score"]) for r in rows] == pytest.approx(
        [s["label_score"] for s in sorted(segs, key=lambda s: s["segment_id"])], abs=1e-4
    )
    table = pacsv.read_csv(os.path.join(out, "csv", "calls.csv"))
    assert set(table["label"].to_pylist()) <= {"down", "up"} and all(";" in t for t in table["top_labels"].to_pylist())
    scored = score_classes(out, {str(path): [labels.Box(*b, label=kind) for b, kind in truth]}, iou=0.3)
    assert scored["n_ref"] == 6 and scored["ser"] <= 1 / 6 and scored["ser_raw"] is not None
    assert set(scored["per_class"]) == {"down", "up"} and scored["macro_f1"] >= 0.8
    ref = tmp_path / "labels" / "calls.Table.1.selections.txt"
    ref.parent.mkdir()
    labels.write_raven(ref, [labels.Box(*b, label=kind) for b, kind in truth])
    report = tmp_path / "report.json"
    assert main(["evaluate", "--pred", out, "--ref", str(ref), "--iou", "0.3", "--out", str(report)]) == 0
    assert json.loads(report.read_text())["classes"]["ser"] == pytest.approx(scored["ser"])
