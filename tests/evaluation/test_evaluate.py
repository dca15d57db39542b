import dataclasses
import io
import json
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from raybird.cli import main
from raybird.dsp.spectrogram import PRESETS, n_frames_for
from raybird.evaluation.evaluate import evaluate_run, pool_labels, write_report
from raybird.evaluation.field_scores import event_scores, match_events, match_onsets, merge_intervals
from raybird.evaluation.references import Reference, ReferenceIndex, load_references
from raybird.evaluation.scores import coverage, covered_fraction, error_anatomy, evaluate_masks, mask_events
from raybird.inference import postprocess, recording
from raybird.io import label_masks, labels, outputs, storage, tables
from raybird.pipelines import segment
from raybird.synth.generator import generate_archive
from raybird.training.metrics import confusion, scores

CFG = PRESETS["default"]


def B(t0, t1, f0=1000.0, f1=2000.0):
    return [t0, t1, f0, f1]


# ---- matching ------------------------------------------------------------------------------------
def test_one_to_one_two_predictions_on_one_reference():
    ref = [B(1.0, 2.0)]
    pred = [B(1.05, 2.0), B(1.0, 1.9)]  # both IoU >= 0.5 with the one reference
    m = match_events(pred, ref)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)
    assert m["pairs"] == [(0, 0)]  # the closer one (IoU 0.95 vs 0.9)
    assert (m["precision"], m["recall"]) == (0.5, 1.0)
    assert m["f1"] == pytest.approx(2 / 3)


def test_iou_exactly_at_the_boundary_counts():
    ref = [B(0.0, 1.0)]
    assert match_events([B(0.0, 2.0)], ref)["tp"] == 1  # IoU 1/2
    assert match_events([B(0.0, 1.0, 1000.0, 3000.0)], ref)["tp"] == 1  # 1/2 in frequency
    m = match_events([B(0.0, 2.001)], ref)  # just below 1/2
    assert (m["tp"], m["fp"], m["fn"]) == (0, 1, 1)
    assert match_events([B(0.0, 2.0)], ref, iou=0.51)["tp"] == 0


def test_matching_maximises_the_number_of_pairs():
    # IoU: P0-R0 0.875, P0-R1 0.625, P1-R0 0.5, P1-R1 0.43. Maximising the total IoU would
    # pair P0-R0 and P1-R1 (one valid pair); two valid pairs exist: P0-R1, P1-R0.
    pred, ref = [B(3, 11), B(6, 11)], [B(3, 10), B(4, 9)]
    m = match_events(pred, ref)
    assert m["tp"] == 2 and sorted(m["pairs"]) == [(0, 1), (1, 0)]


def test_empty_sides():
    assert match_events([], []) == dict(tp=0, fp=0, fn=0, precision=1.0, recall=1.0, f1=1.0, pairs=[])
    m = match_events([B(0, 1)], [])
    assert (m["fp"], m["precision"], m["recall"], m["f1"]) == (1, 0.0, 1.0, 0.0)
    m = match_onsets([], [[0, 1], [2, 3]])
    assert (m["fn"], m["precision"], m["recall"], m["f1"]) == (2, 1.0, 0.0, 0.0)


def test_onset_tolerance():
    ref = [[1.0, 1.2], [2.0, 2.3]]
    m = match_onsets([[1.04, 1.17], [2.06, 2.3]], ref, tolerance_s=0.05)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1) and m["pairs"] == [(0, 0)]  # 2.06: onset 60 ms off
    assert match_onsets([[1.04, 1.17], [2.06, 2.3]], ref, tolerance_s=0.06)["tp"] == 2
    # offsets: 1.0-1.3 has the onset but the offset is 100 ms late
    assert match_onsets([[1.0, 1.3]], ref)["tp"] == 0
    assert match_onsets([[1.0, 1.3]], ref, offsets=False)["tp"] == 1
    # exactly at the tolerance counts; two candidates for one reference: one TP, one FP
    m = match_onsets([[0.95, 1.2], [1.0, 1.21]], ref)
    assert (m["tp"], m["fp"], m["fn"], m["pairs"]) == (1, 1, 1, [(1, 0)])


def test_coverage_of_coarse_boxes():
    ref = [B(0, 1), B(2, 4)]
    pred = [B(0, 0.3), B(0.5, 0.8), B(2, 2.5), B(10, 11), B(0.2, 0.9, 5000, 6000)]
    # ref 0: two syllables cover 0.6 of it (the 5-6 kHz one is above its band); ref 1: 0.25
    np.testing.assert_allclose(covered_fraction(ref, pred), [0.6, 0.25])
    np.testing.assert_allclose(covered_fraction(ref, pred, time_only=True), [0.9, 0.25])
    np.testing.assert_allclose(covered_fraction(pred, ref), [1, 1, 1, 0, 0])

    def flags(*a, **kw):
        return tuple(f.tolist() for f in coverage(*a, **kw))

    assert flags(pred, ref) == ([True, False], [True, True, True, False, False])
    assert flags(pred, ref, time_only=True) == ([True, False], [True, True, True, False, True])
    assert flags(pred, ref, min_cover=0.25) == ([True, True], [True, True, True, False, False])
    assert flags([], ref) == ([False, False], []) and flags(pred, []) == ([], [False] * 5)


def test_event_scores_and_merge():
    assert event_scores(3, 1, 2) == pytest.approx(dict(precision=0.75, recall=0.6, f1=2 * 0.45 / 1.35))
    assert event_scores(0, 0, 0) == dict(precision=1.0, recall=1.0, f1=1.0)
    assert merge_intervals([[2, 3], [0, 1], [0.5, 1.5], [1.5, 1.6]]).tolist() == [[0, 1.6], [2, 3]]


def test_pixel_metrics_are_raybirds():
    rng = np.random.default_rng(3)
    pred, ref = (rng.random((64, 90)) > 0.7).astype(np.uint8), (rng.random((64, 90)) > 0.6).astype(np.uint8)
    valid = rng.random((64, 90)) > 0.1
    for v in (None, valid):
        m = evaluate_masks(pred, ref, v)
        assert {k: m[k] for k in ("iou", "miou", "dice", "pixel_acc")} == scores(confusion(pred, ref, v))
    m = evaluate_masks(pred, ref)
    assert m["px_tp"] == int((pred & ref).sum()) and m["px_fp"] + m["px_fn"] == int((pred ^ ref).sum())


def test_error_anatomy_sorts_edge_errors_from_missed_and_invented_regions():
    ref = np.zeros((60, 80), bool)
    ref[10:20, 10:20] = True  # a call found, its boundary traced 1 px to the right
    ref[40:45, 50:55] = True  # a call missed: 25 pixels
    ref[10:20, 40:60] = True  # a call found in part: its right half missing
    pred = np.zeros_like(ref)
    pred[10:20, 11:21] = True
    pred[50:53, 5:8] = True  # a false alarm: 9 pixels
    pred[10:20, 40:50] = True
    a = error_anatomy(pred, ref)
    # edge: the shifted call's 10 + 10 pixels, and 2 columns of the half-found call beside the prediction
    assert a == dict(px_fn_edge=10 + 20, px_fp_edge=10, px_fn_missed=25, px_fp_invented=9)
    fn, fp = int((ref & ~pred).sum()), int((pred & ~ref).sum())
    assert fn - a["px_fn_edge"] - a["px_fn_missed"] == 80  # the half-found call's far 8 columns: neither
    assert fp == a["px_fp_edge"] + a["px_fp_invented"]
    assert error_anatomy(pred, ref, edge_px=0)["px_fn_edge"] == 0
    # a call and a false alarm side by side, 1 column apart: the columns within 2 px of each other
    # are edge errors, the rest missed and invented (the counts stay disjoint)
    call, alarm = np.zeros((20, 30), bool), np.zeros((20, 30), bool)
    call[5:10, 10:15] = True
    alarm[5:10, 16:21] = True
    assert error_anatomy(alarm, call) == dict(px_fn_edge=5, px_fp_edge=5, px_fn_missed=20, px_fp_invented=20)
    assert error_anatomy(np.zeros_like(ref), np.zeros_like(ref)) == dict.fromkeys(a, 0)


# ---- whole runs ------------------------------------------------------------------------------------
def write_prediction(out, source, mask, cfg=CFG, channel=0, duration=None, segs=None):
    """A prediction folder exactly as the segment job writes it (its own writer; by default
    its segmenter with the job's default filters)."""
    duration = mask.shape[1] * cfg.frame_s if duration is None else duration
    opts = recording.SegmentOptions()
    if segs is None:
        segs = postprocess.segments_of(
            mask.astype(np.float32), cfg, 0.5, opts.min_duration_s, opts.min_pixels, duration
        )
    result = recording.ChannelResult(channel, segs, tables.encode_mask(mask), None, mask.shape[1])
    rec_id = segment.storage.recording_id(source)
    parts = outputs.PartWriter(str(out))
    parts.add(rec_id, recording.recording_tables(rec_id, source, duration, [result], cfg, "test-model", opts))
    parts.commit()
    return segs


def test_perfect_prediction_on_synthetic_truth(tmp_path):
    records = generate_archive(tmp_path / "ref", 3, seed=5, duration_s=(3.0, 4.0))
    for r in records:
        truth = labels.read_truth(r["truth"]).mask
        # the truth mask as the mask, the truth boxes (Raven table) as the segments ...
        boxes = [
            postprocess.Segment(i, b.begin_s, b.end_s, b.low_hz, b.high_hz, 1.0, 0, 0, 0, 0, 1)
            for i, b in enumerate(labels.read_raven(r["table"]))
        ]
        write_prediction(tmp_path / "by_call", r["audio"], truth, duration=r["duration_s"], segs=boxes)
        # ... or the segments the segment job makes of the truth mask
        write_prediction(tmp_path / "by_region", r["audio"], truth, duration=r["duration_s"])
    n_calls = sum(r["n_calls"] for r in records)
    assert n_calls >= 10
    # events: one per Raven box (audible call), or one per region of the truth mask
    n_events = {
        "labels": sum(len(labels.read_raven(r["table"])) for r in records),
        "mask": sum(len(mask_events(labels.read_truth(r["truth"]))) for r in records),
    }
    assert n_events["mask"] != n_events["labels"]  # regions are not calls (split notes, merged calls)
    for pred, events_from in (("by_call", "labels"), ("by_region", "mask")):
        report = evaluate_run(str(tmp_path / pred), [str(tmp_path / "ref")], events_from=events_from)
        pooled = report.pooled
        assert len(report.rows) == 3 and all(r["reference"] == r["source"] for r in report.rows)
        assert (pooled["iou"], pooled["dice"], pooled["pixel_acc"], pooled["f1"]) == (1.0, 1.0, 1.0, 1.0)
        assert pooled["fp"] == pooled["fn"] == 0 and pooled["tp"] == pooled["n_ref"] == n_events[events_from]
        assert not (report.unmatched or report.missing or report.errors or report.reference_errors)


@pytest.fixture()
def shifted(tmp_path):
    """A 1.2 s recording with two reference boxes (Raven) and a prediction shifted 5 frames later."""
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    wav = ref_dir / "rec.wav"
    sf.write(wav, np.zeros(26460, np.float32), CFG.sample_rate)
    n = n_frames_for(26460, CFG)
    assert n == 207
    duration = 26460 / CFG.sample_rate
    ref_px = [(10, 29, 50, 59), (100, 109, 20, 29)]  # frames (first, last), rows (low, high)
    labels.write_raven(
        ref_dir / "rec.Table.1.selections.txt", [labels.Box(*postprocess.box_of(*p, CFG, duration)) for p in ref_px]
    )
    pred = np.zeros((CFG.n_rows, n), np.uint8)
    for f0, f1, r0, r1 in ref_px:
        pred[r0 : r1 + 1, f0 + 5 : f1 + 6] = 1
    return tmp_path, wav, pred, duration


def test_recall_per_label(shifted, capsys):
    """Per species / call type: the labels of the reference boxes, pooled over recordings."""
    tmp_path, wav, pred, duration = shifted
    table = tmp_path / "ref" / "rec.Table.1.selections.txt"
    boxes = labels.read_raven(str(table))
    named = [dataclasses.replace(b, label=name) for b, name in zip(boxes, ("sp1-trill", "sp2-buzz"))]
    labels.write_raven(table, named)
    write_prediction(tmp_path / "pred", str(wav), pred, duration=duration)
    report = evaluate_run(str(tmp_path / "pred"), [str(tmp_path / "ref")])
    # the trill's box is matched (IoU 0.6); the buzz's only overlapped and half covered (IoU 1/3)
    assert report.rows[0]["labels"] == {"sp1-trill": [1, 1, 1, 1], "sp2-buzz": [1, 0, 1, 1]}
    trill, buzz = report.pooled["labels"]["sp1-trill"], report.pooled["labels"]["sp2-buzz"]
    assert (trill["events"], trill["recall"]) == (1, 1.0)
    assert (buzz["recall"], buzz["cover_recall"], buzz["detected_frac"]) == (0.0, 1.0, 1.0)
    # pooled over two copies of the recording, and printed
    twice = pool_labels(report.rows * 2)
    assert twice["sp2-buzz"] == dict(
        events=2, matched=0, covered=2, detected=2, recall=0.0, cover_recall=1.0, detected_frac=1.0
    )
    print(report.format())
    out = capsys.readouterr().out
    assert "sp1-trill" in out and "sp2-buzz" in out and json.loads(json.dumps(report.to_dict()))["pooled"]["labels"]


def test_shifted_prediction_gives_hand_computed_numbers(shifted):
    tmp_path, wav, pred, duration = shifted
    segs = write_prediction(tmp_path / "pred", str(wav), pred, duration=duration)
    assert len(segs) == 2
    report = evaluate_run(str(tmp_path / "pred"), [str(tmp_path / "ref")])
    (row,) = report.rows
    # box 1: 20 x 10 pixels, 15 columns overlap: tp 150, fp 50, fn 50; box 2: 10 x 10, 5 overlap
    assert (row["px_tp"], row["px_fp"], row["px_fn"]) == (200, 100, 100)
    assert row["px_tn"] == CFG.n_rows * 207 - 400
    assert row["iou"] == pytest.approx(0.5) and row["dice"] == pytest.approx(2 / 3)
    # shifted by 5 frames: of each box's 5 missed and 5 extra columns, the 2 next to the other mask are edge errors
    assert (row["px_fn_edge"], row["px_fp_edge"], row["px_fn_missed"], row["px_fp_invented"]) == (40, 40, 0, 0)
    assert row["iou_edge_tolerant"] == pytest.approx(200 / (200 + 60 + 60))
    assert report.pooled["iou_edge_tolerant"] == pytest.approx(200 / 320)
    # box IoU 15/25 = 0.6 (a match) and 5/15 (not): 1 TP, 1 FP, 1 FN
    assert (row["tp"], row["fp"], row["fn"], row["f1"]) == (1, 1, 1, 0.5)
    assert row["detected"] == 2 and row["event_mode"] == "box"
    # coverage: 15 of box 1's 20 frames, 5 of box 2's 10 (exactly the default half) -- both ways
    assert (row["covered"], row["pred_covered"]) == (2, 2)
    assert report.pooled["cover_recall"] == report.pooled["cover_precision"] == 1.0


def test_reference_by_label_file_stem_and_bookkeeping(shifted, capsys):
    tmp_path, wav, pred, duration = shifted
    write_prediction(tmp_path / "pred", "/elsewhere/rec.flac", pred, duration=duration)  # matched by stem
    write_prediction(tmp_path / "pred", "/elsewhere/other.wav", pred, duration=duration)  # no reference
    table = str(tmp_path / "ref" / "rec.Table.1.selections.txt")
    (tmp_path / "bad.Table.1.selections.txt").write_text("not a table\n")
    refs, problems = load_references([table, str(tmp_path / "bad.Table.1.selections.txt")])
    assert [r.stem for r in refs] == ["rec"] and len(problems) == 1
    report = evaluate_run(str(tmp_path / "pred"), [table])
    assert [r["source"] for r in report.rows] == ["/elsewhere/rec.flac"]
    assert report.rows[0]["reference"] == table and report.rows[0]["tp"] == 1
    assert [u["source"] for u in report.unmatched] == ["/elsewhere/other.wav"]
    assert report.unmatched[0]["reason"] == "no reference"
    # the same through the command line: report files and the printed table
    code = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--ref",
            str(tmp_path / "ref"),
            "--out",
            str(tmp_path / "rep.json"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "POOLED (1 recordings)" in out and "1 predictions without a reference" in out
    assert (
        "pixel errors: 40% within 2 px of the other mask (IoU with those forgiven 0.625), "
        "0% in regions missed whole, 0% in false alarms"
    ) in out
    saved = json.loads((tmp_path / "rep.json").read_text())
    assert saved["pooled"]["tp"] == 1 and saved["pooled"]["iou"] == pytest.approx(0.5)
    t = pq.read_table(tmp_path / "rep.parquet")
    assert t.num_rows == 1 and t.column("f1").to_pylist() == [0.5]


def test_time_only_reference_uses_onsets(tmp_path):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    sf.write(ref_dir / "song.wav", np.zeros(26460, np.float32), CFG.sample_rate)
    # two syllables (Audacity, time-only); the prediction has the first one in two bands
    (ref_dir / "song.txt").write_text("0.100\t0.200\ta\n0.600\t0.700\tb\n")
    t = lambda s: int(round(s / CFG.frame_s))  # noqa: E731  frame whose centre is at s
    pred = np.zeros((CFG.n_rows, 207), np.uint8)
    pred[30:40, t(0.1) : t(0.2) + 1] = 1
    pred[80:90, t(0.11) : t(0.19) + 1] = 1  # same syllable, a harmonic: merged in time
    pred[30:40, t(0.5) : t(0.55) + 1] = 1  # onset 100 ms early: no match
    write_prediction(tmp_path / "pred", str(ref_dir / "song.wav"), pred)
    (row,) = evaluate_run(str(tmp_path / "pred"), [str(ref_dir)]).rows
    assert row["event_mode"] == "onset"
    assert (row["n_pred"], row["tp"], row["fp"], row["fn"]) == (2, 1, 1, 1)
    assert row["detected"] == 1  # the 0.5-0.55 segment ends before the 0.6 syllable
    # full-band reference columns: every predicted pixel of the first syllable is inside them
    cols = lambda a, b: np.flatnonzero((label_masks.boxes_to_mask([labels.Box(a, b)], CFG, 207)).any(axis=0))  # noqa
    assert row["px_fn"] == CFG.n_rows * (len(cols(0.1, 0.2)) + len(cols(0.6, 0.7))) - row["px_tp"]
    # the field's measures: syllable a found within 20 ms, b missed, a false alarm at 0.5-0.55 s
    f = evaluate_run(str(tmp_path / "pred"), [str(ref_dir)]).pooled["field"]
    assert (f["n_labels"], f["segment_tp"], f["onset_tp"], f["n_segments"]) == (2, 1, 1, 2)
    assert f["segment_f1"] == f["onset_f1"] == 0.5 and f["box_recall"] is None
    assert f["frame_recall"] == pytest.approx(0.5, abs=0.06) and f["frame_precision"] == pytest.approx(2 / 3, abs=0.06)
    assert abs(f["onset_error_ms"]) <= CFG.frame_s * 1000


def test_stem_fallback_only_when_unambiguous():
    def ref(source):
        return Reference(source, PurePosixPath(source).stem, [], [])

    index = ReferenceIndex([ref("/a/x.wav"), ref("/a/y.wav"), ref("/b/y.wav"), ref("/a/z.wav")])
    got = index.assign(["/a/x.wav", "/c/x.wav", "/s3copy/y.wav", "/c/z.wav", "/d/z.wav", "/c/w.wav"])
    assert got["/a/x.wav"][0].source == "/a/x.wav"
    assert got["/c/x.wav"] == (None, "the references with stem 'x' belong to other sources")
    assert got["/s3copy/y.wav"] == (None, "2 references with stem 'y'")
    assert got["/c/z.wav"] == (None, "2 predicted recordings with stem 'z'")
    assert got["/c/w.wav"] == (None, "no reference")
    assert index.assign(["/c/z.wav"])["/c/z.wav"][0].source == "/a/z.wav"


def test_references_in_every_format(real_data, tmp_path):
    bsd = real_data / "bsd_sample" / "Test"
    named = [
        real_data / "pykanto" / "great_tit" / "JSON" / "2021-B32-0415_05-15.JSON",
        real_data / "pykanto" / "storm_petrel" / "XC46092.xml",
        real_data / "raven_format" / "MSD-0003_20180427_2minstart00.Table.1.selections.txt",
        real_data / "bengalese_finch" / "gy6or6_baseline_230312_0808.138.txt",
        bsd / "Masks" / "XC41136.png",
    ]
    records = generate_archive(tmp_path / "syn", 1, seed=3, duration_s=(2.0, 2.0), p_empty=0.0)
    tar = tmp_path / "syn.tar"
    with tarfile.open(tar, "w") as t:
        for f in sorted((tmp_path / "syn").iterdir()):
            t.add(f, arcname=f.name)
    refs, problems = load_references([str(p) for p in named] + [str(bsd.parent), str(tar)])
    assert problems == []
    by = {r.source: r for r in refs}
    kanto = by[str(named[0])]
    assert kanto.stem == "2021-B32-0415_05-15" and len(kanto.events) == 1
    assert kanto.events[0].end_s == pytest.approx(2.6)  # the WAV's real duration, found beside it
    assert (kanto.events[0].low_hz, kanto.events[0].high_hz) == (2392.0, 5694.0)
    assert len(by[str(named[1])].events) == 6  # Sonic Visualiser boxes
    assert len(by[str(named[2])].events) == 10  # Raven, no audio anywhere
    finch = by[str(named[3])]  # Audacity, time-only
    assert finch.stem == "gy6or6_baseline_230312_0808.138" and len(finch.events) == 78
    assert all(b.low_hz is None for b in finch.events)
    for src in (str(named[4]), str(bsd / "Raw_audios" / "XC41136.wav")):  # BSD mask: named, or beside its audio
        assert isinstance(by[src].pixels, labels.GridMask) and by[src].pixels.time_shift_s == pytest.approx(0.011)
        assert len(by[src].events) == 8  # the mask's 12 regions, harmonics grouped as segment does
    member = by[f"{tar}::{Path(records[0]['audio']).name}"]  # inside an archive
    assert isinstance(member.pixels, labels.GridMask)
    assert len(member.events) == records[0]["n_calls"]  # the Raven table beside the truth


def test_predictions_and_report_on_s3(shifted, s3_bucket):
    tmp_path, wav, pred, duration = shifted
    write_prediction(f"s3://{s3_bucket}/run", str(wav), pred, duration=duration)
    report = evaluate_run(f"s3://{s3_bucket}/run", [str(tmp_path / "ref")])
    assert [(r["tp"], r["fp"], r["fn"], r["px_tp"]) for r in report.rows] == [(1, 1, 1, 200)]
    json_path, parquet_path = write_report(report, f"s3://{s3_bucket}/run/evaluation")
    assert json.loads(storage.read_bytes(json_path))["pooled"]["iou"] == pytest.approx(0.5)
    assert pq.read_table(io.BytesIO(storage.read_bytes(parquet_path))).column("f1").to_pylist() == [0.5]
