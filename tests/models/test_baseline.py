import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.ndimage as ndi
import soundfile as sf
import torch

from raybird.dsp.spectrogram import PRESETS
from raybird.evaluation.evaluate import evaluate_run
from raybird.evaluation.field_scores import match_events
from raybird.inference import recording
from raybird.io import labels
from raybird.models import checkpoint
from raybird.models.baseline import DEFAULTS, ThresholdSegmenter, contrast, detect, write_checkpoint
from raybird.models.networks import ModelConfig
from raybird.pipelines import segment
from raybird.synth.generator import generate_archive
from raybird.training import engine

CFG = PRESETS["default"]


def tile_with_calls(seed=0):
    """Noise (floor near 0.1) with a loud sweep, a blob, a faint patch and a one-pixel click."""
    rng = np.random.default_rng(seed)
    x = np.clip(0.1 + 0.03 * rng.standard_normal((256, 512)), 0, 1).astype(np.float32)
    for k in range(200):  # a sweep: 200 frames, rising 60 rows
        x[60 + k // 4 : 63 + k // 4, 50 + k] = 0.7
    x[150:154, 300:320] = 0.45  # 0.35 above the floor
    x[200:206, 100:130] = 0.25  # faint: between low and high, nowhere above high
    x[20, 400] = 1.0  # a click: one pixel
    x[:, 480:] = 0.0  # padding past the end of the recording
    return x


def test_forward_is_the_detector_and_its_mask():
    x = tile_with_calls()
    model = ThresholdSegmenter(high=0.25, low=0.1, min_pixels=20).eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)[None, None])
    assert logits.shape == (1, 2, 256, 512) and logits.dtype == torch.float32
    prob = logits.softmax(dim=1)[0, 1].numpy()
    mask = detect(
        contrast(x, DEFAULTS["floor_percentile"], DEFAULTS["sigma"]),
        0.25,
        0.1,
        DEFAULTS["closing_rows"],
        DEFAULTS["closing_frames"],
        20,
    )
    assert ((prob >= 0.5) == mask).all()
    assert mask[60:63, 50].all() and mask[109:112, 249].all()  # the sweep, end to end
    assert not mask[20, 400] and not mask[:, 480:].any()  # no click, nothing in the padding
    assert not mask[195:211, 95:135].any()  # hysteresis: the faint patch is out
    assert ndi.label(mask, structure=np.ones((3, 3)))[1] == 2  # the sweep and the faint blob
    assert prob[mask].min() > 0.5 and prob[~mask].max() < 0.5
    assert prob[86, 150] > prob[152, 310]  # louder is more probable


def test_closing_keeps_regions_at_the_edge_and_bridges_gaps():
    c = np.zeros((40, 60), np.float32)
    c[10:13, 0:20] = 1.0
    c[10:13, 23:40] = 1.0  # a 3-frame gap
    m = detect(c, 0.5, 0.2, closing_rows=3, closing_frames=5, min_pixels=1)
    assert m[10:13, 0:40].all() and m.sum() == 3 * 40
    m = detect(c, 0.5, 0.2, closing_rows=1, closing_frames=1, min_pixels=55)
    assert m.sum() == 60  # no closing: the 51-pixel piece is too small


def test_registry_and_checkpoint_round_trip(tmp_path):
    model = ModelConfig(arch="threshold").build()
    assert isinstance(model, ThresholdSegmenter) and model.params() == DEFAULTS
    assert not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        model.high.fill_(0.4)
    checkpoint.save_checkpoint(tmp_path, model, spec_config_json=CFG.to_json())
    loaded, payload = checkpoint.load_checkpoint(tmp_path)
    assert loaded.params()["high"] == pytest.approx(0.4) and loaded.params()["min_pixels"] == DEFAULTS["min_pixels"]
    x = torch.from_numpy(tile_with_calls())[None, None]
    torch.testing.assert_close(loaded(x), model(x))
    assert engine.predict_proba(loaded, x).shape == (1, 256, 512)  # device found from its parameters
    with pytest.raises(ValueError):
        ModelConfig(arch="threshold", n_classes=3).build()


@pytest.fixture(scope="module")
def baseline_checkpoint(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "threshold.pt")
    model, payload = checkpoint.load_checkpoint(path)
    assert model.params() == DEFAULTS and payload["spec_config"] == CFG.to_json()
    return str(path)


PULSED_OR_HARMONIC = ("stack", "buzz", "trill", "purr")


def test_segment_job_finds_calls_at_high_snr_and_nothing_in_noise(tmp_path, baseline_checkpoint):
    """The baseline checkpoint through the real segment job, scored by evaluate. 5 s recordings
    (the last tile then holds >= 32 frames: see the report on the segment job's stitching).
    Segments keep the mask's edges (``--edges off``): the synthetic truth boxes are pixel
    rectangles of each call's 40-dB range, which refined edges, at the sound's onset and offset,
    lie inside (0.57 of the truth mask's regions matched at box IoU >= 0.5 with them)."""
    generate_archive(tmp_path / "calls", 3, seed=11, duration_s=(5.0, 5.0), snr_db=(12.0, 20.0), p_empty=0.0, noises=[])
    generate_archive(tmp_path / "noise", 2, seed=12, duration_s=(5.0, 5.0), p_empty=1.0, noises=["wind", "rain"])
    sf.write(tmp_path / "noise" / "silence.wav", np.zeros(3 * CFG.sample_rate, np.float32), CFG.sample_rate)
    out = tmp_path / "out"
    summary = segment.run_local(
        [str(tmp_path / "calls"), str(tmp_path / "noise")],
        str(out),
        baseline_checkpoint,
        recording.SegmentOptions(edge_fraction=None),
    )
    assert summary.recordings == 6 and summary.errors == 0

    by_call = evaluate_run(str(out), [str(tmp_path / "calls")])
    n_boxes = sum(len(labels.read_raven(t)) for t in (tmp_path / "calls").glob("*.selections.txt"))
    assert len(by_call.rows) == 3 and by_call.pooled["n_ref"] == n_boxes >= 12
    assert by_call.pooled["detected_frac"] == 1.0  # every call is overlapped by a segment
    assert by_call.pooled["iou"] >= 0.55  # 0.60
    # One-to-one at box IoU >= 0.5: the single-band calls are found, and the harmonic stacks too
    # (their harmonics grouped into one segment; ungrouped, none covered half of its call's box).
    # Trills and purrs are left out: their notes are separate regions (detected_frac covers them).
    segs = pq.read_table(out / "segments")
    seg_source = np.array(segs.column("source").to_pylist())
    seg_box = np.stack([segs.column(c).to_numpy() for c in ("start_s", "end_s", "low_hz", "high_hz")], axis=1)
    found, single = 0, 0
    for row in by_call.rows:
        calls = labels.read_raven(row["source"].rsplit(".", 1)[0] + ".Table.1.selections.txt")
        ref = [[b.begin_s, b.end_s, b.low_hz, b.high_hz] for b in calls]
        pairs = match_events(seg_box[seg_source == row["source"]], ref)["pairs"]
        matched = {j for _, j in pairs}
        kinds = [b.label.split("-")[1] for b in calls]
        single += sum(k not in PULSED_OR_HARMONIC for k in kinds)
        found += sum(k not in PULSED_OR_HARMONIC and j in matched for j, k in enumerate(kinds))
        assert all(j in matched for j, k in enumerate(kinds) if k == "stack")
    assert single >= 10 and found / single >= 0.8  # 12 of 12 (generator 8; 20 of 21 in generator 5)
    by_region = evaluate_run(str(out), [str(tmp_path / "calls")], events_from="mask")
    assert by_region.pooled["recall"] >= 0.7  # 0.95 of the truth mask's regions

    noise = evaluate_run(str(out), [str(tmp_path / "noise")])
    assert len(noise.rows) == 2 and noise.pooled["n_ref"] == 0
    assert noise.pooled["n_pred"] <= 1  # wind and rain: at most one stray segment
    assert not any(s.endswith("silence.wav") for s in seg_source)


def test_real_recordings(tmp_path, baseline_checkpoint, real_data):
    """Storm-petrel songs (coarse boxes, one per song), great tit songs (one box per clip) and
    Bengalese finch syllables (time-only): the baseline finds every labelled song and most
    syllables. The numbers are printed; the bounds sit a little below them."""
    petrel, tit, finch = (
        real_data / "pykanto" / "storm_petrel",
        real_data / "pykanto" / "great_tit",
        real_data / "bengalese_finch",
    )
    inputs = (
        [str(petrel)]
        + [str(tit / "WAV" / f"2021-B32-0415_05-{k}.wav") for k in (11, 15, 21)]
        + [str(finch / f"gy6or6_baseline_230312_{k}.wav") for k in ("0808.138", "0809.141")]
    )
    out = str(tmp_path / "out")
    assert segment.run_local(inputs, out, baseline_checkpoint).errors == 0
    reports = {
        name: evaluate_run(out, [str(folder)]) for name, folder in (("petrel", petrel), ("tit", tit), ("finch", finch))
    }
    for name, rep in reports.items():
        print(name, rep.format(), sep="\n")
    p, t, f = (reports[k].pooled for k in ("petrel", "tit", "finch"))
    assert (p["recordings"], t["recordings"], f["recordings"]) == (2, 3, 2)
    assert p["n_ref"] == 11 and p["detected"] == 11 and t["detected"] == 3  # every song overlapped
    assert all(r["event_mode"] == "onset" for r in reports["finch"].rows) and f["n_ref"] == 135
    assert f["recall"] >= 0.8 and f["precision"] >= 0.85 and f["detected_frac"] >= 0.95
    assert f["iou"] >= 0.35
