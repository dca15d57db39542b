"""The Python API: a file or an array in, the segments table as a DataFrame out."""

import numpy as np
import pytest
import soundfile as sf

import raybird
from raybird.io import tables


def test_segment_file_from_a_path_and_from_its_samples_agree(real_data):
    path = real_data / "monitor_survey" / "survey.flac"
    model = raybird.load_model("default")
    from_path = raybird.segment_file(path, model=model)
    assert list(from_path.columns) == tables.SEGMENT_SCHEMA.names
    assert len(from_path) >= 20 and (from_path["model_id"] == model.model_id).all()
    assert from_path["start_s"].is_monotonic_increasing and list(from_path["segment_id"]) == list(range(len(from_path)))
    x, sr = sf.read(path, dtype="float32")
    from_array = raybird.segment_file(x, sr=sr, model=model)
    assert (from_array["source"] == "<array>").all()
    np.testing.assert_allclose(
        from_array[["start_s", "end_s"]].to_numpy(), from_path[["start_s", "end_s"]].to_numpy(), atol=1e-6
    )
    stricter = raybird.segment_file(x, sr=sr, model=model, threshold=0.9)  # options pass through
    assert (stricter["score"] >= 0.9).all() and (from_array["score"] < 0.9).any()


def test_segment_file_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="sample rate"):
        raybird.segment_file(np.zeros(1000, np.float32))
    (tmp_path / "x.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="not a readable audio file"):
        raybird.segment_file(tmp_path / "x.wav")
