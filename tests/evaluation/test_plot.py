"""The spectrogram a plot shows is the one the model saw."""

import io

import numpy as np
import soundfile as sf

from raybird.dsp.spectrogram import get_config, row_freqs
from raybird.evaluation.plot import stitched_spectrogram


def test_plot_shows_what_the_model_saw_of_a_low_rate_recording():
    """8 kHz noise on the 22.05 kHz grid: the rows above 4 kHz are blank (as the segment job's
    input), not resampler leakage blown up by the per-row normalisation; the frames asked for
    are the frames returned."""
    cfg = get_config("default")
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    sf.write(buf, 0.1 * rng.standard_normal(8000 * 6).astype(np.float32), 8000, format="WAV")
    spec = stitched_spectrogram(buf.getvalue(), cfg, start_frame=10, stop_frame=400)
    above = np.abs(row_freqs(cfg)) > 4000
    assert spec.shape == (cfg.n_rows, 390)
    assert above.any() and np.all(spec[above] == 0)
    assert spec[~above].mean() > 0.05
