"""The UNet, padding, prediction and safe loading (small and quick; no training here)."""

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


def test_remove_small_components():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, :10, :10] = True  # 100 px
    masks[0, 15, 15] = True  # 1 px
    cleaned = helpers.remove_small_components(masks, 5)
    assert cleaned.sum() == 100
    assert helpers.remove_small_components(masks, 0).sum() == 101


def test_unknown_setting_and_bad_env(monkeypatch):
    with pytest.raises(ValueError, match="not a setting"):
        helpers.training_config("fast")
    monkeypatch.setenv("SALT_EPOCHS", "ten")
    with pytest.raises(ValueError, match="SALT_EPOCHS='ten' must be a whole number"):
        helpers.env_int("SALT_EPOCHS")


def test_tune_postprocessing_picks_threshold_flips_and_cleaning():
    truth = np.zeros((4, 20, 20), bool)
    truth[:2, 5:15, 5:15] = True  # two salty slices, two empty ones
    probs = np.where(truth, 0.62, 0.1).astype(np.float32)
    probs[2, 0, 0] = 0.9  # a stray pixel on an empty slice
    flipped = np.where(truth, 0.3, 0.1).astype(np.float32)  # flips made it worse here:
    flipped[2:, :10, :10] = 0.5  # large false regions on both empty slices
    choice, _, _ = helpers.tune_postprocessing(truth, probs, flipped)
    assert choice.flip_tta is False
    assert 0.1 <= choice.threshold < 0.62
    assert choice.min_pixels > 0  # the stray pixel must go; no peak rule can remove it (0.9 > 0.62)
    assert helpers.competition_score(truth, helpers.masks_from_probabilities(
        probs, choice.threshold, choice.min_pixels, choice.min_peak)) == 1.0
    assert np.array_equal(choice.masks(probs), helpers.masks_from_probabilities(
        probs, choice.threshold, choice.min_pixels, choice.min_peak))


def test_the_empty_slice_rule_clears_only_unconfident_images():
    probs = np.full((3, 10, 10), 0.1, np.float32)
    probs[0, :5] = 0.95  # confident salt
    probs[1, :5] = 0.65  # a large region, but never confident: cleared at min_peak 0.7
    probs[2, :5, :5] = 0.55
    masks = helpers.masks_from_probabilities(probs, threshold=0.5, min_peak=0.7)
    assert masks.sum(axis=(1, 2)).tolist() == [50, 0, 0]
    assert helpers.masks_from_probabilities(probs, threshold=0.5).sum(axis=(1, 2)).tolist() == [50, 50, 25]
    assert helpers.masks_from_probabilities(probs, 0.5, min_pixels=30).sum(axis=(1, 2)).tolist() == [50, 50, 0]


def test_tune_postprocessing_adds_the_empty_slice_rule_only_when_it_pays():
    truth = np.zeros((4, 20, 20), bool)
    truth[:2, 5:15, 5:15] = True
    probs = np.where(truth, 0.95, 0.05).astype(np.float32)
    probs[2:, 2:12, 2:12] = 0.55  # large, hesitant false salt on both empty slices: only the rule removes it
    choice, _, _ = helpers.tune_postprocessing(truth, probs, probs)
    assert choice.min_peak > 0.55 and choice.flip_tta is False  # flips add nothing here: kept off
    assert helpers.competition_score(truth, helpers.masks_from_probabilities(
        probs, choice.threshold, choice.min_pixels, choice.min_peak)) == 1.0
    clean = np.where(truth, 0.95, 0.05).astype(np.float32)
    assert helpers.tune_postprocessing(truth, clean, clean)[0].min_peak == 0.0  # nothing to fix: no rule


def numpy_soft_dice_loss(truth, probs, smooth=1.0):
    overlap = (truth * probs).sum(axis=(1, 2, 3))
    total = truth.sum(axis=(1, 2, 3)) + probs.sum(axis=(1, 2, 3))
    return 1.0 - np.mean((2 * overlap + smooth) / (total + smooth))


def test_soft_dice_loss_matches_its_formula_and_edge_cases():
    from keras import ops

    rng = np.random.default_rng(5)
    truth = (rng.random((4, 16, 16, 1)) < 0.3).astype(np.float32)
    probs = rng.random((4, 16, 16, 1)).astype(np.float32)
    got = float(ops.convert_to_numpy(helpers.soft_dice_loss(truth, probs)))
    assert got == pytest.approx(numpy_soft_dice_loss(truth, probs), rel=1e-5)
    empty = np.zeros((2, 16, 16, 1), np.float32)
    assert float(ops.convert_to_numpy(helpers.soft_dice_loss(empty, empty))) == pytest.approx(0.0)
    assert float(ops.convert_to_numpy(helpers.soft_dice_loss(truth, truth))) < 0.01
    assert float(ops.convert_to_numpy(helpers.soft_dice_loss(truth, 1.0 - truth))) > 0.9
    # an empty image with a few confident false pixels already costs most of the way to 1
    few = empty.copy()
    few[:, :2, :2] = 1.0
    assert float(ops.convert_to_numpy(helpers.soft_dice_loss(empty, few))) == pytest.approx(0.8)


def test_bce_dice_loss_is_cross_entropy_plus_dice():
    from keras import ops

    rng = np.random.default_rng(6)
    truth = (rng.random((3, 8, 8, 1)) < 0.5).astype(np.float32)
    probs = rng.uniform(0.01, 0.99, (3, 8, 8, 1)).astype(np.float32)
    expected = -np.mean(truth * np.log(probs) + (1 - truth) * np.log(1 - probs)) + numpy_soft_dice_loss(truth, probs)
    got = float(ops.convert_to_numpy(helpers.bce_dice_loss(truth, probs)))
    assert got == pytest.approx(expected, rel=1e-4)


def test_batch_norm_momentum_reaches_every_block():
    momenta = {layer.momentum for layer in helpers.build_unet(base_filters=2).layers if hasattr(layer, "momentum")}
    assert momenta == {0.9}
    seed_style = helpers.build_unet(base_filters=2, bn_momentum=0.99)
    assert {layer.momentum for layer in seed_style.layers if hasattr(layer, "momentum")} == {0.99}


@pytest.mark.slow
def test_compiled_model_with_the_series_loss_reloads_and_keeps_training(tmp_path):
    model = helpers.compile_unet(helpers.build_unet(base_filters=2))
    x = np.random.default_rng(7).random((4, 16, 16, 1)).astype(np.float32)
    y = (x > 0.5).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    loaded = helpers.load_model_safely(helpers.save_model_atomically(model, tmp_path / "m.keras"))
    assert loaded.loss is helpers.bce_dice_loss or getattr(loaded.loss, "__name__", "") == "bce_dice_loss"
    assert np.isclose(loaded.evaluate(x, y, verbose=0)[0], model.evaluate(x, y, verbose=0)[0], rtol=1e-5)
    loaded.fit(x, y, epochs=1, verbose=0)
