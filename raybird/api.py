"""raybird from Python, for notebooks and scripts: one recording (a file or an array) in, its
segments as a pandas DataFrame out, in this process, without Ray.

    >>> import raybird
    >>> segments = raybird.segment_file("dawn.flac")                 # the shipped model
    >>> segments = raybird.segment_file(samples, sr=48000, threshold=0.6)
    >>> model = raybird.load_model("runs/unet/best/checkpoint.pt")   # load once, segment many
    >>> for path in paths:
    ...     table = raybird.segment_file(path, model=model)

The columns are those of the segment job's ``segments/`` table (the DESIGN contract): one row
per segment, in time order. Keyword options are :class:`raybird.pipelines.segment.SegmentOptions`
(``threshold``, ``min_duration_s``, ``split_depth_db``, ``merge_gap_s``, ``edge_fraction``, ...).
"""

from __future__ import annotations

import io
import os
from typing import Optional, Union

import numpy as np

from raybird.inference import recording
from raybird.io import storage
from raybird.models import checkpoint

ARRAY_SOURCE = "<array>"


def load_model(model: Union[str, os.PathLike, None] = "default") -> checkpoint.Checkpoint:
    """A checkpoint (file, folder, ``s3://`` path, or ``"default"``: the shipped model), read once."""
    return checkpoint.read_checkpoint(None if model is None else str(model))


def segment_file(
    audio,
    sr: Optional[int] = None,
    model: Union[str, os.PathLike, checkpoint.Checkpoint] = "default",
    device: Optional[str] = None,
    **options,
):
    """Segments of one recording: ``audio`` is a path (any format the segment job reads) or
    samples ``(n,)`` / ``(channels, n)`` at ``sr`` Hz. Returns a pandas DataFrame with the
    columns of :data:`raybird.pipelines.segment.SEGMENT_SCHEMA`. Unusable audio raises ``ValueError``."""
    ckpt = model if isinstance(model, checkpoint.Checkpoint) else load_model(model)
    opts = recording.SegmentOptions(**options)
    if isinstance(audio, (str, os.PathLike)):
        source = str(audio)
        src = storage.source_bytes(source)
    else:
        if sr is None:
            raise ValueError("samples need their sample rate: segment_file(samples, sr=...)")
        import soundfile as sf

        x = np.asarray(audio, np.float32)
        buf = io.BytesIO()
        sf.write(buf, x.T if x.ndim == 2 else x, int(sr), format="WAV", subtype="FLOAT")
        source, src = ARRAY_SOURCE, buf.getvalue()
    _, results = recording.predict_recording(source, ckpt, opts, device, src)
    return recording.segment_table(storage.recording_id(source), source, results, ckpt.model_id).to_pandas()
