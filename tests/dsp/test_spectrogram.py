"""Spectrogram geometry: exact frame/bin maps, streaming tiles equal the one-shot transform,
and the bsd preset reproduces the BirdSoundsDenoising images."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from PIL import Image

from raybird.dsp.spectrogram import (
    PRESETS,
    SpecConfig,
    frame_level_db,
    frame_times,
    freq_to_rows,
    get_config,
    iter_tiles,
    magnitude,
    n_frames_for,
    normalise,
    row_freqs,
    silent_frames,
    time_to_frames,
)
from raybird.io import audio

CFG = PRESETS["default"]


def test_default_grid_is_256_rows_and_tiles_fit_the_unet():
    assert CFG.n_rows == 256 and CFG.tile_frames % 32 == 0
    f = row_freqs(CFG)
    assert f[0] == pytest.approx(CFG.bin_hz) and f[-1] == pytest.approx(CFG.sample_rate / 2)
    assert CFG.frame_s == pytest.approx(128 / 22050)


@pytest.mark.parametrize("center", [True, False])
def test_a_tone_burst_lands_on_its_frames_and_bin(center):
    cfg = CFG.replace(center=center, norm="max")
    sr = cfg.sample_rate
    x = np.zeros(sr, np.float32)
    k = 93  # exact bin -> 4000.4 Hz
    t0, t1 = 0.30, 0.50
    n = np.arange(int(t0 * sr), int(t1 * sr))
    x[n] = np.sin(2 * np.pi * k * cfg.bin_hz * n / sr)
    mag = magnitude(x, cfg)
    assert mag.shape == (cfg.n_rows, n_frames_for(len(x), cfg))
    row = int(np.argmax(mag.sum(axis=1)))
    assert row_freqs(cfg)[row] == pytest.approx(k * cfg.bin_hz)
    # frames whose window lies entirely inside the burst carry its full energy
    times = frame_times(mag.shape[1], cfg)
    half = cfg.win_length / 2 / sr
    inside = (times - half >= t0) & (times + half <= t1)
    outside = (times + half < t0) | (times - half > t1)
    assert mag[row, inside].min() > 0.9 * mag[row].max()
    assert mag[row, outside].max() < 1e-3 * mag[row].max()


def test_time_and_frequency_maps_are_inclusive_of_exact_edges():
    cols = time_to_frames(10 * CFG.frame_s, 20 * CFG.frame_s, CFG, first_frame=0, n_frames=100)
    assert (cols.start, cols.stop) == (10, 21)
    cols = time_to_frames(10 * CFG.frame_s, 20 * CFG.frame_s, CFG, first_frame=15, n_frames=100)
    assert (cols.start, cols.stop) == (0, 6)
    tiny = time_to_frames(10.2 * CFG.frame_s, 10.4 * CFG.frame_s, CFG, 0, 100)
    assert (tiny.start, tiny.stop) == (10, 11)
    rows = np.flatnonzero(freq_to_rows(2 * CFG.bin_hz, 5 * CFG.bin_hz, CFG))
    assert list(row_freqs(CFG)[rows] / CFG.bin_hz) == pytest.approx([2, 3, 4, 5])


@pytest.mark.parametrize("block", [333, 4096, 10**6])
def test_streamed_tiles_equal_the_one_shot_transform(block):
    cfg = CFG.replace(tile_frames=64, tile_overlap=16)
    x = np.random.default_rng(1).standard_normal(3 * cfg.sample_rate + 77).astype(np.float32)
    tiles = list(iter_tiles((x[None, i : i + block] for i in range(0, len(x), block)), cfg))
    total = n_frames_for(len(x), cfg)
    assert [t.first_frame for t in tiles] == list(range(0, total, cfg.tile_step))
    assert tiles[-1].first_frame + tiles[-1].valid_frames == total
    for t in tiles:
        want = normalise(magnitude(x, cfg, t.first_frame, cfg.tile_frames), cfg, t.valid_frames)
        np.testing.assert_array_equal(t.spec[0], want)


def test_silence_is_zero_and_leaves_the_normalisation_of_the_rest_alone():
    """A 1-s zero-filled dropout in noise: its frames are silent and 0, and the other frames
    are normalised exactly as they are without the dropout in the tile."""
    sr, cfg = CFG.sample_rate, CFG
    rng = np.random.default_rng(3)
    x = (0.01 * rng.standard_normal(3 * sr)).astype(np.float32)
    x[sr : 2 * sr] = 0
    mag = magnitude(x, cfg, 0, cfg.tile_frames)
    silent = silent_frames(mag, cfg)
    t = frame_times(cfg.tile_frames, cfg)
    # frames whose whole window lies inside the dropout (and the padding past the end)
    inside = (t - cfg.win_length / 2 / sr >= 1.0) & (t + cfg.win_length / 2 / sr < 2.0)
    np.testing.assert_array_equal(silent[t < 3.0], inside[t < 3.0])
    spec = normalise(mag, cfg, silent=silent)
    assert not spec[:, silent].any()
    np.testing.assert_allclose(spec[:, ~silent], normalise(mag[:, ~silent], cfg), atol=1e-6)
    # without the flags the dropout's -140 dB drags each row's floor down: everything else saturates
    assert normalise(mag, cfg)[:, ~silent].mean() > spec[:, ~silent].mean() + 0.3


@pytest.mark.parametrize(
    "signal, silent",
    [
        (np.zeros(22050), True),  # digital silence
        (np.full(22050, 0.3), True),  # DC offset only
        # 16-bit TPDF dither alone (0.41 LSB rms): what a 16-bit recorder writes for silence
        ((np.random.default_rng(0).random(22050) + np.random.default_rng(1).random(22050) - 1) / 32768, True),
        (1e-4 * np.random.default_rng(0).standard_normal(22050), False),  # -80 dBFS noise: quiet, not silent
    ],
)
def test_silent_frames_are_digital_silence_dc_and_quantisation_noise(signal, silent):
    mag = magnitude(np.asarray(signal, np.float32), CFG)
    interior = slice(4, -4)  # frames not reaching into the zero padding around the signal
    assert silent_frames(mag, CFG)[interior].all() == silent
    assert silent_frames(mag, CFG)[interior].any() == silent


def test_a_full_scale_sine_is_0_dbfs():
    t = np.arange(22050) / 22050
    level = frame_level_db(magnitude(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32), CFG), CFG)
    assert level[10:-10] == pytest.approx(0.0, abs=0.5)  # 1 kHz lies between bins: -0.27 dB


def test_config_round_trips_through_json():
    cfg = get_config("bsd")
    assert SpecConfig.from_json(cfg.to_json()) == cfg
    assert get_config(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown spectrogram preset"):
        get_config("nope")


def test_bsd_preset_reproduces_the_dataset_image_and_mask(real_data):
    root = real_data / "bsd_sample" / "Test"
    image = np.asarray(Image.open(root / "Images" / "XC41136.png"), np.float64)
    mask = np.asarray(Image.open(root / "Masks" / "XC41136.png")) > 127
    cfg = PRESETS["bsd"]
    raw = audio.decode(str(root / "Raw_audios" / "XC41136.wav"), cfg.sample_rate)[0]
    den, _ = sf.read(root / "Denoised_audios" / "XC41136.wav", dtype="float32")
    c = scipy.signal.correlate(raw, den, mode="full", method="fft")
    lag = int(np.argmax(np.abs(c))) - (len(den) - 1)  # the MP3 decoder's delay
    assert lag == 528
    mag = magnitude(raw[lag : lag + len(den)], cfg)
    assert mag.shape == image.shape == mask.shape == (1024, 3032)

    # the picture is |STFT| (log-correlation near 1); one frame off is clearly worse
    def corr(m):
        return np.corrcoef(np.log(m.ravel() + 1e-6), np.log(image.ravel() + 1))[0, 1]

    assert corr(mag) > 0.98
    assert corr(np.roll(mag, 1, axis=1)) < corr(mag) - 0.01
    # the mask lines up: energy inside the mask is far above energy outside
    assert mag[mask].mean() > 5 * mag[~mask].mean()
    # row 511 is DC, rows are mirrored around it (two-sided, shifted, flipped)
    assert row_freqs(cfg)[511] == 0.0
    np.testing.assert_allclose(mag[510::-1], mag[512:1023], rtol=1e-3, atol=1e-6)
