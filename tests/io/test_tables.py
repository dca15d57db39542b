"""The masks table's encodings."""

import numpy as np

from raybird.io import tables


def test_mask_and_probability_encodings_round_trip():
    rng = np.random.default_rng(1)
    mask = (rng.random((13, 57)) < 0.3).astype(np.uint8)  # rows not a multiple of 8
    data = tables.encode_mask(mask)
    assert len(data) == 57 * 2
    np.testing.assert_array_equal(tables.decode_mask(data, 13, 57), mask)
    np.testing.assert_array_equal(tables.decode_mask(data, 13, 57, 20, 31), mask[:, 20:31])
    chunks = tables.encode_mask(mask[:, :30]) + tables.encode_mask(mask[:, 30:])  # frame-major: chunks append
    assert chunks == data
    prob = rng.random((13, 57)).astype(np.float32)
    back = tables.decode_probability(tables.encode_probability(prob), 13, 57)
    assert back.shape == (13, 57) and np.abs(back - prob).max() <= 0.5 / 255 + 1e-7
