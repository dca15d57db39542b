"""Tiles of several short recordings in one model call."""

import numpy as np
import soundfile as sf

from raybird.inference import decode
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
