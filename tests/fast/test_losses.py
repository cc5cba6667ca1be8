"""The losses: soft Dice and cross-entropy + Dice against their formulas, the stage-2 Lovász hinge
against the Jaccard loss, and checkpoints naming a loss by its old plain name still load."""

import numpy as np
import pytest

import helpers


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


def _probs_from_logits(logits):
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def test_lovasz_hinge_equals_jaccard_loss_at_unit_errors():
    # Hinge errors of exactly 1 on a set M of pixels and 0 elsewhere: the Lovász extension
    # then equals the Jaccard loss of M, |M| / |salt ∪ M|, image by image.
    rng = np.random.default_rng(3)
    truth = rng.random((6, 12, 12, 1)) < np.array([0, 0.05, 0.3, 0.6, 1, 0.5]).reshape(6, 1, 1, 1)
    wrong = rng.random(truth.shape) < np.array([0.1, 0, 0.2, 0.05, 0.3, 0.5]).reshape(6, 1, 1, 1)
    logits = np.where(wrong, 0.0, np.where(truth, 1.0, -1.0))
    expected = [m.sum() / (t | m).sum() if (t | m).any() else 0.0 for t, m in zip(truth, wrong)]
    for i in range(6):
        got = float(helpers.lovasz_hinge_loss(truth[i:i + 1].astype(np.float32), _probs_from_logits(logits[i:i + 1])))
        assert abs(got - expected[i]) < 1e-4, (i, got, expected[i])
    batch = float(helpers.lovasz_hinge_loss(truth.astype(np.float32), _probs_from_logits(logits)))
    assert abs(batch - np.mean(expected)) < 1e-4


def test_lovasz_hinge_grows_with_the_margin_of_a_wrong_pixel():
    truth = np.zeros((1, 8, 8, 1), np.float32)
    truth[0, :4] = 1
    logits = np.where(truth > 0, 3.0, -3.0)
    assert float(helpers.lovasz_hinge_loss(truth, _probs_from_logits(logits))) < 1e-4
    for wrong_logit in (0.5, -0.5, -2.0):  # a salt pixel pushed towards 'no salt': hinge error 0.5, 1.5, 3
        bad = logits.copy()
        bad[0, 0, 0, 0] = wrong_logit
        # one pixel of 32 salt pixels wrong: its error times the Jaccard loss of that one pixel, 1/32
        expected = (1.0 - wrong_logit) / 32
        assert abs(float(helpers.lovasz_hinge_loss(truth, _probs_from_logits(bad))) - expected) < 1e-4


def test_checkpoints_saved_before_the_losses_were_registered_still_load(tmp_path):
    """Older best.keras files name the loss as a plain function ('bce_dice_loss'); they load with it."""
    import keras

    def bce_dice_loss(y_true, y_pred):  # an unregistered function of that name, as the series saved it before
        return keras.ops.mean(y_pred)

    model = helpers.build_unet(base_filters=2)
    model.compile(optimizer="adam", loss=bce_dice_loss)
    model.save(tmp_path / "old.keras")
    assert helpers.load_model_safely(tmp_path / "old.keras").loss is helpers.bce_dice_loss
    model.compile(optimizer="adam", loss=helpers.lovasz_hinge_loss)
    model.save(tmp_path / "new.keras")
    assert helpers.load_model_safely(tmp_path / "new.keras").loss is helpers.lovasz_hinge_loss
