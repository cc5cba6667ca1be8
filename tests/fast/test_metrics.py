import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import helpers

masks = arrays(bool, (6, 6))


def test_iou_and_dice_of_a_known_pair():
    truth = np.zeros((1, 4, 4), bool)
    pred = np.zeros((1, 4, 4), bool)
    truth[0, :2] = True  # 8 pixels
    pred[0, 1:3] = True  # 8 pixels, 4 shared
    assert helpers.iou_per_image(truth, pred)[0] == pytest.approx(4 / 12)
    assert helpers.dice_per_image(truth, pred)[0] == pytest.approx(8 / 16)


def test_score_counts_thresholds_strictly_exceeded():
    truth = np.zeros((1, 10, 10), bool)
    truth[0, :, :6] = True  # 60 pixels
    pred = np.zeros((1, 10, 10), bool)
    pred[0, :, :5] = True  # IoU = 50/60 = 0.833: exceeds 0.50..0.80 (7 of 10)
    assert helpers.competition_score(truth, pred) == pytest.approx(0.7)
    pred[0, :, 2:] = False  # IoU = 20/60 = 0.33: below every threshold
    assert helpers.competition_score(truth, pred) == 0.0


def test_thresholds_are_the_competitions():
    assert np.allclose(helpers.IOU_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


@given(masks)
def test_empty_truth_scores_one_only_for_empty_prediction(pred):
    empty = np.zeros_like(pred)
    expected = 0.0 if pred.any() else 1.0
    assert helpers.competition_score(empty[None], pred[None]) == expected


@given(masks, st.integers(0, 5), st.integers(0, 5))
def test_empty_prediction_on_salt_scores_zero(truth, row, column):
    truth = truth.copy()
    truth[row, column] = True  # salt: at least one pixel, so every example tests the claim
    assert helpers.competition_score(truth[None], np.zeros_like(truth)[None]) == 0.0
    assert helpers.iou_per_image(truth, np.zeros_like(truth))[0] == 0.0


def test_empty_prediction_on_no_salt_is_not_scored_zero():
    # the case the property above leaves out: no salt and none predicted is a perfect slice
    empty = np.zeros((1, 6, 6), bool)
    assert helpers.competition_score(empty, empty) == 1.0


@given(masks)
def test_perfect_prediction_scores_one(truth):
    assert helpers.competition_score(truth[None], truth[None]) == 1.0
    assert helpers.dice_per_image(truth, truth)[0] == 1.0


def test_full_masks():
    full = np.ones((2, 5, 5), bool)
    assert helpers.competition_score(full, full) == 1.0
    assert helpers.competition_score(full, ~full) == 0.0


@settings(max_examples=100)
@given(masks, masks)
def test_score_lies_between_zero_and_one_and_is_symmetric(a, b):
    score = helpers.competition_score(a[None], b[None])
    assert 0.0 <= score <= 1.0
    assert score == helpers.competition_score(b[None], a[None])
    assert helpers.iou_per_image(a, b)[0] <= helpers.dice_per_image(a, b)[0] + 1e-12


def test_score_averages_over_images():
    truth = np.zeros((2, 4, 4), bool)
    pred = np.zeros((2, 4, 4), bool)
    pred[1, 0, 0] = True  # image 0 perfect (both empty), image 1 a false pixel
    assert helpers.competition_score(truth, pred) == 0.5
