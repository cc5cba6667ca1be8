"""From probabilities to masks: the threshold, small components removed (as scikit-image does at this
version), the empty-slice rule, and tune_postprocessing choosing among them and flips."""

import numpy as np
from packaging.version import Version

import helpers


def test_remove_small_components():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, :10, :10] = True  # 100 px
    masks[0, 15, 15] = True  # 1 px
    cleaned = helpers.remove_small_components(masks, 5)
    assert cleaned.sum() == 100
    assert helpers.remove_small_components(masks, 0).sum() == 101


def test_small_components_match_scikit_image_at_this_version():
    """The series' own removal equals scikit-image's, called as the installed release wants."""
    import skimage
    from skimage.morphology import remove_small_objects

    rng = np.random.default_rng(0)
    masks = rng.random((20, 24, 24)) < 0.35
    for min_pixels in (1, 2, 5, 12):
        if Version(skimage.__version__) >= Version("0.26"):
            expected = [remove_small_objects(m, max_size=min_pixels - 1) for m in masks]
        else:
            expected = [remove_small_objects(m, min_size=min_pixels) for m in masks]
        assert np.array_equal(helpers.remove_small_components(masks, min_pixels), np.stack(expected)), min_pixels
    assert np.array_equal(helpers.remove_small_components(masks, 0), masks)


def test_the_empty_slice_rule_clears_only_unconfident_images():
    probs = np.full((3, 10, 10), 0.1, np.float32)
    probs[0, :5] = 0.95  # confident salt
    probs[1, :5] = 0.65  # a large region, but never confident: cleared at min_peak 0.7
    probs[2, :5, :5] = 0.55
    masks = helpers.masks_from_probabilities(probs, threshold=0.5, min_peak=0.7)
    assert masks.sum(axis=(1, 2)).tolist() == [50, 0, 0]
    assert helpers.masks_from_probabilities(probs, threshold=0.5).sum(axis=(1, 2)).tolist() == [50, 50, 25]
    assert helpers.masks_from_probabilities(probs, 0.5, min_pixels=30).sum(axis=(1, 2)).tolist() == [50, 50, 0]


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
