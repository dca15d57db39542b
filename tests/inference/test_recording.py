"""Tiles of several short recordings in one model call."""

import numpy as np
import soundfile as sf

from raybird.inference import decode, recording
from raybird.inference import predictor as predictor_mod
from raybird.inference.predictor import Predictor
from raybird.models.checkpoint import read_checkpoint


class Counting(Predictor):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.calls = []

    def __call__(self, tiles):
        self.calls.append(len(tiles.spec))
        return super().__call__(tiles)


def test_short_recordings_share_model_calls_with_the_same_probabilities(tmp_path):
    ckpt = read_checkpoint("default")
    rng = np.random.default_rng(0)
    t = np.arange(2 * 22050) / 22050
    items = []
    for i in range(5):  # 2 s each: one tile each
        x = 0.05 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * (2000 + 300 * i) * t) * (t > 0.5) * (t < 1.2)
        sf.write(tmp_path / f"r{i}.wav", x.astype(np.float32), 22050)
        items += [(i, item) for item in decode.recording_tiles(str(tmp_path / f"r{i}.wav"), ckpt.cfg)]
    predictor = Counting(ckpt.data, "cpu", 1, batch_size=4)
    got = list(predictor_mod.inferred(iter(items), predictor))
    assert predictor.calls == [4, 1]  # five recordings, two model calls
    assert [(i, type(x).__name__) for i, x in got] == [
        (i, "Probabilities" if isinstance(x, decode.Tiles) else type(x).__name__) for i, x in items
    ]
    alone = Predictor(ckpt.data, "cpu", 1, batch_size=4)
    for (_, tiles), (_, probs) in zip(items, got):
        if isinstance(tiles, decode.Tiles):
            want = alone(tiles)  # the recording on its own, as before
            assert want.first_frame == probs.first_frame and want.channel == probs.channel
            for a, b in zip(want.prob, probs.prob):
                np.testing.assert_array_equal(a, b)
            assert any(p.max() > 128 for p in probs.prob)  # the tone is found: not an empty test


def test_edges_are_refined_on_the_audio_as_decoded_unless_too_long_to_hold(tmp_path, monkeypatch):
    """A short recording's edges (and denoised audio) come from the audio its tiles were made
    from, kept with its end (not decoded a second time), and are the same as from a second
    decode; a recording longer than KEEP_AUDIO_BYTES is not held, and is decoded again."""
    ckpt = read_checkpoint("default")
    rng = np.random.default_rng(1)
    t = np.arange(6 * 44100) / 44100
    calls = (t % 1.5 > 0.4) & (t % 1.5 < 0.75)
    x = 0.01 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 3000 * t) * calls
    path = tmp_path / "calls.wav"  # at 44.1 kHz: the kept audio is the resampled audio
    sf.write(path, np.stack([x, 0.5 * x], axis=1).astype(np.float32), 44100)

    def finished(keep: bool):
        stitcher = recording.RecordingStitcher(ckpt.cfg, recording.SegmentOptions())
        predictor = Predictor(ckpt.data, "cpu", 1)
        recording.stitch(decode.recording_tiles(str(path), ckpt.cfg, keep_audio=keep), predictor, stitcher)
        return stitcher, recording.finish_with_edges(stitcher, str(path))

    kept, (duration, with_kept) = finished(True)
    assert [b.shape[0] for b in kept.audio] == [1] and sum(b.shape[1] for b in kept.audio) == 6 * 22050
    again, (_, decoded_again) = finished(False)
    assert again.audio is None
    starts = [s.start_s for s in with_kept[0].segments]
    assert len(starts) == 4 and starts == [s.start_s for s in decoded_again[0].segments]
    assert [s.end_s for s in with_kept[0].segments] == [s.end_s for s in decoded_again[0].segments]
    # denoising too: the same file from the kept blocks as from a second decode
    opts = recording.SegmentOptions(denoise=True)
    for name, src in (("kept", kept.audio), ("decoded", str(path))):
        recording.write_tool_files(str(tmp_path / "out"), str(path), None, with_kept, ckpt.cfg, opts, src, name)
    denoised = [sf.read(tmp_path / "out" / "denoised" / f"{name}.wav")[0] for name in ("kept", "decoded")]
    assert len(denoised[0]) == 6 * 22050 and np.array_equal(*denoised)
    monkeypatch.setattr(decode, "KEEP_AUDIO_BYTES", 4 * 6 * 22050 - 1)  # one sample too many
    assert finished(True)[0].audio is None
