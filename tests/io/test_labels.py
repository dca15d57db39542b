"""Label readers on the real files, label -> mask geometry to the pixel, BSD mask remapping,
label discovery by file name, and clear errors for malformed files. No Ray."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from PIL import Image

from raybird.dsp.spectrogram import PRESETS, SpecConfig, frame_times, row_freqs, spectrogram
from raybird.io import label_files, label_masks, labels
from raybird.io.labels import Box, GridMask

DEFAULT = PRESETS["default"]
# A second grid: no centring (frame centres half a window in), other rate, fmin 0.
UNCENTRED = SpecConfig(sample_rate=32000, n_fft=256, win_length=256, hop_length=64, center=False, fmin=0.0)
N_FRAMES = 200


@pytest.mark.parametrize("cfg", [DEFAULT, UNCENTRED], ids=["default", "uncentred"])
def test_box_on_pixel_centres_maps_to_exactly_those_pixels(cfg, tmp_path):
    t = frame_times(N_FRAMES, cfg)
    f = row_freqs(cfg)
    box = Box(t[10], t[20], f[4], f[29], "x")
    path = tmp_path / "a.Table.1.selections.txt"
    labels.write_raven(path, [box])
    (read,) = labels.read_raven(path)
    assert read == dataclasses.replace(box, channel=0)
    mask = label_masks.boxes_to_mask([read], cfg, N_FRAMES)
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    assert (cols[0], cols[-1], len(cols)) == (10, 20, 11)
    assert (rows[0], rows[-1], len(rows)) == (4, 29, 26)
    assert mask.sum() == 11 * 26  # a filled rectangle, nothing else
    # the same box seen from a tile starting at frame 15: columns 0..5 of that tile
    tile = label_masks.boxes_to_mask([read], cfg, 50, first_frame=15)
    assert list(np.flatnonzero(tile.any(0))) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("cfg", [DEFAULT, UNCENTRED], ids=["default", "uncentred"])
def test_box_shorter_than_a_hop_and_narrower_than_a_bin_covers_one_pixel(cfg):
    t, f = frame_times(N_FRAMES, cfg), row_freqs(cfg)
    box = Box(t[30] + 0.2 * cfg.frame_s, t[30] + 0.4 * cfg.frame_s, f[7] + 0.1 * cfg.bin_hz, f[7] + 0.2 * cfg.bin_hz)
    mask = label_masks.boxes_to_mask([box], cfg, N_FRAMES)
    assert list(zip(*np.nonzero(mask))) == [(7, 30)]


def test_time_only_audacity_labels_are_full_band_columns(tmp_path):
    t = frame_times(N_FRAMES, DEFAULT)
    path = tmp_path / "song.txt"
    path.write_text(f"{float(t[5])!r}\t{float(t[8])!r}\ta\n{float(t[40])!r}\t{float(t[41])!r}\tb c\n")
    boxes = labels.read_audacity(path)
    assert [(b.label, b.low_hz, b.high_hz, b.channel) for b in boxes] == [
        ("a", None, None, None),
        ("b c", None, None, None),
    ]
    mask = label_masks.boxes_to_mask(boxes, DEFAULT, N_FRAMES, channel=1)  # no channel: drawn on every one
    assert list(np.flatnonzero(mask.any(0))) == [5, 6, 7, 8, 40, 41]
    assert mask[:, [5, 6, 7, 8, 40, 41]].all()


def test_audacity_spectral_selection_lines(tmp_path):
    # Audacity writes "\<TAB>low<TAB>high" after a label; -1 is an undefined frequency;
    # later backslash lines are reserved for future fields; "\t" typed literally also works.
    path = tmp_path / "spectral.txt"
    path.write_text(
        "1.0\t2.0\tfirst\n\\\t1000.5\t4000\n\\\tfuture\tfield\n"
        "3.0\t3.5\tsecond\n\\\t-1\t2500\n"
        "4.0\tpoint label\n"
        "5.0\t6.0\tthird\n\\t300\t900\n"
    )
    assert labels.read_audacity(path) == [
        Box(1.0, 2.0, 1000.5, 4000.0, "first"),
        Box(3.0, 3.5, None, 2500.0, "second"),
        Box(4.0, 4.0, None, None, "point label"),
        Box(5.0, 6.0, 300.0, 900.0, "third"),
    ]


def test_bengalese_finch_601_syllables(real_data):
    files = sorted((real_data / "bengalese_finch").glob("*.txt"))
    boxes = [labels.read_audacity(p) for p in files]
    assert len(files) == 10 and sum(map(len, boxes)) == 601
    for p, bs in zip(files, boxes):
        duration = sf.info(str(p.with_suffix(".wav"))).duration
        assert all(0 <= b.begin_s < b.end_s <= duration and b.low_hz is None and b.label for b in bs)
        assert all(a.end_s <= b.begin_s for a, b in zip(bs, bs[1:]))  # syllables do not overlap
    assert boxes[0][0] == Box(1.277781, 1.351219, label="i")
    assert label_files.find_labels(files[0].with_suffix(".wav")) == boxes[0]


def test_raven_real_table(real_data):
    (path,) = (real_data / "raven_format").glob("*.selections.txt")
    boxes = labels.read_raven(path)
    assert len(boxes) == 10
    assert boxes[0] == Box(1.897648165999982, 4.110570810999974, 1326.3, 3266.5, "WOTH", 0)
    assert boxes[-1].label == "" and [b.label for b in boxes].count("EATO") == 4


def test_raven_skips_waveform_view_and_keeps_channels(tmp_path):
    path = tmp_path / "r.selections.txt"
    path.write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\n"
        "1\tWaveform 1\t2\t1.0\t2.0\t100\t200\n"
        "1\tSpectrogram 1\t2\t1.0\t2.0\t100\t200\n"
    )
    boxes = labels.read_raven(path)
    assert boxes == [Box(1.0, 2.0, 100.0, 200.0, "", 1)]
    assert label_masks.boxes_to_mask(boxes, DEFAULT, 400, channel=0).sum() == 0
    assert (
        label_masks.boxes_to_mask(boxes, DEFAULT, 400, channel=1).sum() == 2 * 172
    )  # bins 3-4 (129, 172 Hz) x frames 173..344 (1-2 s)


def test_raven_round_trip_keeps_time_only_boxes(tmp_path):
    boxes = [
        Box(0.1, 0.25, 300.0, 4000.0, "a", 0),
        Box(0.5, 0.7, label="time only", channel=1),
        Box(1 / 3, 2 / 3, 1e3 / 3, 2e3 / 3, "thirds", 0),
    ]
    path = tmp_path / "x.Table.1.selections.txt"
    labels.write_raven(path, boxes)
    assert labels.read_raven(path) == sorted(boxes, key=lambda b: b.begin_s)


def test_storm_petrel_boxes_in_seconds_and_hz(real_data):
    boxes = labels.read_sonic_visualiser(real_data / "pykanto/storm_petrel/XC663885.xml")
    assert len(boxes) == 5
    first = boxes[0]
    assert first.begin_s == pytest.approx(26280 / 44100) and first.end_s == pytest.approx((26280 + 65600) / 44100)
    assert first.low_hz == 0.0  # value -379.953 clamped
    assert first.high_hz == pytest.approx(-379.953 + 9814.04)
    assert boxes[1].low_hz == pytest.approx(180.32) and boxes[1].high_hz == pytest.approx(180.32 + 10713.4)
    other = labels.read_sonic_visualiser(real_data / "pykanto/storm_petrel/XC46092.xml")
    assert len(other) == 6 and max(b.high_hz for b in other) == pytest.approx(9420.05)  # the model's maximum
    assert label_files.find_labels(real_data / "pykanto/storm_petrel/XC46092.wav") == other


def test_all_great_tit_json(real_data):
    files = sorted((real_data / "pykanto/great_tit/JSON").glob("*.JSON"))
    assert len(files) == 20
    for p in files:
        wav = p.parent.parent / "WAV" / (p.stem + ".wav")
        (box,) = label_files.find_labels(wav)
        assert box.begin_s == 0.0 and box.end_s == pytest.approx(sf.info(str(wav)).duration)
        assert 1500 < box.low_hz < box.high_hz < 7500
        assert labels.read_kanto_json(p)[0].low_hz == box.low_hz
    # onsets/offsets, where present, give one box per unit in the song's band
    units = labels.read_kanto_json(
        "unit.JSON", b'{"lower_freq": 2000, "upper_freq": 6000, "onsets": [0.1, 0.5], "offsets": [0.3, 0.6]}'
    )
    assert units == [Box(0.1, 0.3, 2000.0, 6000.0), Box(0.5, 0.6, 2000.0, 6000.0)]


@pytest.fixture(scope="module")
def bsd(real_data) -> tuple[Path, GridMask]:
    folder = real_data / "bsd_sample/Test"
    return folder, labels.read_bsd_mask(folder, "XC41136")


def test_bsd_mask_and_decoder_delay(bsd):
    folder, gm = bsd
    assert gm.mask.shape == (1024, 3032) and gm.mask.dtype == np.uint8
    assert set(np.unique(gm.mask)) == {0, 1} and gm.mask.sum() == 324694
    assert gm.time_shift_s * 48000 == pytest.approx(528)  # MP3 decoder delay, measured
    found = label_files.find_labels(folder / "Raw_audios/XC41136.wav")
    assert isinstance(found, GridMask) and np.array_equal(found.mask, gm.mask)


def test_remap_identity_on_same_grid(bsd):
    _, gm = bsd
    aligned = dataclasses.replace(gm, time_shift_s=0.0)
    assert np.array_equal(label_masks.remap_mask(aligned, gm.cfg, 0, 3032), gm.mask)
    # a tile of it, and a shift of 528 samples = 8.25 frames -> 8 columns later
    assert np.array_equal(label_masks.remap_mask(aligned, gm.cfg, 1000, 512), gm.mask[:, 1000:1512])
    shifted = label_masks.remap_mask(gm, gm.cfg, 0, 3032)
    assert np.array_equal(shifted[:, 8:], gm.mask[:, :-8]) and not shifted[:, :8].any()
    # one-sided grid onto itself (truth masks)
    rng = np.random.default_rng(0)
    m = (rng.random((DEFAULT.n_rows, 300)) < 0.3).astype(np.uint8)
    assert np.array_equal(label_masks.label_mask(GridMask(m, DEFAULT), DEFAULT, 0, 300), m)


def test_remap_bsd_onto_default_keeps_the_extent(bsd):
    _, gm = bsd
    src_cols = np.flatnonzero(gm.mask.any(0))
    src_t = frame_times(3032, gm.cfg)[[src_cols[0], src_cols[-1]]] + gm.time_shift_s
    n = int(np.ceil((src_t[1] + 0.1) / DEFAULT.frame_s))
    out = label_masks.label_mask(gm, DEFAULT, 0, n)
    cols = np.flatnonzero(out.any(0))
    dst_t = frame_times(n, DEFAULT)[[cols[0], cols[-1]]]
    assert abs(dst_t[1] - src_t[1]) <= DEFAULT.frame_s
    # The mask starts with a sliver thinner than one default hop (columns 46, 48-51, 2-6 rows at
    # 3.4 kHz) that nearest-neighbour sampling steps over: the start is 7.6 ms (1.3 hops) late.
    assert abs(dst_t[0] - src_t[0]) <= 1.5 * DEFAULT.frame_s
    # frequency extent: the positive half's highest bird row, within one bin
    top_src = row_freqs(gm.cfg)[np.flatnonzero(gm.mask.any(1))[0]]
    top_dst = row_freqs(DEFAULT)[np.flatnonzero(out.any(1))[-1]]
    assert abs(top_dst - top_src) <= max(DEFAULT.bin_hz, gm.cfg.bin_hz)
    # nearest-neighbour sampling keeps the bird fraction of the band both grids cover
    f = row_freqs(gm.cfg)
    band = gm.mask[(f >= DEFAULT.fmin) & (f <= DEFAULT.sample_rate / 2)][:, src_cols[0] : src_cols[-1] + 1]
    assert out[:, cols[0] : cols[-1] + 1].mean() == pytest.approx(band.mean(), abs=0.01)


def test_remap_solid_block_keeps_its_extent_within_half_a_hop():
    # a gap-free block on the bsd grid, shifted by 528 samples, onto the default grid
    src = PRESETS["bsd"]
    m = np.zeros((src.n_rows, 3000), np.uint8)
    rows = np.abs(row_freqs(src)) <= 5000
    rows &= np.abs(row_freqs(src)) >= 2000
    m[rows, 1000:1777] = 1
    gm = GridMask(m, src, 528 / 48000)
    out = label_masks.remap_mask(gm, DEFAULT, 0, 800)
    cols, got_rows = np.flatnonzero(out.any(0)), np.flatnonzero(out.any(1))
    t_src = frame_times(3000, src)[[1000, 1776]] + gm.time_shift_s
    t_dst = frame_times(800, DEFAULT)[[cols[0], cols[-1]]]
    assert np.abs(t_dst - t_src).max() <= DEFAULT.frame_s / 2 + src.frame_s / 2
    assert out[:, cols[0] : cols[-1] + 1].all(axis=1).sum() == len(got_rows)  # a filled rectangle
    f_dst = row_freqs(DEFAULT)[got_rows[[0, -1]]]
    f_src = np.sort(np.abs(row_freqs(src)[rows]))[[0, -1]]
    assert np.abs(f_dst - f_src).max() <= (src.bin_hz + DEFAULT.bin_hz) / 2


def test_truth_round_trip_and_discovery(tmp_path):
    m = np.zeros((UNCENTRED.n_rows, 40), np.uint8)
    m[10:20, 5:9] = 1
    labels.write_truth(tmp_path / "rec.truth.npz", m, UNCENTRED)
    (tmp_path / "rec.txt").write_text("0.1\t0.2\tignored: the truth wins\n")
    gm = label_files.find_labels(tmp_path / "rec.wav")
    assert isinstance(gm, GridMask) and gm.cfg == UNCENTRED and np.array_equal(gm.mask, m)
    assert label_files.find_labels(tmp_path / "other.wav") is None


def test_discovery_in_archives_and_raven_table_names(tmp_path):
    # side files given as archive member names, read through a dict (as ingest does)
    members = {
        "d/XC1.Table.1.selections.txt": b"Begin Time (s)\tEnd Time (s)\n1\t2\n",
        "d/XC1.txt": b"5\t6\tnot this one\n",
    }
    got = label_files.load_labels("a.tar::d/XC1.wav", list(members), members.__getitem__)
    assert got == [Box(1.0, 2.0, channel=0)]
    assert label_files.load_labels("a.tar::d/XC2.wav", list(members), members.__getitem__) is None
    # a folder name with glob characters does not confuse the matching
    odd = tmp_path / "[x]*"
    odd.mkdir()
    (odd / "s.selections.txt").write_text("Begin Time (s)\tEnd Time (s)\n0.5\t0.75\n")
    assert label_files.find_labels(odd / "s.wav") == [Box(0.5, 0.75, channel=0)]


def test_bsd_layout_in_an_archive_without_denoised_audio(bsd):
    folder, gm = bsd
    png = (folder / "Masks/XC41136.png").read_bytes()
    members = {"Test/Masks/XC41136.png": png}
    got = label_files.load_labels("bsd.zip::Test/Raw_audios/XC41136.wav", list(members), members.__getitem__)
    assert np.array_equal(got.mask, gm.mask) and got.time_shift_s == 0.0
    # the same mask file next to a recording in any other folder is not a label
    assert label_files.load_labels("bsd.zip::Test/Images/XC41136.wav", list(members), members.__getitem__) is None


def test_refine_by_energy_narrows_time_only_columns():
    spec = np.zeros((DEFAULT.n_rows, 20), np.float32)
    spec[50:60, 5:10] = 0.8  # the call
    spec[:, 10:13] = 0.05  # labelled but silent: nothing clears the floor + margin,
    spec[100, 10:13] = 0.06  # so each column keeps its loudest row
    box_mask = np.zeros_like(spec, np.uint8)
    box_mask[30:40, 15:18] = 1  # a box label: left alone
    mask = np.maximum(
        label_masks.boxes_to_mask([Box(frame_times(20, DEFAULT)[5], frame_times(20, DEFAULT)[12])], DEFAULT, 20),
        box_mask,
    )
    out = label_masks.refine_by_energy(mask, spec)
    assert np.array_equal(np.flatnonzero(out[:, 5:10].any(1)), np.arange(50, 60))
    assert np.array_equal(np.argwhere(out[:, 10:13]), [[100, 0], [100, 1], [100, 2]])
    assert not out[:, :5].any() and not out[:, 13:15].any()
    assert np.array_equal(out[:, 15:18], box_mask[:, 15:18])


def test_refine_by_energy_on_finch_song(real_data):
    wav = sorted((real_data / "bengalese_finch").glob("*.wav"))[0]
    x, sr = sf.read(str(wav), dtype="float32")
    spec = spectrogram(soxr.resample(x, sr, DEFAULT.sample_rate), DEFAULT)
    mask = label_masks.boxes_to_mask(label_files.find_labels(wav), DEFAULT, spec.shape[1])
    out = label_masks.refine_by_energy(mask, spec)
    labelled = mask.any(0)
    assert np.array_equal(out.any(0), labelled) and not out[:, ~labelled].any()
    assert 0.1 < out.sum() / mask.sum() < 0.5  # about a quarter of each syllable's column is song
    assert spec[out > 0].mean() > 2 * spec[(mask > 0) & (out == 0)].mean()


@pytest.mark.parametrize(
    "reader, name, content, problem",
    [
        (labels.read_raven, "bad.selections.txt", "Start\tStop\n1\t2\n", "Begin Time"),
        (
            labels.read_raven,
            "bad.selections.txt",
            "Begin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\n1\tabc\t1\t2\n",
            "line 2",
        ),
        (labels.read_raven, "bad.selections.txt", "Begin Time (s)\tEnd Time (s)\n2\t1\n", "before begin"),
        (labels.read_audacity, "bad.txt", "1.0\t2.0\ta\nhello\t3\tb\n", "line 2"),
        (labels.read_audacity, "bad.txt", "\\\t100\t200\n", "before any label"),
        (labels.read_audacity, "bad.txt", "1\t2\ta\n\\\t500\t100\n", "below low"),
        (labels.read_kanto_json, "bad.JSON", "{not json", "not valid JSON"),
        (labels.read_kanto_json, "bad.JSON", '{"upper_freq": 5}', "lower_freq"),
        (labels.read_sonic_visualiser, "bad.xml", "<sv><data>", "not valid XML"),
        (labels.read_sonic_visualiser, "bad.xml", "<html/>", "not a Sonic Visualiser"),
        (
            labels.read_sonic_visualiser,
            "bad.xml",
            '<sv><data><model id="1" sampleRate="44100" dataset="0"/><dataset id="0">'
            '<point frame="x" duration="10"/></dataset></data></sv>',
            "frame",
        ),
        (labels.read_truth, "bad.truth.npz", "not a zip", "not a readable .npz"),
    ],
)
def test_malformed_files_raise_value_error_naming_the_file(tmp_path, reader, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as e:
        reader(path)
    assert str(path) in str(e.value)


def test_malformed_truth_and_bsd_masks(tmp_path):
    np.savez(tmp_path / "a.truth.npz", mask=np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match=r"a\.truth\.npz.*spec_config"):
        labels.read_truth(tmp_path / "a.truth.npz")
    np.savez(tmp_path / "b.truth.npz", mask=np.zeros((3, 4), np.uint8), spec_config=DEFAULT.to_json())
    with pytest.raises(ValueError, match=r"b\.truth\.npz.*256 rows"):
        labels.read_truth(tmp_path / "b.truth.npz")
    (tmp_path / "Masks").mkdir()
    (tmp_path / "Masks/c.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"c\.png.*not a readable PNG"):
        labels.read_bsd_mask(tmp_path, "c")
    Image.fromarray(np.zeros((100, 50), np.uint8)).save(tmp_path / "Masks/d.png")
    with pytest.raises(ValueError, match=r"d\.png.*100 rows"):
        labels.read_bsd_mask(tmp_path, "d")


# ---- formats read through crowsetta ----------------------------------------------------------------
TEXTGRID = """File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 2
tiers? <exists>
size = 1
item []:
    item [1]:
        class = "IntervalTier"
        name = "syllables"
        xmin = 0
        xmax = 2
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.25
            text = ""
        intervals [2]:
            xmin = 0.25
            xmax = 0.5
            text = "a"
        intervals [3]:
            xmin = 0.5
            xmax = 1.125
            text = ""
        intervals [4]:
            xmin = 1.125
            xmax = 2
            text = "b"
"""


def _notmat(path: Path) -> None:
    import scipy.io

    scipy.io.savemat(
        path,
        dict(
            Fs=32000.0,
            fname=path.name[: -len(".not.mat")],
            labels="ab",
            onsets=np.array([250.0, 1125.0]),
            offsets=np.array([500.0, 2000.0]),
            min_dur=10.0,
            min_int=5.0,
            offset=0.0,
            threshold=5000.0,
            sm_win=2.0,
        ),
    )


@pytest.mark.parametrize("kind", ["textgrid", "notmat", "simple_seq"])
def test_formats_read_through_crowsetta_are_found_next_to_the_audio(tmp_path, kind):
    audio = tmp_path / "song.wav"
    sf.write(audio, np.zeros(16000 * 2, np.float32), 16000)
    if kind == "textgrid":
        (tmp_path / "song.TextGrid").write_text(TEXTGRID)
    elif kind == "notmat":
        _notmat(tmp_path / "song.wav.not.mat")
    else:
        (tmp_path / "song.csv").write_text("onset_s,offset_s,label\n0.25,0.5,a\n1.125,2.0,b\n")
    want = [Box(0.25, 0.5, label="a"), Box(1.125, 2.0, label="b")]
    assert label_files.find_labels(audio) == want
    # the same from bytes (an S3 object or archive member), as ingest reads it
    side = [str(p) for p in tmp_path.iterdir() if p != audio]
    assert label_files.load_labels(str(audio), side, lambda p: Path(p).read_bytes()) == want


def test_a_broken_textgrid_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "song.TextGrid").write_text(TEXTGRID.replace("xmax = 0.5", "xmax = x"))
    with pytest.raises(ValueError, match="song.TextGrid"):
        labels.read_crowsetta(tmp_path / "song.TextGrid", fmt="textgrid")


def test_class_names_and_class_maps_of_box_labels():
    cfg = SpecConfig(sample_rate=16000, n_fft=256, win_length=256, hop_length=128, tile_frames=128, tile_overlap=32)
    boxes = [
        labels.Box(0.1, 0.3, 1000.0, 3000.0, "b"),
        labels.Box(0.2, 0.5, 2000.0, 4000.0, " a "),
        labels.Box(0.6, 0.7, None, None, ""),
    ]
    assert label_masks.class_names(boxes) == ["b", "a", label_masks.BIRD]
    assert label_masks.class_names([labels.Box(0.1, 0.2), labels.Box(0.3, 0.4)]) == []  # binary labels
    names = label_masks.class_names(boxes)
    classes = label_masks.boxes_to_classes(boxes, names, cfg, 100)
    mask = label_masks.boxes_to_mask(boxes, cfg, 100)
    np.testing.assert_array_equal(classes > 0, mask > 0)
    assert set(np.unique(classes)) == {0, 1, 2, 3}
    frame = int(0.25 * cfg.sample_rate / cfg.hop_length)  # both boxes; 2.5 kHz is in both: the later one
    row = int(round(2500 / cfg.bin_hz))
    assert classes[row, frame] == 2 and classes[int(round(1200 / cfg.bin_hz)), frame] == 1
    assert (classes[:, int(0.65 * cfg.sample_rate / cfg.hop_length)] == 3).all()  # time-only: full band
    with pytest.raises(ValueError, match="at most 255"):
        label_masks.class_names([labels.Box(0.0, 0.1, label=str(i)) for i in range(256)])
