"""Synthetic archive: determinism, the exact truth definition, boxes, SNR, empty recordings,
hard negatives outside the truth, ranges of the calls, other sample rates and stereo."""

from __future__ import annotations

import zipfile
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy import ndimage

from raybird.dsp.spectrogram import PRESETS, SpecConfig, magnitude, n_frames_for, row_freqs
from raybird.io.label_masks import boxes_to_mask
from raybird.io.labels import read_raven, write_raven
from raybird.synth import calls, noise
from raybird.synth import generator as synth

CFG = PRESETS["default"]


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _recording(seed: int, **kw) -> synth.Recording:
    return synth.generate_recording(np.random.default_rng(seed), **{"duration_s": 4.0, **kw})


def _call_magnitude(call: calls.Call, n_samples: int, cfg: SpecConfig) -> np.ndarray:
    """|STFT| of one clean call (unit gain), on the whole recording's frame grid."""
    x = np.zeros(n_samples, np.float32)
    a, b = call.span(cfg.sample_rate)
    x[a:b] = calls.render_call(call, cfg.sample_rate)
    return magnitude(x, cfg)


def _threshold_mask(call: calls.Call, n_samples: int, cfg: SpecConfig) -> np.ndarray:
    """A call's core: its pixels within TRUTH_DB of its own peak."""
    mag = _call_magnitude(call, n_samples, cfg)
    return (mag >= mag.max() * 10 ** (-synth.TRUTH_DB / 20)).astype(np.uint8)


def _patch_power(mag: np.ndarray, mode: str) -> np.ndarray:
    """Mean power over each pixel's 3 x 3 neighbourhood."""
    return ndimage.uniform_filter(mag.astype(np.float64) ** 2, size=3, mode=mode)


def _truth(rec: synth.Recording) -> np.ndarray:
    """The truth definition recomputed from the returned tracks: each call's core where the call
    (at its level in the mono vocal track) carries at least the background's power over the
    pixel's 3 x 3 neighbourhood."""
    mono = lambda x: x.mean(axis=1) if x.ndim == 2 else x  # noqa: E731
    n = len(rec.vocals)
    clean = np.zeros(n)
    for c in rec.calls:
        a, b = c.span(rec.sample_rate)
        clean[a:b] += calls.render_call(c, rec.sample_rate) * np.mean(c.gains)
    k = np.dot(mono(rec.vocals), clean) / np.dot(clean, clean)  # the calls' scale in the vocal track
    background = _patch_power(magnitude(mono(rec.background), CFG), "nearest")
    out = np.zeros_like(rec.mask)
    for c in rec.calls:
        mag = _call_magnitude(c, n, CFG)  # the whole recording's grid: zeros around the call
        out |= (mag >= mag.max() * 10 ** (-synth.TRUTH_DB / 20)) & (
            _patch_power(k * np.mean(c.gains) * mag, "nearest") >= background
        )
    return out


def _assert_same_up_to_ties(mask: np.ndarray, expected: np.ndarray) -> None:
    """Equal but for pixels where call and background are equal to float rounding."""
    assert expected.any() and np.count_nonzero(mask != expected) <= max(2, expected.sum() // 2000)


def test_same_seed_same_bytes_prefix_stable_other_seed_differs(tmp_path):
    a = synth.generate_archive(tmp_path / "a", 3, seed=6, duration_s=(2.0, 4.0))
    synth.generate_archive(tmp_path / "b", 4, seed=6, duration_s=(2.0, 4.0))
    synth.generate_archive(tmp_path / "c", 3, seed=5, duration_s=(2.0, 4.0))
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(fa) == 9 and len(fb) == 12
    assert all(fb[name] == data for name, data in fa.items())  # N+1 keeps the first N, byte for byte
    # nothing in the files depends on the clock: no PEAK chunk (libsndfile's float WAV time
    # stamp), fixed zip member dates
    assert {r["subtype"] for r in a} >= {"FLOAT", "PCM_16"} and all(b"PEAK" not in d[:200] for d in fa.values())
    assert {i.date_time for r in a for i in zipfile.ZipFile(r["truth"]).infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert [Path(r["audio"]).name for r in a] == sorted(n for n in fa if n.endswith((".flac", ".wav")))
    for r in a:  # another seed: other audio and other masks
        name = Path(r["audio"]).name
        assert fc.get(name) != fa[name]
        other = tmp_path / "c" / f"{r['name']}.truth.npz"
        if other.exists() and not r["empty"]:
            assert not np.array_equal(np.load(r["truth"])["mask"], np.load(other)["mask"])
    t = np.load(a[0]["truth"])
    assert t["mask"].dtype == np.uint8 and SpecConfig.from_json(str(t["spec_config"])) == CFG
    info = sf.info(a[0]["audio"])
    assert t["mask"].shape == (CFG.n_rows, n_frames_for(info.frames, CFG))
    assert info.samplerate == CFG.sample_rate and info.duration == pytest.approx(a[0]["duration_s"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_is_union_of_audible_call_cores_and_vocals_their_sum(seed):
    rec = _recording(seed, duration_s=3.0)
    n = len(rec.audio)
    assert rec.calls
    clean = np.zeros(n)
    cores = np.zeros_like(rec.mask)
    for c in rec.calls:
        cores |= _threshold_mask(c, n, CFG)
        a, b = c.span(rec.sample_rate)
        clean[a:b] += calls.render_call(c, rec.sample_rate)
    _assert_same_up_to_ties(rec.mask, _truth(rec))
    assert not (rec.mask & ~cores).any()  # never outside the cores
    k = np.dot(rec.vocals, clean) / np.dot(clean, clean)  # the vocal track is the calls, scaled
    np.testing.assert_allclose(rec.vocals, k * clean, atol=1e-6 * np.abs(rec.vocals).max())


def test_calls_under_the_background_leave_no_truth():
    """At -5 dB, parts of the calls sink under the background: those pixels are not truth, and
    a call wholly under it has no box."""
    rec = _recording(10, duration_s=4.0, snr_db=(-5.0, -5.0))
    cores = np.zeros_like(rec.mask)
    for c in rec.calls:
        cores |= _threshold_mask(c, len(rec.audio), CFG)
    assert 0 < rec.mask.sum() < cores.sum()
    audible = [c["audible"] for c in rec.meta["calls"]]
    assert len(rec.boxes) == sum(audible)
    quiet = _recording(10, duration_s=4.0, snr_db=(80.0, 80.0))
    np.testing.assert_array_equal(quiet.mask, cores)  # far above the background: whole cores


def test_raven_boxes_are_the_bounding_rectangles_of_their_calls(tmp_path):
    rec = _recording(3, duration_s=5.0)
    write_raven(tmp_path / "t.txt", rec.boxes)
    boxes = read_raven(tmp_path / "t.txt")
    calls = [c for c, m in zip(rec.calls, rec.meta["calls"]) if m["audible"]]
    pairs = sorted(zip(rec.boxes, calls), key=lambda p: (p[0].begin_s, p[0].end_s))
    assert len(boxes) == len(calls) > 0
    truth = _truth(rec)
    for box, (_, call) in zip(boxes, pairs):
        m = _threshold_mask(call, len(rec.audio), CFG) & truth
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        rect = np.zeros_like(m)
        rect[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1
        np.testing.assert_array_equal(boxes_to_mask([box], CFG, m.shape[1]), rect)
        assert box.label == call.label and box.label.endswith(call.kind)


def _snr(vocals, background, sr, calls, band) -> float:
    active = np.zeros(len(vocals), bool)
    for c in calls:
        active[slice(*c.span(sr))] = True
    spec = np.fft.rfft(background.astype(np.float64))
    f = np.fft.rfftfreq(len(background), 1 / sr)
    band_power = 2 * np.sum(np.abs(spec[(f >= band[0]) & (f <= band[1])]) ** 2) / len(background) ** 2
    return 10 * np.log10(np.mean(vocals[active].astype(np.float64) ** 2) / band_power)


@pytest.mark.parametrize("seed,snr", [(10, -5.0), (11, 20.0), (12, 7.5)])
def test_snr_holds_in_the_written_file(tmp_path, seed, snr):
    rec = _recording(seed, snr_db=(snr, snr), p_clip=0.0, p_dc=1.0)
    path = tmp_path / "r.flac"
    sf.write(path, rec.audio, rec.sample_rate, subtype="PCM_16")
    decoded, _ = sf.read(path, dtype="float32")
    cores = sum(_threshold_mask(c, len(rec.audio), CFG) for c in rec.calls)
    f = np.abs(row_freqs(CFG))[cores.any(1)]  # the band of the calls' cores, audible or not
    band = (f.min(), f.max())
    assert rec.meta["snr_db"] == snr and rec.meta["snr_band_hz"] == pytest.approx(band)
    # background = file - clean vocals (includes the DC offset and the 16-bit quantisation)
    assert _snr(rec.vocals, decoded - rec.vocals, rec.sample_rate, rec.calls, band) == pytest.approx(snr, abs=0.5)
    active = np.zeros(len(rec.vocals), bool)
    for c in rec.calls:
        active[slice(*c.span(rec.sample_rate))] = True
    assert synth.measure_snr(rec.vocals, rec.background, rec.sample_rate, active, band) == pytest.approx(snr, abs=1e-3)


def test_empty_recordings_have_empty_masks_and_tables(tmp_path):
    recs = synth.generate_archive(tmp_path, 3, seed=2, duration_s=(2.0, 3.0), p_empty=1.0)
    for r in recs:
        assert r["empty"] and r["n_calls"] == 0 and r["snr_db"] is None
        assert not np.load(r["truth"])["mask"].any()
        assert read_raven(r["table"]) == []
        audio, _ = sf.read(r["audio"])
        assert np.sqrt(np.mean(audio**2)) > 10 ** (-50 / 20)


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_insect_tone_is_in_the_audio_but_not_in_the_mask(seed):
    quiet = _recording(seed, noises=())
    loud = _recording(seed, noises=("insect", "frog", "engine", "clicks"))
    cores = sum(_threshold_mask(c, len(loud.audio), CFG) for c in loud.calls) > 0
    assert loud.mask.any() and not (loud.mask & ~cores).any()  # noises hide truth, never add it
    _assert_same_up_to_ties(loud.mask, _truth(loud))
    assert [c.label for c in quiet.calls] == [c.label for c in loud.calls]  # the same birds
    empty = _recording(seed, noises=("insect",), empty=True)
    assert not empty.mask.any() and empty.boxes == []
    insect = empty.meta["noises"][1]
    spectrum = magnitude(empty.audio, CFG).mean(axis=1)
    f = row_freqs(CFG)
    high = f >= 3000  # the insect sits at 4-10 kHz and stands out of the noise there
    peak = f[high][np.argmax(spectrum[high])]
    assert abs(peak - insect["freq_hz"]) <= insect["bandwidth_hz"] / 2 + 2 * CFG.bin_hz


def test_calls_stay_in_the_bird_band_and_duration_range():
    kinds = set()
    for seed in range(30, 48):
        sr = (22050, 44100, 16000, 48000)[seed % 4]
        rec = _recording(seed, duration_s=5.0, sample_rate=sr)
        fmax = min(10000.0, 0.45 * sr)
        for call, box in zip([c for c, m in zip(rec.calls, rec.meta["calls"]) if m["audible"]], rec.boxes):
            kinds.add(call.kind)
            assert 0.02 <= call.dur_s <= 2.0 and 1000.0 <= call.f_lo < call.f_hi <= fmax
            assert 0.02 <= call.start_s and call.start_s + call.dur_s <= rec.meta["duration_s"] - 0.02
            # the box follows the call's truth pixels, which reach 40 dB below its peak: the
            # splatter of short notes may lie outside [f_lo, f_hi], never outside the spectrogram
            assert 0 <= box.low_hz < box.high_hz <= CFG.sample_rate / 2 + CFG.bin_hz
            assert box.end_s - box.begin_s <= 2.0 + CFG.win_length / CFG.sample_rate + CFG.frame_s
            # at least 98 % of the call's energy lies within [f_lo, f_hi] (+- envelope/AM spread)
            x = calls.render_call(call, sr)
            p = np.abs(np.fft.rfft(x)) ** 2
            f = np.fft.rfftfreq(len(x), 1 / sr)
            assert p[(f >= call.f_lo - 300) & (f <= call.f_hi + 300)].sum() >= 0.98 * p.sum()
    assert kinds >= set(calls.KINDS)


def test_stacks_range_from_few_to_many_harmonics():
    """Stacks and buzzes reach from 2 harmonics up to broadband ones (finch stacks):
    the many-harmonic ones span more than two octaves and stay inside the bird band."""
    counts, wide = [], []
    for seed in range(60, 120):
        for c in _recording(seed, duration_s=4.0).calls:
            if c.kind in ("stack", "buzz"):
                counts.append(len(c.params["harm"]))
                if counts[-1] >= 6:
                    wide.append(c.f_hi / c.f_lo)
                    assert 1000.0 <= c.f_lo and c.f_hi <= 10000.0
    assert min(counts) <= 3 and max(counts) >= 6 and wide and min(wide) > 4.0


def test_rasps_fill_their_band_with_noise_like_energy():
    """Rasps (harsh calls) are flat over a band of at least 0.4 octave, unlike tonal calls and
    harmonic stacks, and sound the same at every sample rate (their tones come from a seed)."""
    flatness = {"rasp": [], "tonal": []}
    for seed in range(60, 120):
        for c in _recording(seed, duration_s=4.0).calls:
            if c.dur_s < 0.1:
                continue
            x = calls.render_call(c, CFG.sample_rate)
            power = magnitude(x, CFG).astype(np.float64).mean(axis=1) ** 2
            f = np.abs(row_freqs(CFG))
            band = power[(f >= c.f_lo) & (f <= c.f_hi)]
            kind = "rasp" if c.kind == "rasp" else "tonal"
            if len(band) >= 8:
                flatness[kind].append(np.exp(np.mean(np.log(band))) / band.mean())
            if kind == "rasp":
                assert c.f_hi / c.f_lo >= 2**0.4 - 1e-6 and 1000.0 <= c.f_lo and c.f_hi <= 10000.0
                hi = calls.render_call(c, 44100)
                same = librosa.resample(hi, orig_sr=44100, target_sr=CFG.sample_rate)[: len(x)]
                assert np.corrcoef(same[100:-100], x[100 : len(same) - 100])[0, 1] > 0.99
    assert len(flatness["rasp"]) >= 5
    assert np.median(flatness["rasp"]) > 0.3 > np.median(flatness["tonal"]) * 3


def _envelope_autocorrelation(x: np.ndarray, sr: int, hop: int = 32) -> np.ndarray:
    """Autocorrelation of a sound's 1-10 kHz energy envelope, by lag in frames of ``hop``."""
    power = np.abs(librosa.stft(x, n_fft=256, hop_length=hop)) ** 2
    f = librosa.fft_frequencies(sr=sr, n_fft=256)
    env = power[(f >= 1000) & (f <= 10000)].sum(axis=0)
    env = env - env.mean()
    return np.correlate(env, env, "full")[len(env) - 1 :] / (env @ env)


def test_purrs_are_regular_trains_of_noise_like_pulses_unlike_rain():
    """A purr (a storm-petrel's) is band noise pulsed at a steady 15-60 Hz for up to 2 s; rain's
    broadband clicks come at random times: its energy envelope has no such period."""
    purrs = [c for seed in range(60, 160) for c in _recording(seed, duration_s=4.0).calls if c.kind == "purr"]
    assert len(purrs) >= 5
    for c in purrs:
        assert 0.3 * 0.8 <= c.dur_s <= 2.0 and 1000.0 <= c.f_lo and c.f_hi <= 10000.0
        assert c.f_hi / c.f_lo >= 2**0.9  # at least an octave (renditions scale by a few %)
        x = calls.render_call(c, CFG.sample_rate)
        if c.dur_s >= 8 / c.params["note_rate"]:  # enough pulses to measure a period
            period = CFG.sample_rate / 32 / c.params["note_rate"]
            ac = _envelope_autocorrelation(x, CFG.sample_rate)
            assert ac[int(period) : int(period) + 2].max() > 0.5
    rng = np.random.default_rng(0)
    sr = CFG.sample_rate
    for rate in (20.0, 40.0):  # rain at a purr's pulse rate
        rain = noise._impulses(rng, 2 * sr, sr, rate, 2.0, 6.0)
        period = sr / 32 / rate
        assert _envelope_autocorrelation(rain, sr)[int(period) : int(period) + 2].max() < 0.3


def test_other_sample_rate_truth_matches_the_audio():
    rec = _recording(40, duration_s=3.0, sample_rate=44100)
    assert rec.sample_rate == 44100 and rec.mask.shape == (CFG.n_rows, n_frames_for(len(rec.audio) // 2, CFG))
    vocals = librosa.resample(rec.vocals, orig_sr=44100, target_sr=CFG.sample_rate)
    n = rec.mask.shape[1]
    background = _patch_power(
        magnitude(librosa.resample(rec.background, orig_sr=44100, target_sr=CFG.sample_rate), CFG)[:, :n], "nearest"
    )
    clean = np.zeros(len(rec.vocals))
    for c in rec.calls:
        a, b = c.span(44100)
        clean[a:b] += calls.render_call(c, 44100)
    k = np.dot(rec.vocals, clean) / np.dot(clean, clean)  # the calls' scale in the vocal track
    expected = np.zeros_like(rec.mask)
    for c in rec.calls:  # the truth definition on the resampled audio of each call alone
        a, b = c.span(44100)
        x = np.zeros(len(rec.vocals), np.float32)
        x[a:b] = calls.render_call(c, 44100)
        mag = magnitude(librosa.resample(x, orig_sr=44100, target_sr=CFG.sample_rate), CFG)[:, :n]
        expected |= (mag >= mag.max() * 10 ** (-synth.TRUTH_DB / 20)) & (_patch_power(k * mag, "nearest") >= background)
    iou = (expected & rec.mask).sum() / (expected | rec.mask).sum()
    assert iou > 0.95 and len(vocals) == pytest.approx(len(rec.audio) / 2, abs=1)


def test_stereo_calls_follow_their_channel_gains():
    rec = _recording(50, duration_s=4.0, stereo=True)
    assert rec.audio.shape == (len(rec.vocals), 2) and rec.meta["channels"] == 2
    clean = np.zeros((len(rec.vocals), 2))
    for c in rec.calls:
        a, b = c.span(rec.sample_rate)
        clean[a:b] += calls.render_call(c, rec.sample_rate)[:, None] * np.asarray(c.gains)
    k = np.sum(rec.vocals * clean) / np.sum(clean * clean)
    np.testing.assert_allclose(rec.vocals, k * clean, atol=1e-6 * np.abs(rec.vocals).max())
    audible = [c for c, m in zip(rec.calls, rec.meta["calls"]) if m["audible"]]
    assert [b.channel for b in rec.boxes] == [int(np.argmax(c.gains)) for c in audible]
    _assert_same_up_to_ties(rec.mask, _truth(rec))  # the union over all calls, whatever their channel


def test_level_dc_offset_and_clipping_leave_the_truth_alone():
    plain = _recording(60, duration_s=2.0, p_clip=0.0, p_dc=0.0, level_dbfs=(-30.0, -30.0))
    dc = _recording(60, duration_s=2.0, p_clip=0.0, p_dc=1.0)
    clip = _recording(60, duration_s=2.0, p_clip=1.0, p_dc=0.0)
    peak = np.abs(plain.audio).max()
    assert not plain.meta["clipped"] and peak < 1.0
    # the drawn RMS level, unless that would exceed full scale
    assert plain.meta["level_dbfs"] == pytest.approx(-30.0, abs=1e-3) or peak == pytest.approx(0.99)
    assert 0.001 <= abs(dc.meta["dc_offset"]) <= 0.05
    assert np.mean(dc.audio - dc.vocals - dc.background) == pytest.approx(dc.meta["dc_offset"], abs=1e-6)
    assert clip.meta["clipped"] and np.abs(clip.audio).max() == 1.0
    np.testing.assert_array_equal(plain.mask, clip.mask)
    np.testing.assert_array_equal(plain.mask, dc.mask)
