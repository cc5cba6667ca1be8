"""The benchmark's count of a model's operations, checked by hand on tiny networks."""

import sys
from pathlib import Path

import keras
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_recipes  # noqa: E402

import helpers  # noqa: E402


def test_a_convolution_and_a_transposed_one_by_hand():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # 2*8*8*3*3*1*4 = 4608
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, padding="same")(x)  # 2*8*8*2*2*4*2 = 4096
    model = keras.Model(inputs, x)
    assert compare_recipes.conv_gflop_per_image(model, 8) * 1e9 == pytest.approx(4608 + 4096)


def test_the_series_unet_costs_about_1_15_gflop_per_slice():
    assert compare_recipes.conv_gflop_per_image(helpers.build_unet(), helpers.PADDED_SIZE) == pytest.approx(1.154, abs=0.001)
    assert compare_recipes.conv_gflop_per_image(helpers.build_unet(base_filters=8), helpers.PADDED_SIZE) < 0.3
