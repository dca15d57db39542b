"""Decoding by content through libsndfile, resampling, channel modes, streaming."""

from __future__ import annotations

import io

import librosa
import numpy as np
import pytest
import soundfile as sf

from raybird.io import audio


def _encode(x: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    "fmt,subtype", [("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]
)
def test_decodes_by_content_whatever_the_name(fmt, subtype, tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = _encode(x, sr, fmt, subtype)
    misnamed = tmp_path / "recording.wav"  # every format saved under a .wav name
    misnamed.write_bytes(data)
    y = audio.decode(str(misnamed), sr)[0]
    assert abs(len(y) - sr) <= 2200  # MP3 adds encoder/decoder padding
    spectrum = np.abs(np.fft.rfft(y[: sr // 2]))
    assert np.argmax(spectrum) * 2 == pytest.approx(440, abs=4)


def test_real_mp3_inside_a_wav_name(real_data):
    path = real_data / "bsd_sample/Test/Raw_audios/XC41136.wav"
    assert audio.info(str(path)).format == "MP3"  # by content, despite the .wav name
    assert audio.decode(str(path), 48000).shape == (1, 195840)


def test_resampling_equals_librosa_soxr_hq_and_streams_exactly():
    sr_in, sr_out = 44100, 22050
    x = np.random.default_rng(0).standard_normal(sr_in * 3).astype(np.float32) * 0.1
    data = _encode(x, sr_in, "FLAC")
    whole = audio.decode(data, sr_out)[0]
    want = librosa.resample(
        sf.read(io.BytesIO(data), dtype="float32")[0], orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq"
    )
    np.testing.assert_allclose(whole, want, atol=1e-6)
    streamed = np.concatenate(list(audio.iter_blocks(data, sr_out, block_s=0.1)), axis=1)[0]
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_channel_modes():
    sr = 8000
    left = np.full(sr, 0.5, np.float32)
    right = np.full(sr, -0.25, np.float32)
    data = _encode(np.stack([left, right], axis=1), sr, "WAV", "FLOAT")
    mixed = audio.decode(data, sr, "mix")
    split = audio.decode(data, sr, "split")
    assert mixed.shape == (1, sr) and split.shape == (2, sr)
    np.testing.assert_allclose(mixed[0], 0.125)
    np.testing.assert_allclose(split[1], -0.25)
    with pytest.raises(ValueError):
        audio.decode(data, sr, "left")


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"not audio at all" * 100, "not a readable audio file"),
    ],
)
def test_bad_input_has_a_reason(data, reason):
    with pytest.raises(audio.AudioError, match=reason):
        audio.decode(data, 22050)


def test_nan_samples_are_refused():
    x = np.zeros(1000, np.float32)
    x[500] = np.nan
    with pytest.raises(audio.AudioError, match="NaN"):
        audio.decode(_encode(x, 8000, "WAV", "FLOAT"), 8000)
