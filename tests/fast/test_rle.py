import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import helpers
from helpers import SaltDataError


def test_known_encoding_is_column_major_and_one_indexed():
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = mask[1, 0] = True  # first column, top two pixels
    mask[2, 2] = True  # last pixel
    assert helpers.rle_encode(mask) == "1 2 9 1"


def test_empty_mask_is_empty_string_and_back():
    assert helpers.rle_encode(np.zeros((101, 101), bool)) == ""
    assert not helpers.rle_decode("").any()
    assert not helpers.rle_decode(float("nan")).any()


def test_full_mask():
    assert helpers.rle_encode(np.ones((101, 101), bool)) == "1 10201"


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_round_trip(mask):
    assert np.array_equal(helpers.rle_decode(helpers.rle_encode(mask), mask.shape), mask)


@pytest.mark.parametrize("rle, words", [
    ("1 2 3", "odd number"),
    ("1 x", "not a whole number"),
    ("10200 5", "outside"),
    ("0 3", "start >= 1"),
    ("5 0", "length >= 1"),
    ("10 5 12 3", "overlaps"),
    ("20 2 10 2", "sorted"),
])
def test_malformed_rle_is_refused_with_the_reason(rle, words):
    with pytest.raises(SaltDataError, match=words):
        helpers.rle_decode(rle)
