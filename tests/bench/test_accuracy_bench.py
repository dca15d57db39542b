"""The accuracy benchmark and the real-recording plots, end to end on a small scale: a 4-recording
synthetic test set and one recording of each real data set, the shipped model and the baseline
(no Ray, no training)."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from benchmarks import accuracy, ceiling, real_plots
from raybird.models import checkpoint

ONE_OF_EACH = [
    "pykanto/storm_petrel/XC46092.wav",
    "pykanto/storm_petrel/XC46092.xml",
    "pykanto/great_tit/WAV/2021-B32-0415_05-15.wav",
    "pykanto/great_tit/JSON/2021-B32-0415_05-15.JSON",
    "bsd_sample/Test/Raw_audios/XC41136.wav",
    "bsd_sample/Test/Masks/XC41136.png",
    "bengalese_finch/gy6or6_baseline_230312_0808.138.wav",
    "bengalese_finch/gy6or6_baseline_230312_0808.138.txt",
]


@pytest.fixture(scope="module")
def small_real(real_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    for rel in ONE_OF_EACH:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_data / rel, root / rel)
    return root


def test_snr_bands():
    assert [accuracy.band_of(x) for x in (-5.0, 0.0, 0.01, 9.99, 10.0, 20.0, None)] == [
        "≤0 dB",
        "≤0 dB",
        "0–10 dB",
        "0–10 dB",
        "≥10 dB",
        "≥10 dB",
        None,
    ]
    assert accuracy.parse_models(["a=b.pt", "U-Net=x=y.pt"]) == [("a", "b.pt"), ("U-Net", "x=y.pt")]
    with pytest.raises(SystemExit):
        accuracy.parse_models(["no-equals-sign"])


def _rows(counts: dict[str, tuple[int, int, int]]) -> list[dict]:
    return [dict(recording_id=rec, px_tp=tp, px_fp=fp, px_fn=fn) for rec, (tp, fp, fn) in counts.items()]


def test_bootstrap_intervals_of_iou_and_of_a_paired_difference():
    rng = np.random.default_rng(1)
    tp = rng.integers(50, 500, 40)
    a = _rows({f"r{i}": (t, 20, 30) for i, t in enumerate(tp)})
    b = _rows({f"r{i}": (t - 10, 20, 40) for i, t in enumerate(tp)})  # 10 more misses on every recording
    lo, hi = accuracy.iou_interval(a)
    iou_a = sum(tp) / (sum(tp) + 40 * 50)
    assert lo < iou_a < hi and hi - lo < 0.1
    d, dlo, dhi = accuracy.iou_difference(a, b)
    iou_b = (sum(tp) - 400) / (sum(tp) - 400 + 40 * 60)
    assert d == pytest.approx(iou_a - iou_b) and 0 < dlo < d < dhi
    # paired: far tighter than the two separate intervals, which overlap
    blo, bhi = accuracy.iou_interval(b)
    assert blo < hi and dhi - dlo < 0.25 * (hi - lo)
    assert accuracy.iou_difference(a, a) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same recordings"):
        accuracy.iou_difference(a, a[1:])


def test_accuracy_benchmark_end_to_end(small_real, tmp_path, capsys):
    out = tmp_path / "acc"
    result = accuracy.main(
        ["--out", str(out), "--test-n", "4", "--test-duration", "3", "4", "--real", str(small_real), "--threads", "1"]
    )
    printed = capsys.readouterr().out
    names = ["U-Net (default model)", accuracy.BASELINE]
    assert list(result["synthetic"]) == list(result["real"]) == names
    records = json.loads((out / "test" / "records.json").read_text())
    assert len(records) == 4 and all(r["snr_db"] is None or -5 <= r["snr_db"] <= 20 for r in records)
    birds = [r for r in records if r["snr_db"] is not None]
    for name in names:
        syn = result["synthetic"][name]
        assert syn["all"]["recordings"] == 4
        assert sum(syn[b]["recordings"] for b in accuracy.BANDS if b in syn) == len(birds)
        for m in syn.values():
            assert 0 <= m["iou"] <= m["dice"] <= 1 and 0.9 < m["pixel_acc"] <= 1
            # error anatomy: disjoint parts of the errors; forgiving edge errors cannot lower IoU
            assert m["px_fn_edge"] + m["px_fn_missed"] <= m["px_fn"]
            assert m["px_fp_edge"] + m["px_fp_invented"] <= m["px_fp"]
            assert m["iou"] <= m["iou_edge_tolerant"] <= 1
        real = result["real"][name]
        assert [real[s.name]["recordings"] for s in accuracy.REAL_SETS] == [1, 1, 1, 1]
        assert [real[s.name]["n_ref"] for s in accuracy.REAL_SETS] == [6, 1, 8, 78]
        assert real["Bengalese finch"]["event_mode"] == "onset" and real["storm-petrel"]["event_mode"] == "box"
    # the measured numbers of the shipped model: it covers the finch syllables, the petrel songs and
    # the BSD clip's calls (coverage recall 1.0 each); finch onset F1 0.89 on this recording (0.62
    # before syllables touching in the mask were cut at their gaps); the baseline misses the faint
    # petrel songs (0/6) and half of the BSD calls (4/8)
    unet, base = result["real"]["U-Net (default model)"], result["real"][accuracy.BASELINE]
    assert unet["Bengalese finch"]["f1"] > 0.85 and unet["Bengalese finch"]["cover_recall"] > 0.9
    assert unet["storm-petrel"]["cover_recall"] >= 0.8 > base["storm-petrel"]["cover_recall"]
    assert unet["BSD XC41136"]["cover_recall"] >= 0.8 > base["BSD XC41136"]["cover_recall"]
    event_ceiling = result["event_ceiling"]  # the truth masks' own regions against the per-call boxes
    assert event_ceiling["n_ref"] == sum(r["n_calls"] for r in records) > 0 and 0 < event_ceiling["f1"] < 1
    # outputs: tables printed and written, a long Parquet table, predictions cached per checkpoint
    assert "| U-Net (default model) |" in printed and "U-Net (the report's own)" in printed
    margin = result["differences"][accuracy.BASELINE]["all"]
    assert margin[0] == pytest.approx(
        result["synthetic"][names[0]]["all"]["iou"] - result["synthetic"][names[1]]["all"]["iou"]
    )
    assert margin[1] <= margin[0] <= margin[2]
    assert f"| U-Net (default model) − {accuracy.BASELINE} |" in printed
    assert "| model | band | IoU | IoU, edges forgiven (2 px) |" in printed
    # calls by type (the synthetic labels end in it), each type's count over the bands adding up
    assert "| call type | " in printed
    kinds = {}
    for label, c in result["synthetic"][names[0]]["all"]["labels"].items():
        kinds[label.rsplit("-", 1)[-1]] = kinds.get(label.rsplit("-", 1)[-1], 0) + c["events"]
    assert sum(kinds.values()) == event_ceiling["n_ref"] and all(f"| {k} | " in printed for k in kinds)
    assert (out / "accuracy.md").read_text().strip() in printed
    t = pq.read_table(out / "accuracy.parquet").to_pylist()
    assert len(t) == sum(len(result["synthetic"][n]) + len(accuracy.REAL_SETS) for n in names)
    row = next(r for r in t if r["model"] == accuracy.BASELINE and r["subset"] == "Bengalese finch")
    assert row["f1"] == pytest.approx(base["Bengalese finch"]["f1"])
    row = next(r for r in t if r["model"] == accuracy.BASELINE and r["subset"] == "all")
    assert row["iou_edge_tolerant"] == pytest.approx(result["synthetic"][accuracy.BASELINE]["all"]["iou_edge_tolerant"])
    model_id = checkpoint.read_checkpoint(None).model_id
    assert (out / "pred" / model_id).is_dir()
    # the ceiling benchmark on the same recordings: the oracle that knows the background's power
    # over the truth's own 3 x 3 patch is the truth; averaged over 1 x 31 it is not. Its sorting
    # of the model's errors counts the same pixels as the evaluation
    [pred] = (out / "pred" / model_id).glob("test-*")
    c = ceiling.run(4, accuracy.TEST_SEED, (3.0, 4.0), [(3, 3), (1, 31)], pred_dir=str(pred))
    assert c["ceiling"][((3, 3), "all")][1:].tolist() == [0, 0]
    assert 0.5 < ceiling._iou(c["ceiling"][((1, 31), "all")]) < 1
    unet_all = result["synthetic"][names[0]]["all"]
    assert c["errors"][("missed", "all")][2] == unet_all["px_fn"]
    assert c["errors"][("false alarm", "all")][2] == unet_all["px_fp"]
    assert c["errors"][("missed", "all")][0].sum() == unet_all["px_fn"]  # every miss lies in some call
    assert c["by_row"]["model"].sum(axis=1).tolist() == [unet_all["px_tp"], unet_all["px_fp"], unet_all["px_fn"]]
    assert c["by_row"][(3, 3)][1:].sum() == 0
    misses = sum(c["misses_by_freq"].values())  # every row falls in one frequency range
    assert (misses[:, 0].sum(axis=1) == unet_all["px_tp"] + unet_all["px_fn"]).all()
    assert (misses[:, 1].sum(axis=1) == unet_all["px_fn"]).all()
    again = accuracy.main(["--out", str(out), "--test-n", "4", "--real", str(small_real), "--threads", "1"])
    assert again["synthetic"] == result["synthetic"] and again["real"] == result["real"]


def test_real_plots(small_real, tmp_path):
    ckpt = checkpoint.read_checkpoint(None)
    shown = real_plots.RECORDINGS[3]  # BSD: a reference mask with its regions
    path, n = real_plots.render(shown, small_real, ckpt, tmp_path)
    assert n > 0 and path.stat().st_size <= real_plots.MAX_BYTES
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    half = img.shape[0] // 2
    red = (img[..., 0] > 200) & (img[..., 1] < 100) & (img[..., 2] < 100)
    cyan = (img[..., 0] < 100) & (img[..., 1] > 170) & (img[..., 2] > 170)
    assert red[:half].sum() > 200 and red[half:].sum() == 0
    assert cyan[half:].sum() > 1000 and cyan[:half].sum() == 0
