"""Segment edges refined on the audio: where a call starts and ends, not where the STFT window
first touches it; the same from any block size; left alone where there is nothing to go by."""

import numpy as np
import pytest

from raybird.dsp import boundaries
from raybird.inference.postprocess import Segment

SR = 22050


def burst_in_noise(onset: float, offset: float, duration: float = 2.0, freq: float = 4000.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = 0.001 * rng.standard_normal(int(duration * SR))
    a, b = int(onset * SR), int(offset * SR)
    x[a:b] += 0.3 * np.sin(2 * np.pi * freq * np.arange(b - a) / SR)
    return x.astype(np.float32)


def seg(start: float, end: float, low: float = 3000.0, high: float = 5000.0, k: int = 0) -> Segment:
    return Segment(k, start, end, low, high, 0.9, 0, 0, 0, 0, 1)


def test_edges_move_from_the_smeared_mask_to_the_sound():
    """The mask starts 9 ms early and ends 8 ms late (as a 23-ms window draws it): refined, both
    edges lie within 2.5 ms (half the 4-ms window and a step) of the call's."""
    x = burst_in_noise(0.5, 0.62)
    [[s]] = boundaries.refine([[seg(0.491, 0.628)]], [x[None]], SR)
    assert s.start_s == pytest.approx(0.5, abs=0.0025)
    assert s.end_s == pytest.approx(0.62, abs=0.0025)


def test_edges_are_the_same_whatever_the_block_size():
    x = burst_in_noise(0.5, 0.62, duration=3.0) + burst_in_noise(1.7, 1.78, duration=3.0, freq=3500.0, seed=1)
    segs = [seg(0.491, 0.628, k=0), seg(1.69, 1.79, k=1)]
    whole = boundaries.refine([segs], [x[None]], SR)
    for block in (1000, 4410, 30000):
        blocks = (x[None, i : i + block] for i in range(0, len(x), block))
        assert boundaries.refine([segs], blocks, SR) == whole
    assert [s.segment_id for s in whole[0]] == [0, 1]


@pytest.mark.parametrize("dip_ms, onset_ms", [(2, 0), (3, 13), (4, 14)])
def test_an_onset_keeps_a_soft_start_across_a_dip_shorter_than_a_gap(dip_ms, onset_ms):
    """A soft start (20 dB, 10 ms), a dip to 2 dB, then the loud part (30 dB): a dip shorter than
    MIN_GAP_S (3 steps of 1 ms) lies inside the sound and the onset stays at the soft start; a
    quiet run of 3 or 4 steps is a gap and the onset moves after it, to the loud part."""
    t = np.arange(-100, 100) / 1000  # 1-ms steps, t = 0 at index 100
    level = np.zeros_like(t)
    level[100:110] = 20.0
    level[110 : 110 + dip_ms] = 2.0
    level[110 + dip_ms : 180] = 30.0
    got = boundaries.edge_time(level, t, -0.005, onset=True)
    assert got == pytest.approx(onset_ms / 1000 - 0.0005, abs=1e-9)


@pytest.mark.parametrize("quiet_steps", [0, 1, 2])
def test_an_onset_with_fewer_quiet_steps_before_its_peak_than_a_gap_stays(quiet_steps):
    """A sound at the very start of the context (a recording that starts loud): no quiet run
    before the peak, so the onset stays where the mask put it."""
    t = np.round(np.arange(0.0, 0.2, 0.001), 6)
    level = np.where(t >= quiet_steps / 1000, 30.0, 0.0)
    level[150:] = 0.0  # the noise floor, after the sound
    assert boundaries.edge_time(level, t, 0.0, onset=True) == 0.0


def test_an_edge_stays_where_the_sound_gives_no_crossing_in_reach():
    """No contrast (pure noise), or sound all the way past the reach: the mask's edge is kept."""
    noise = burst_in_noise(0.0, 0.0)
    [[s]] = boundaries.refine([[seg(0.5, 0.6)]], [noise[None]], SR)
    assert (s.start_s, s.end_s) == (0.5, 0.6)
    long_call = burst_in_noise(0.2, 1.5)
    [[s]] = boundaries.refine([[seg(0.6, 0.9)]], [long_call[None]], SR)  # a piece cut out of a longer sound
    assert (s.start_s, s.end_s) == (0.6, 0.9)


def test_each_channel_is_refined_on_its_own_audio():
    left, right = burst_in_noise(0.5, 0.62), burst_in_noise(0.8, 0.9, seed=2)
    out = boundaries.refine([[seg(0.49, 0.63)], [seg(0.79, 0.91)]], [np.stack([left, right])], SR)
    assert out[0][0].start_s == pytest.approx(0.5, abs=0.0025) and out[1][0].start_s == pytest.approx(0.8, abs=0.0025)


def test_the_band_keeps_a_louder_sound_elsewhere_from_moving_the_edges():
    """Broadband-free loud hum at 500 Hz all through: the edges of a 4-kHz call are found in its band."""
    x = burst_in_noise(0.5, 0.62) + 0.5 * np.sin(2 * np.pi * 500.0 * np.arange(int(2.0 * SR)) / SR).astype(np.float32)
    [[s]] = boundaries.refine([[seg(0.491, 0.628)]], [x[None]], SR)
    assert s.start_s == pytest.approx(0.5, abs=0.0025) and s.end_s == pytest.approx(0.62, abs=0.0025)


def test_a_call_at_the_very_end_of_a_recording_keeps_its_offset():
    """Nothing past the recording's end counts as quiet: the noise level stays the recording's."""
    x = burst_in_noise(1.9, 1.985, duration=2.0)
    [[s]] = boundaries.refine([[seg(1.891, 2.0)]], [x[None]], SR)
    assert s.start_s == pytest.approx(1.9, abs=0.0025) and s.end_s == pytest.approx(1.985, abs=0.0025)
