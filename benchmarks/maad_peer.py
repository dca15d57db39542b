"""The classical peer: scikit-maad's documented recipe for regions of interest (ROIs) in a spectrogram.

The recipe of scikit-maad's README and ROI examples, with the parameters the issue names
(issue 28), step for step:

1. the recording is read with soundfile and its channels averaged (mono);
2. ``sound.spectrogram(s, fs, nperseg=1024, noverlap=512)``: power spectrogram, Hann window,
   1024 samples (46 ms at 22.05 kHz), hop 512; ``tn`` are the frame centres;
3. ``util.power2dB(Sxx) + 96`` (positive values, as its docstrings do), then
   ``sound.remove_background``: each frequency row's stationary noise profile subtracted;
4. ``sound.smooth(std=1.2)``: a Gaussian blur;
5. ``rois.create_mask(mode_bin='relative', bin_std=2, bin_per=0.25)``: double threshold, seeds
   above a robust mean + 2 "std" of the image, grown through 8-connected pixels above a quarter
   of that;
6. ``rois.select_rois(min_roi=50)``: connected regions of at least 50 pixels, boxed;
7. ``util.format_features(df, tn, fn)``: the boxes in seconds and Hz.

Each ROI becomes ``(min_t, max_t, min_f, max_f)``: as scikit-maad gives it, from the centre of
its first frame to the centre of its last (so about one hop, 23 ms at 22.05 kHz, shorter than
the pixels it spans) and from its lowest to its highest bin frequency. Nothing is tuned to our
data: the point is a peer anyone can rerun.
"""

from __future__ import annotations

import warnings

import numpy as np
import soundfile as sf

NPERSEG, NOVERLAP = 1024, 512


def maad_rois(path: str) -> list[tuple[float, float, float, float]]:
    """``(start_s, end_s, low_hz, high_hz)`` of every ROI that scikit-maad's documented recipe
    finds in the recording at ``path`` (see the module docstring); ``[]`` for a recording too
    short for two spectrogram frames."""
    from maad import rois, sound, util

    x, fs = sf.read(path, dtype="float64", always_2d=True)
    s = x.mean(axis=1)
    if len(s) < 3 * (NPERSEG - NOVERLAP):
        return []
    with warnings.catch_warnings():  # scikit-image's and pandas' FutureWarnings from inside scikit-maad
        warnings.simplefilter("ignore", FutureWarning)
        sxx, tn, fn, _ = sound.spectrogram(s, fs, nperseg=NPERSEG, noverlap=NOVERLAP)
        sxx_db, _, _ = sound.remove_background(util.power2dB(sxx) + 96)
        smooth = sound.smooth(sxx_db, std=1.2)
        mask = rois.create_mask(im=smooth, mode_bin="relative", bin_std=2, bin_per=0.25)
        _, df = rois.select_rois(mask, min_roi=50, max_roi=None)
        if df.empty:
            return []
        df = util.format_features(df, tn, fn)
    return [
        (float(a), float(b), float(c), float(d))
        for a, b, c, d in np.asarray(df[["min_t", "max_t", "min_f", "max_f"]], float)
    ]
