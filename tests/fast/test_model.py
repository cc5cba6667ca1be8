"""The UNet: its size and shapes, padding, prediction in chunks and with flips, and safe saving and
loading (small and quick; no training here)."""

import numpy as np
import pytest

import helpers


@pytest.fixture(scope="module")
def small_unet():
    return helpers.build_unet(base_filters=4, depth=4)


def test_pad_and_crop_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (3, 101, 101), dtype=np.uint8)
    padded = helpers.pad_to_multiple(images)
    assert padded.shape == (3, 112, 112)
    assert np.array_equal(helpers.crop_to(padded, 101, 101), images)
    assert np.array_equal(padded[:, 4, 5:106], images[:, 1, :])  # reflection, not zeros


def test_network_input_and_target():
    x = helpers.to_network_input(np.full((2, 101, 101), 255, np.uint8))
    assert x.shape == (2, 112, 112, 1) and x.dtype == np.float32 and x.max() == 1.0
    y = helpers.to_network_target(np.ones((2, 101, 101), bool))
    assert y.shape == (2, 112, 112, 1) and set(np.unique(y)) == {1.0}
    with pytest.raises(ValueError, match="expected uint8 images"):
        helpers.to_network_input(np.zeros((2, 101, 101), np.float32))


def test_reference_size_parameter_count():
    # 16 filters doubling over 4 levels, bottleneck 256: 1.95 M parameters
    assert helpers.build_unet().count_params() == 1_945_233


def test_fully_convolutional(small_unet):
    for size in (64, 128, 160):
        out = small_unet.predict_on_batch(np.zeros((1, size, size, 1), np.float32))
        assert out.shape == (1, size, size, 1)


def test_batch_norm_momentum_reaches_every_block():
    momenta = {layer.momentum for layer in helpers.build_unet(base_filters=2).layers if hasattr(layer, "momentum")}
    assert momenta == {0.9}
    seed_style = helpers.build_unet(base_filters=2, bn_momentum=0.99)
    assert {layer.momentum for layer in seed_style.layers if hasattr(layer, "momentum")} == {0.99}


def test_predict_salt_any_size_and_chunks(small_unet):
    images = np.random.default_rng(1).integers(0, 256, (5, 101, 101), dtype=np.uint8)
    probs = helpers.predict_salt(small_unet, images, batch_size=2)
    assert probs.shape == (5, 101, 101) and probs.dtype == np.float32
    assert 0 <= probs.min() and probs.max() <= 1
    assert np.allclose(probs, helpers.predict_salt(small_unet, images, batch_size=5), atol=1e-5)
    other = helpers.predict_salt(small_unet, images[:, :77, :90])
    assert other.shape == (5, 77, 90)
    with_tta = helpers.predict_salt(small_unet, images, flip_tta=True)
    mirrored = helpers.predict_salt(small_unet, images[:, :, ::-1].copy(), flip_tta=True)
    assert np.allclose(with_tta, mirrored[:, :, ::-1], atol=1e-5)


def test_saved_model_loads_back_the_same(small_unet, tmp_path):
    path = helpers.save_model_atomically(small_unet, tmp_path / "m.keras")
    assert not list(tmp_path.glob("*.partial*"))
    loaded = helpers.load_model_safely(path)
    x = np.random.default_rng(2).random((1, 32, 32, 1)).astype(np.float32)
    assert np.allclose(loaded.predict_on_batch(x), small_unet.predict_on_batch(x), atol=1e-6)


def test_model_carrying_code_is_refused(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="refused to load a model that carries code"):
        helpers.load_model_safely(path)


def test_missing_model_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 03_train.ipynb first"):
        helpers.load_model_safely(tmp_path / "best.keras")
