"""Stitching, segments, grouping, mask encoding and denoising on synthetic arrays (no Ray)."""

import numpy as np
import pytest
import scipy.ndimage

from raybird.dsp.denoise import denoise, iter_denoised
from raybird.dsp.spectrogram import PRESETS, SpecConfig, frame_offset_s, iter_tiles, magnitude, n_frames_for, row_freqs
from raybird.evaluation.field_scores import box_iou
from raybird.inference import postprocess as pp
from raybird.inference.grouping import GROUP_OVERLAP, group_boxes
from raybird.io import tables

CFG = SpecConfig(sample_rate=16000, n_fft=256, win_length=256, hop_length=128, tile_frames=128, tile_overlap=32)


def tiles_of(prob: np.ndarray, cfg: SpecConfig):
    """Cut a full probability map into tiles with iter_tiles' geometry: (index, valid, tile)."""
    n = prob.shape[1]
    out, k = [], 0
    while k * cfg.tile_step < n:
        first = k * cfg.tile_step
        tile = np.zeros((prob.shape[0], cfg.tile_frames), prob.dtype)
        got = prob[:, first : first + cfg.tile_frames]
        tile[:, : got.shape[1]] = got
        out.append((k, got.shape[1], tile))
        k += 1
    return out


def stitch(prob: np.ndarray, cfg: SpecConfig, spoil_edges: bool = True, **kw) -> pp.Segmenter:
    """Stitch tiles of ``prob`` through a Segmenter; the columns a tile must not contribute
    are spoilt first, so using them would change the result."""
    seg = pp.Segmenter(cfg, **kw)
    rng = np.random.default_rng(0)
    for k, valid, tile in tiles_of(prob, cfg):
        keep = pp.kept_columns(k, valid, cfg)
        if spoil_edges:
            tile = tile.copy()
            tile[:, : keep.start] = 0.0  # would cut a call in two
            tile[:, keep.stop :] = rng.random((tile.shape[0], tile.shape[1] - keep.stop))  # would add blobs
        seg.add(tile[:, keep], first_frame=k * cfg.tile_step + keep.start)
    return seg


@pytest.mark.parametrize("cfg", [CFG, CFG.replace(tile_overlap=33), CFG.replace(tile_overlap=0), PRESETS["default"]])
def test_kept_columns_cover_every_frame_exactly_once(cfg):
    for n_samples in (1, 1000, cfg.tile_frames * cfg.hop_length, 123457):
        covered = []
        for tile in iter_tiles([np.zeros((1, n_samples), np.float32)], cfg):
            keep = pp.kept_columns(tile.index, tile.valid_frames, cfg)
            covered += range(tile.first_frame + keep.start, tile.first_frame + keep.stop)
        assert covered == list(range(n_frames_for(n_samples, cfg))), n_samples


def test_call_across_tile_boundary_is_one_segment_with_exact_box():
    rows, frames = CFG.n_rows, 700
    prob = np.full((rows, frames), 0.05, np.float32)
    t = np.arange(80, 221)  # crosses tile 0's end (128), tile 1's start (96) and the seam (112)
    centre = (40 + 0.3 * (t - 80)).round().astype(int)
    for dt, c in zip(t, centre):
        prob[c - 1 : c + 2, dt] = 0.6 + 0.3 * ((dt % 7) / 7)
    seg = stitch(prob, CFG, threshold=0.5)
    segs = seg.finish()
    assert len(segs) == 1
    s = segs[0]
    assert (s.first_frame, s.last_frame, s.low_row, s.high_row) == (80, 220, 39, centre[-1] + 1)
    off, f = frame_offset_s(CFG), row_freqs(CFG)
    assert s.start_s == pytest.approx(off + 80 * CFG.frame_s - CFG.frame_s / 2, abs=1e-12)
    assert s.end_s == pytest.approx(off + 220 * CFG.frame_s + CFG.frame_s / 2, abs=1e-12)
    assert s.low_hz == pytest.approx(f[39] - CFG.bin_hz / 2)
    assert s.high_hz == pytest.approx(f[centre[-1] + 1] + CFG.bin_hz / 2)
    blob = prob >= 0.5
    assert s.n_pixels == blob.sum() and s.score == pytest.approx(prob[blob].mean(), rel=1e-6)
    assert seg.n_frames == frames
    np.testing.assert_array_equal(tables.decode_mask(seg.mask_bytes(), rows, frames), blob)


def test_last_tile_inside_the_previous_overlap_adds_nothing():
    frames = 6 * CFG.tile_step + 10  # tile 6 holds 10 frames, all in tile 5's overlap
    assert pp.kept_columns(6, 10, CFG) == slice(CFG.tile_overlap // 2, CFG.tile_overlap // 2)
    prob = np.zeros((CFG.n_rows, frames), np.float32)
    prob[30:33, frames - 40 :] = 0.9  # a call running to the very end
    seg = stitch(prob, CFG)
    assert seg.n_frames == frames
    (s,) = seg.finish()
    assert (s.first_frame, s.last_frame) == (frames - 40, frames - 1)


def test_streaming_labelling_equals_whole_map_labelling():
    rng = np.random.default_rng(3)
    prob = scipy.ndimage.uniform_filter(rng.random((64, 900)), 3)  # blobs of every shape, many cross chunks
    whole = pp.segments_of(prob, CFG, threshold=0.55, group_overlap=None)
    _, n_regions = scipy.ndimage.label(prob >= 0.55, structure=np.ones((3, 3)))
    assert len(whole) == n_regions > 50
    edges = np.unique(np.r_[0, rng.integers(1, 900, 40), 900])
    for group_overlap in (None, GROUP_OVERLAP):
        seg = pp.Segmenter(CFG, threshold=0.55, group_overlap=group_overlap)
        for a, b in zip(edges[:-1], edges[1:]):
            seg.add(prob[:, a:b], first_frame=a)
        assert seg.finish() == pp.segments_of(prob, CFG, threshold=0.55, group_overlap=group_overlap)
    assert len(seg.finish()) < len(whole)  # blobs stacked in time were grouped
    with pytest.raises(ValueError, match="contiguous"):
        seg.add(prob[:, :5], first_frame=3)


def test_min_duration_and_min_pixels_drop_small_regions():
    prob = np.zeros((CFG.n_rows, 400), np.float32)
    prob[50:53, 10:40] = 0.9  # 30 frames = 0.24 s, 90 px
    prob[20:30, 100:102] = 0.9  # 2 frames = 0.016 s, 20 px
    prob[90, 200:205] = 0.9  # 5 frames = 0.04 s, 5 px
    assert len(pp.segments_of(prob, CFG)) == 3
    kept = pp.segments_of(prob, CFG, min_duration_s=0.02)
    assert [s.first_frame for s in kept] == [10, 200]
    kept = pp.segments_of(prob, CFG, min_duration_s=0.02, min_pixels=6)
    assert [s.first_frame for s in kept] == [10]


def test_segment_ids_are_in_time_order():
    prob = np.zeros((CFG.n_rows, 300), np.float32)
    # raster order (row-major) of ndimage.label would number these 2, 1, 0
    for r, t in ((100, 20), (60, 120), (10, 220)):
        prob[r : r + 4, t : t + 10] = 1.0
    segs = pp.segments_of(prob, CFG)
    assert [s.segment_id for s in segs] == [0, 1, 2]
    assert [s.first_frame for s in segs] == [20, 120, 220]
    assert [s.low_row for s in segs] == [100, 60, 10]


def test_two_sided_config_segments_only_non_negative_frequencies():
    cfg = SpecConfig(
        sample_rate=16000,
        n_fft=64,
        win_length=64,
        hop_length=32,
        fmin=0.0,
        two_sided=True,
        tile_frames=64,
        tile_overlap=0,
    )
    f = row_freqs(cfg)
    prob = np.zeros((cfg.n_rows, 50), np.float32)
    band = (np.abs(f) >= 2000) & (np.abs(f) <= 3000)  # a tone and its mirror image
    prob[band, 10:30] = 1.0
    segs = pp.segments_of(prob, cfg)
    assert len(segs) == 1
    assert segs[0].low_hz == pytest.approx(2000 - cfg.bin_hz / 2)
    assert segs[0].high_hz == pytest.approx(3000 + cfg.bin_hz / 2)


def test_box_is_clamped_to_recording_and_nyquist():
    prob = np.zeros((CFG.n_rows, 100), np.float32)
    prob[-3:, :5] = 1.0
    s = pp.segments_of(prob, CFG, duration_s=0.7)[0]
    assert s.start_s == 0.0 and s.high_hz == CFG.sample_rate / 2


def test_covered_seconds_is_the_union_of_spans():
    def seg(a, b):
        return pp.Segment(0, a, b, 0.0, 1.0, 1.0, 0, 0, 0, 0, 1)

    assert pp.covered_seconds([seg(0.0, 1.0), seg(0.5, 1.5), seg(3.0, 4.0), seg(3.2, 3.4)]) == pytest.approx(2.5)
    assert pp.covered_seconds([]) == 0.0


def rows_at(*hz):
    """The spectrogram rows nearest to frequencies (Hz) of CFG."""
    return [int(np.argmin(np.abs(row_freqs(CFG) - f))) for f in hz]


def test_harmonics_of_one_call_are_one_segment():
    prob = np.zeros((CFG.n_rows, 300), np.float32)
    r1, r2, r3, far = rows_at(1500, 3000, 4500, 7900)
    prob[r1 : r1 + 3, 20:80] = 0.9  # a stack: fundamental and two harmonics, silent bands between
    prob[r2 : r2 + 3, 22:80] = 0.7
    prob[r3 : r3 + 2, 30:70] = 0.6  # a faint upper harmonic, shorter: 40 of its frames all inside
    prob[r1 : r1 + 3, 90:130] = 0.9  # the next syllable follows after a gap: never grouped
    prob[far : far + 3, 95:130] = 0.8  # overlaps it in time, but 7.9 - 1.6 kHz apart in frequency
    assert len(pp.segments_of(prob, CFG, group_overlap=None)) == 5
    segs = pp.segments_of(prob, CFG)
    assert [(s.first_frame, s.last_frame) for s in segs] == [(20, 79), (90, 129), (95, 129)]
    stack = segs[0]
    assert (stack.low_row, stack.high_row) == (r1, r3 + 1)
    assert stack.low_hz == pytest.approx(row_freqs(CFG)[r1] - CFG.bin_hz / 2)
    assert stack.high_hz == pytest.approx(row_freqs(CFG)[r3 + 1] + CFG.bin_hz / 2)
    assert stack.n_pixels == 180 + 174 + 80
    assert stack.score == pytest.approx((180 * 0.9 + 174 * 0.7 + 80 * 0.6) / 434, rel=1e-6)
    # a wider gap allowance joins the far band; a stricter overlap keeps the short harmonic apart
    assert len(pp.segments_of(prob, CFG, group_gap_hz=7000)) == 2
    prob[r3 : r3 + 2, 30:70] = 0.0
    prob[r3 : r3 + 2, 60:100] = 0.6  # now only 20 of its 40 frames overlap the stack
    assert len(pp.segments_of(prob, CFG)) == 4


def test_group_boxes_rule_at_its_boundaries():
    # time overlap as a fraction of the shorter span, frequency gap in Hz; groups are transitive
    boxes = [
        (0.0, 1.0, 1000, 2000),
        (0.3, 1.0, 2500, 3000),  # 0.7 of the shorter: grouped
        (0.0, 1.0, 6000, 7000),  # 3000 Hz above box 1: grouped (<=)
        (2.0, 3.0, 1000, 2000),
        (2.31, 3.31, 1000, 2000),  # 0.69 of each: apart
        (5.0, 6.0, 1000, 2000),
        (5.0, 6.0, 5001, 6000),
    ]  # 3001 Hz apart: apart
    assert group_boxes(boxes, 0.7, 3000) == [[0, 1, 2], [3], [4], [5], [6]]
    assert group_boxes(boxes, 0.6, 3001) == [[0, 1, 2], [3, 4], [5, 6]]
    assert group_boxes([]) == []
    # a class model's boxes of one class, linked in time, are one event whatever the gap
    labels = ["a", "b", "b", "a", "a", "i", "i"]
    assert group_boxes(boxes, 0.7, 3000, labels=labels) == [[0, 1, 2], [3], [4], [5, 6]]
    assert group_boxes(boxes, 0.7, 100, labels=labels) == [[0], [1, 2], [3], [4], [5, 6]]


def test_merge_gap_links_a_songs_calls_at_its_boundaries():
    boxes = [
        (0.0, 0.2, 3000, 4000),
        (0.5, 0.7, 3500, 4500),  # 0.3 s of silence between them
        (1.0, 1.2, 2500, 3500),  # 0.3 s after box 1: the song goes on
        (1.51, 1.7, 3000, 4000),  # 0.31 s after box 2: a new song
        (1.6, 1.65, 7600, 8000),
    ]  # overlaps it in time, 3.6 kHz above
    assert group_boxes(boxes, 0.7, 3000) == [[0], [1], [2], [3], [4]]
    assert group_boxes(boxes, 0.7, 3000, merge_gap_s=0.3) == [[0, 1, 2], [3], [4]]
    assert group_boxes(boxes, None, 3000, merge_gap_s=0.31) == [[0, 1, 2, 3], [4]]
    assert group_boxes(boxes, None, 4000, merge_gap_s=0.31) == [[0, 1, 2, 3, 4]]
    assert group_boxes(boxes, None, 3000) == [[0], [1], [2], [3], [4]]  # both rules off


def test_a_songs_notes_become_one_segment_also_when_streamed():
    prob = np.zeros((CFG.n_rows, 400), np.float32)
    for t0 in (20, 70, 120):  # three notes, 45 frames of silence between them
        prob[40:50, t0 : t0 + 5] = 0.9
    prob[40:50, 200:205] = 0.9  # 75 frames after the last note: a song of its own
    hop = CFG.frame_s
    assert len(pp.segments_of(prob, CFG)) == 4
    song, lone = pp.segments_of(prob, CFG, merge_gap_s=46 * hop)
    assert (song.first_frame, song.last_frame, lone.first_frame) == (20, 124, 200)
    assert song.n_pixels == 150 and len(pp.segments_of(prob, CFG, merge_gap_s=44 * hop)) == 4
    seg = pp.Segmenter(CFG, merge_gap_s=46 * hop)
    for lo, hi in ((0, 60), (60, 130), (130, 400)):
        seg.add(prob[:, lo:hi], first_frame=lo)
    assert seg.finish() == [song, lone]


def test_box_iou():
    assert box_iou([(0, 2, 0, 2)], [(1, 3, 0, 2)])[0, 0] == pytest.approx(1 / 3)
    assert box_iou([(0, 1, 0, 1)], [(1, 2, 0, 1), (0, 1, 0, 1)]).tolist() == [[0.0, 1.0]]


# ---- denoising ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [CFG, PRESETS["bsd"], CFG.replace(win_length=200)])
def test_streamed_denoising_equals_whole_signal(cfg):
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal(int(cfg.sample_rate * 1.3) + 17).astype(np.float32)
    mask = (rng.random((cfg.n_rows, n_frames_for(len(x), cfg))) < 0.5).astype(np.uint8)
    whole = denoise(x, mask, cfg, chunk_frames=10**6)
    assert whole.shape == x.shape
    blocks = np.array_split(x[None], 7, axis=1)
    streamed = np.concatenate(list(iter_denoised(blocks, lambda g0, g1: mask[None, :, g0:g1], cfg, 37)), axis=1)
    np.testing.assert_allclose(streamed[0], whole, atol=1e-6)


def test_denoising_keeps_the_masked_call_and_removes_the_rest():
    rng = np.random.default_rng(2)
    sr, n = CFG.sample_rate, CFG.sample_rate * 2
    t = np.arange(n) / sr
    call = np.where((t > 0.5) & (t < 1.2), 0.3 * np.sin(2 * np.pi * 3000 * t), 0.0)
    x = (call + 0.05 * rng.standard_normal(n)).astype(np.float32)
    mask = np.zeros((CFG.n_rows, n_frames_for(n, CFG)), np.uint8)
    ft = frame_offset_s(CFG) + np.arange(mask.shape[1]) * CFG.frame_s
    mask[np.ix_(np.abs(row_freqs(CFG) - 3000) < 200, (ft > 0.45) & (ft < 1.25))] = 1
    y = denoise(x, mask, CFG)
    assert y.shape == x.shape
    e_in, e_out = magnitude(x, CFG) ** 2, magnitude(y, CFG) ** 2
    outside, inside = mask == 0, mask == 1
    assert e_out[outside].sum() < 0.02 * e_in[outside].sum()
    assert 0.7 < e_out[inside].sum() / e_in[inside].sum() < 1.1


def test_depth_cuts_cut_only_deep_gaps_between_louder_columns():
    assert pp.depth_cuts([50, 50, 20, 24, 50], 25) == [2]
    assert pp.depth_cuts([50, 20, 50, 40, 10, 60], 25) == [1, 4]
    assert pp.depth_cuts([50, 30, 50], 25) == []  # a 20-dB dip inside a call
    assert pp.depth_cuts([10, 50, 50, 10], 25) == []  # fading at an end is no gap
    assert pp.depth_cuts([50, 20, 40], 25) == []  # 20 dB under the louder side only


def test_level_db_reads_the_model_input_as_db():
    assert pp.level_db(np.array([0, 255], np.uint8), CFG).tolist() == [0.0, CFG.top_db]
    lin = PRESETS["bsd"]
    assert pp.level_db(np.array([1.0, 0.1], np.float32), lin) == pytest.approx([0.0, -20.0])


def test_split_depth_cuts_touching_syllables_at_their_gap_to_the_pixel():
    prob = np.zeros((CFG.n_rows, 300), np.float32)
    level = np.zeros_like(prob)
    prob[40:60, 20:50], level[40:60, 20:50] = 0.9, 0.9  # syllable A: 20 rows x 30 frames, 54 dB
    prob[45:55, 50:53] = 0.9  # the gap, smeared shut: 10 rows x 3 frames
    level[45:55, 50:53] = np.array([0.5, 0.35, 0.45])  # at 30, 21 and 27 dB
    prob[35:65, 53:90], level[35:65, 53:90] = 0.8, 0.8  # syllable B: 30 rows x 37 frames, 48 dB
    prob[100:102, 120:200], level[100:102, 120:200] = 0.9, 0.9  # a whistle with a 20-dB dip: never cut
    level[100:102, 150:160] = 0.9 - 20 / CFG.top_db
    assert [(s.first_frame, s.last_frame) for s in pp.segments_of(prob, CFG)] == [(20, 89), (120, 199)]
    a, b, whistle = pp.segments_of(prob, CFG, split_depth_db=25, level=level)
    # the quietest gap frame (51) is the gap: it belongs to neither syllable
    assert (a.first_frame, a.last_frame, a.low_row, a.high_row, a.n_pixels) == (20, 50, 40, 59, 20 * 30 + 10)
    assert (b.first_frame, b.last_frame, b.low_row, b.high_row, b.n_pixels) == (52, 89, 35, 64, 10 + 30 * 37)
    assert (whistle.first_frame, whistle.last_frame) == (120, 199)
    assert b.start_s - a.end_s == pytest.approx(CFG.frame_s)
    # the gap lies 27 dB under the quieter syllable: a 28-dB threshold keeps one region
    assert len(pp.segments_of(prob, CFG, split_depth_db=28, level=level)) == 2
    # streamed in chunks that cut through the gap and the syllables: the same segments and mask
    whole = pp.Segmenter(CFG)
    whole.add(prob)
    seg = pp.Segmenter(CFG, split_depth_db=25)
    for lo, hi in ((0, 51), (51, 52), (52, 70), (70, 300)):
        seg.add(prob[:, lo:hi], first_frame=lo, level=(level[:, lo:hi] * 255).round().astype(np.uint8))
    assert [(s.first_frame, s.last_frame, s.n_pixels) for s in seg.finish()] == [
        (s.first_frame, s.last_frame, s.n_pixels) for s in (a, b, whistle)
    ]
    assert seg.mask_bytes() == whole.mask_bytes()
    with pytest.raises(ValueError, match="input level"):
        pp.Segmenter(CFG, split_depth_db=25).add(prob)
