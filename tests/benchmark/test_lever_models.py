"""The levers the benchmark screens: each one changes what it says, and the defaults change nothing."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

import helpers

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import lever_models as lm  # noqa: E402
import levers  # noqa: E402
import recipes  # noqa: E402


def layer_classes(model):
    return {type(layer).__name__ for layer in model.layers}


def test_the_default_levers_build_the_series_unet():
    config = helpers.training_config("class")
    keras.utils.set_random_seed(1)
    taught = helpers.build_unet(config.base_filters, dropout=config.dropout)
    for build in (helpers.new_unet, lm.new_lever_unet):
        keras.utils.set_random_seed(1)
        built = build(lm.lever_config(config) if build is lm.new_lever_unet else config)
        assert helpers.describe_model(built) == helpers.describe_model(taught), build.__name__
        assert all(np.array_equal(a, b) for a, b in zip(built.get_weights(), taught.get_weights())), build.__name__
        assert built.loss is helpers.bce_dice_loss and built.optimizer.use_ema
        assert built.optimizer.ema_momentum == config.ema_momentum


@pytest.mark.parametrize("lever, expect", [
    (dict(block="residual"), {"Add"}),
    (dict(scse=True), {"GlobalAveragePooling2D", "Dense", "Multiply"}),
    (dict(hypercolumn=True), {"UpSampling2D"}),
])
def test_each_architecture_lever_adds_its_layers_and_keeps_the_shapes(lever, expect):
    plain = helpers.build_unet(base_filters=4)
    model = lm.build_lever_unet(base_filters=4, **lever)
    assert expect <= layer_classes(model) - layer_classes(plain)
    assert model.count_params() > plain.count_params()
    out = model.predict_on_batch(np.zeros((2, 112, 112, 1), np.float32))
    assert out.shape == (2, 112, 112, 1) and out.dtype == np.float32
    helpers.plot_unet(model)  # the diagram still finds every level's block


def test_upscaling_runs_every_level_at_twice_the_resolution_and_returns_the_inputs_size():
    plain = helpers.build_unet(base_filters=4)
    model = lm.build_lever_unet(base_filters=4, upscale=2)
    assert {"UpSampling2D", "AveragePooling2D"} <= layer_classes(model) - layer_classes(plain)
    assert model.count_params() == plain.count_params()  # the same weights, used on a larger image
    features = keras.Model(model.input, [model.get_layer("down1_conv2").output,
                                         model.get_layer("bottleneck_conv2").output, model.output])
    first, deepest, out = features.predict_on_batch(np.zeros((2, 112, 112, 1), np.float32))
    assert first.shape[1:3] == (224, 224) and deepest.shape[1:3] == (14, 14)  # 112 -> 224 ... 14, not 7
    assert out.shape == (2, 112, 112, 1) and out.dtype == np.float32
    # same filters, four times the pixels: about four times the convolutions; half the filters: about the series'
    series = recipes.conv_gflop_per_image(plain, 112)
    assert 3.9 < recipes.conv_gflop_per_image(model, 112) / series < 4.1
    narrow = lm.build_lever_unet(base_filters=2, upscale=2)
    assert 0.9 < recipes.conv_gflop_per_image(narrow, 112) / series < 1.1
    # the enlarging and the averaging back do not shift the picture: a body's centre stays where it was
    body = np.zeros((1, 112, 112, 1), np.float32)
    body[0, 30:41, 60:67] = 1
    there_and_back = helpers.keras_to_numpy(model.get_layer("salt_to_input_size")(model.get_layer("upscale")(body)))
    rows, cols = np.indices((112, 112))
    def centre(image):
        return [np.average(axis, weights=image[0, ..., 0]) for axis in (rows, cols)]
    assert np.allclose(centre(there_and_back), centre(body), atol=0.01)
    helpers.plot_unet(model)
    with pytest.raises(ValueError, match="upscale=3"):
        lm.lever_config(helpers.training_config("quick"), upscale=3)
    with pytest.raises(ValueError, match="upscale=0.5"):
        lm.build_lever_unet(base_filters=2, upscale=0.5)


def test_the_empty_head_adds_the_slices_chance_of_salt_as_a_second_channel():
    plain = helpers.build_unet(base_filters=4)
    model = lm.build_lever_unet(base_filters=4, empty_head=True)
    assert {"GlobalAveragePooling2D", "SpreadOverImage"} <= layer_classes(model) - layer_classes(plain)
    images = np.random.default_rng(2).random((3, 112, 112, 1)).astype(np.float32)
    out = model.predict_on_batch(images)
    assert out.shape == (3, 112, 112, 2) and out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))
    chance = model.get_layer("has_salt").output
    assert tuple(chance.shape[1:]) == (1, 1, 1)
    assert np.allclose(out[..., 1], out[:, :1, :1, 1])  # one value per slice, at every pixel
    assert helpers.predict_salt(model, (images[..., 0] * 255).astype(np.uint8)).shape == (3, 112, 112)
    helpers.plot_unet(model)  # the head's pooling is not counted as a level


def test_the_empty_heads_loss_is_the_pixels_loss_plus_the_slices_cross_entropy():
    truth = np.zeros((2, 8, 8, 1), np.float32)
    truth[0, 2:5, 2:5] = 1  # slice 0 holds salt, slice 1 none
    pixels = (0.2 + 0.6 * truth).astype(np.float32)
    chance = np.array([0.8, 0.3], np.float32)[:, None, None, None] * np.ones_like(truth)
    outputs = np.concatenate([pixels, chance], axis=-1)
    for pixel_loss in (helpers.bce_dice_loss, helpers.lovasz_hinge_loss):
        combined = lm.with_empty_head(pixel_loss)
        slices = -(np.log(0.8) + np.log(1 - 0.3)) / 2
        expected = float(pixel_loss(truth, pixels)) + lm.EMPTY_HEAD_WEIGHT * slices
        assert float(combined(truth, outputs)) == pytest.approx(expected, rel=1e-5)
        assert lm.with_empty_head(combined) is combined  # never wrapped twice
        name = f"salt_unet>{pixel_loss.__name__}_with_empty_head"
        assert keras.saving.get_registered_object(name) is combined  # a checkpoint finds it again
    accuracy = lm.salt_accuracy(truth, outputs)
    assert np.allclose(keras.ops.convert_to_numpy(accuracy), 1.0)  # channel 0 alone, not the chance


class CutOffError(Exception):
    """Stands for a runtime that dies mid-run."""


@pytest.mark.slow
def test_a_unet_with_the_empty_head_trains_both_stages_resumes_and_predicts(tmp_path):
    data = helpers.make_synthetic_dataset(64, seed=3)
    train, val = [data.subset(i) for i in
                  helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=3)]
    config = lm.LeverConfig(setting="test", epochs=2, finetune_epochs=2, batch_size=8, steps_per_epoch=2,
                            base_filters=2, empty_head=True)

    class CutOff(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1 and (tmp_path / "lovasz").exists():
                raise CutOffError

    with pytest.raises(CutOffError):  # cut off in stage 2, after its first epoch
        lm.train_lever_run(config, train, val, tmp_path, verbose=0, extra_callbacks=[CutOff()])
    history = lm.train_lever_run(config, train, val, tmp_path, verbose=0)
    assert list(history["stage"]) == [1, 1, 2, 2]
    assert history["accuracy"].between(0, 1).all() and history["val_loss"].notna().all()
    stage_two = tmp_path / helpers.FINETUNE_DIR
    snapshot = helpers.load_model_safely(stage_two / "resume" / helpers.load_run_state(stage_two)["snapshot"])
    assert snapshot.loss is lm.with_empty_head(helpers.lovasz_hinge_loss)  # best.keras holds the network only
    model = helpers.load_model_safely(helpers.final_checkpoint(tmp_path, config))
    probs = helpers.predict_salt(model, val.images)
    assert probs.shape == val.images.shape and 0 <= probs.min() <= probs.max() <= 1


def test_residual_block_adds_its_input_back():
    x = keras.Input((8, 8, 4))
    same = keras.Model(x, lm.residual_block(x, 4, "r"))
    assert not any(layer.name == "r_shortcut" for layer in same.layers)  # same width: the identity
    wider = keras.Model(x, lm.residual_block(x, 8, "r"))
    assert wider.get_layer("r_shortcut").kernel.shape == (1, 1, 4, 8)
    # with the block's convolutions zeroed, the output is relu(input): the shortcut alone
    for layer in same.layers:
        if layer.name in ("r_conv1", "r_conv2"):
            layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
    inputs = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype(np.float32)
    assert np.allclose(same.predict_on_batch(inputs), np.maximum(inputs, 0), atol=1e-5)


def test_scse_reweights_by_channel_and_by_pixel():
    x = keras.Input((6, 6, 4))
    model = keras.Model(x, lm.scse_block(x, "s"))
    inputs = np.random.default_rng(1).random((1, 6, 6, 4)).astype(np.float32)
    out = model.predict_on_batch(inputs)
    assert out.shape == inputs.shape
    assert np.all(out >= 0) and np.all(out <= 2 * inputs + 1e-6)  # two weights in (0, 1), summed


@pytest.mark.parametrize("build", [helpers.new_unet, lm.new_lever_unet])
def test_the_bf16_lever_builds_bfloat16_layers_and_leaves_the_policy_alone(build):
    before = keras.config.dtype_policy().name
    config = lm.lever_config(helpers.training_config("quick"), base_filters=2, mixed_precision=True)  # a record's name
    assert config.precision == "mixed_bfloat16" and levers.LEVERS["bf16"][0] == {"precision": "mixed_bfloat16"}
    model = build(config)
    assert keras.config.dtype_policy().name == before
    assert model.get_layer("down1_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("down1_conv1").kernel.dtype == "float32"
    assert model.get_layer("salt").compute_dtype == "float32"  # the head stays float32


def test_focal_dice_loss_weights_hard_pixels_more():
    truth = np.zeros((2, 8, 8, 1), np.float32)
    truth[:, 2:5, 2:5] = 1
    loss = lambda probs: float(lm.focal_dice_loss(truth, probs.astype(np.float32)))  # noqa: E731
    perfect, right_but_unsure, wrong = truth * 0.999 + 0.0005, 0.3 + 0.4 * truth, 1 - truth
    assert loss(perfect) < 0.01 < loss(right_but_unsure) < loss(wrong)
    focal_only = loss(right_but_unsure) - float(helpers.soft_dice_loss(truth, right_but_unsure.astype(np.float32)))
    p_true = 0.7  # every pixel's probability for its true class
    assert focal_only == pytest.approx(-(1 - p_true) ** 2 * np.log(p_true), rel=1e-4)
    assert lm.STAGE_ONE_LOSSES["focal_dice"] is lm.focal_dice_loss


def test_size_weighted_loss_weighs_small_bodies_salt_by_the_square_root_of_their_share():
    truth = np.zeros((3, 20, 20, 1), np.float32)
    truth[0, 5:7, 5:7] = 1  # 4 of 400 pixels: 1% salt, each salt pixel weighs sqrt(0.1 / 0.01)
    truth[1, :, :10] = 1  # half salt: every pixel weighs 1
    truth[2, 3, 3] = 1  # 0.25% salt: the weight stops at 5
    weights = helpers.keras_to_numpy(lm.small_body_weights(truth))
    assert weights[0][truth[0] == 1] == pytest.approx(np.sqrt(10.0), rel=1e-5)
    assert weights[2][truth[2] == 1] == pytest.approx(lm.SMALL_BODY_MAX_WEIGHT)
    assert (weights[truth == 0] == 1).all() and (weights[1] == 1).all()

    probs = np.where(truth == 1, 0.4, 0.2).astype(np.float32)
    bce = -(truth * np.log(probs) + (1 - truth) * np.log(1 - probs))
    dice = float(helpers.soft_dice_loss(truth, probs))
    sized = float(lm.size_weighted_bce_dice_loss(truth, probs))
    assert sized == pytest.approx((weights * bce).mean() + dice, rel=1e-4)
    assert sized > float(helpers.bce_dice_loss(truth, probs))  # the missed small bodies cost more
    # without a slice under 10% salt it is the series' loss
    assert float(lm.size_weighted_bce_dice_loss(truth[1:2], probs[1:2])) == pytest.approx(
        float(helpers.bce_dice_loss(truth[1:2], probs[1:2])), rel=1e-6)
    assert lm.STAGE_ONE_LOSSES["sized_bce_dice"] is lm.size_weighted_bce_dice_loss
    assert lm.size_weighted_bce_dice_loss in lm.EMPTY_HEAD_LOSSES


def test_shift_batch_moves_images_and_masks_together():
    batch = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1)
    moved = lm.shift_batch(batch, np.array([[2, 0], [0, -1]]))
    assert np.array_equal(moved[0, 2:], batch[0, :4])  # down by 2
    assert np.array_equal(moved[1, :, :5], batch[1, :, 1:])  # left by 1
    assert np.array_equal(moved[0, :2], batch[0, 2:0:-1])  # reflected in at the edge
    assert lm.shift_batch(batch, np.zeros((2, 2), int)) is batch


def test_train_feed_shifts_only_when_asked_and_the_same_after_a_resume():
    rng = np.random.default_rng(0)
    x = rng.random((10, 16, 16, 1)).astype(np.float32)
    plain = helpers.TrainFeed(x, x.copy(), 4, seed=3)
    shifted = lm.ShiftedFeed(x, x.copy(), 4, seed=3, shift_pixels=3)
    assert np.array_equal(plain.order, shifted.order) and np.array_equal(plain.flips, shifted.flips)
    assert lm.lever_feed(lm.lever_config(helpers.training_config("quick"))) is helpers.TrainFeed  # no shift: the series'
    assert lm.ShiftedFeed(x, x.copy(), 4, seed=3).shifts is None and np.abs(shifted.shifts).max() <= 3
    xb, yb = shifted[0]
    assert np.array_equal(xb, yb) and not np.array_equal(xb, plain[0][0])  # image and mask moved alike
    shifted.on_epoch_end()
    resumed = lm.ShiftedFeed(x, x.copy(), 4, seed=3, shift_pixels=3, start_epoch=1)
    assert np.array_equal(resumed[1][0], shifted[1][0])


def test_the_levers_are_checked_by_name_by_one_rule():
    config = lm.lever_config(helpers.training_config("quick"))
    for change in (dict(block="dense"), dict(stage_one_loss="mse"), dict(shift_pixels=-1), dict(upscale=3)):
        field = next(iter(change))
        with pytest.raises(ValueError, match=f"{field}="):
            replace(config, **change)
        with pytest.raises(ValueError, match=f"{field}="):
            lm.check_levers(**change)
    with pytest.raises(ValueError, match="block='dense'"):
        lm.build_lever_unet(base_filters=2, block="dense")


def test_screen_epochs_follow_each_levers_speed_and_share():
    speed = {"series": {"images_per_s": 40.0}, "residual": {"images_per_s": 30.0}, "bf16": {"images_per_s": 46.0}}
    assert levers.screen_epochs("series", speed, 28) == (28, 28)
    assert levers.screen_epochs("residual", speed, 28) == (21, 21)
    assert levers.screen_epochs("bf16", speed, 28) == (32, 32)
    assert levers.screen_epochs("series-seed43", speed, 28) == (28, 28)  # not in the speed table: the series'
    speed["focal-dice"] = {"images_per_s": 44.0}  # the same model as the series': the probe's noise, ignored
    assert levers.screen_epochs("focal-dice", speed, 28) == (28, 28)
    assert levers.screen_epochs("lovasz-0.7", speed, 28) == (17, 39)
    assert levers.screen_epochs("residual", None, 28) == (28, 28)
    with pytest.raises(ValueError, match="speed record has no 'wide' row"):
        levers.screen_epochs("wide", speed, 28)  # four times the convolutions: never at the series' speed
    assert levers.screen_epochs("residual", speed, 28, stage_one_only=True) == (21, 0)
    with pytest.raises(ValueError, match="lovasz-0.7 changes stage 2's share"):
        levers.screen_epochs("lovasz-0.7", speed, 28, stage_one_only=True)


def test_the_screen_table_pairs_each_lever_with_the_series(tmp_path):
    def record(name, scores):
        return {"lever": name, "held_out_per_image": scores, "held_out_score": float(np.mean(scores)),
                "stage_epochs": [3, 2], "val_score": 0.5,
                "postprocessing": dict(threshold=0.5, min_peak=0.7, flip_tta=True, min_pixels=0)}
    base = [0.0, 0.5, 1.0, 1.0]
    (tmp_path / "series.json").write_text(json.dumps(record("series", base)))
    (tmp_path / "scse.json").write_text(json.dumps(record("scse", [0.1, 0.6, 1.0, 1.0])))
    rows = levers.table(tmp_path).splitlines()
    assert rows[2].startswith("| series |") and rows[3].startswith("| scse |")
    assert "+0.0500 (+0.000 to +0.100)" in rows[3] and "under 10% salt" not in rows[0]
    # with each held-out slice's salt fraction recorded: the scores by salt size, with their counts
    (tmp_path / "series.json").write_text(json.dumps(dict(record("series", base),
                                                          held_out_coverage=[0.0, 0.05, 0.5, 0.0])))
    rows = levers.table(tmp_path).splitlines()
    assert "| empty (2) | under 10% salt (1) | 10% salt or more (1) |" in rows[0]
    assert "| +0.0500 (+0.000 to +0.100) | 0.550 | 0.600 | 1.000 |" in rows[3]
    (tmp_path / "series.json").unlink()
    with pytest.raises(SystemExit, match="no series.json"):
        levers.table(tmp_path)


def test_the_pooled_table_pairs_every_split_s_slices_with_that_split_s_series(tmp_path):
    def record(seed, scores, coverage):
        return {"seed": seed, "held_out_per_image": scores, "held_out_score": float(np.mean(scores)),
                "held_out_coverage": coverage}
    for seed, base, lever in ((1, [0.0, 1.0, 0.5], [0.2, 1.0, 0.5]), (2, [0.5, 0.5, 1.0], [0.5, 0.3, 1.0])):
        (tmp_path / str(seed)).mkdir()
        (tmp_path / str(seed) / "series.json").write_text(json.dumps(record(seed, base, [0.0, 0.05, 0.5])))
        (tmp_path / str(seed) / "bf16.json").write_text(json.dumps(record(seed, lever, [0.0, 0.05, 0.5])))
    (tmp_path / "1" / "scse.json").write_text(json.dumps(record(1, [1.0] * 3, [0.0, 0.05, 0.5])))  # one split only
    rows = levers.pooled_table([tmp_path / "1", tmp_path / "2"]).splitlines()
    assert rows[0].startswith("| lever | gain on each split (1, 2) | held-out score, 2 splits |")
    assert "| empty (2) | under 10% salt (2) | 10% salt or more (2) |" in rows[0]
    assert rows[2].startswith("| series | – | 0.5833 | – |")
    assert rows[3].startswith("| bf16 | +0.0667, -0.0667 | 0.5833 | +0.0000 (")
    assert rows[3].endswith("| 0.350 | 0.650 | 0.750 |") and len(rows) == 4  # scse is not on every split


def test_packed_data_round_trip_and_a_bad_file(tmp_path):
    data = helpers.make_synthetic_dataset(5, seed=2)
    path = helpers.pack_salt_data(data, tmp_path / "packed" / "data.npz")
    back = helpers.load_packed_salt_data(path, limit=3)
    assert list(back.ids) == list(data.ids[:3]) and back.masks.dtype == bool
    assert np.array_equal(back.images, data.images[:3]) and np.array_equal(back.masks, data.masks[:3])
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 5, 5)))
    with pytest.raises(helpers.SaltDataError, match="other.npz: not a packed data file"):
        helpers.load_packed_salt_data(tmp_path / "other.npz")


def test_the_pooled_table_takes_each_split_s_series_from_its_own_record(tmp_path):
    def record(scores):
        return {"seed": 1, "held_out_per_image": scores, "held_out_score": float(np.mean(scores))}
    for split, base, lever in (("a", [0.0, 1.0], [1.0, 1.0]), ("b", [0.5, 0.5], [0.5, 0.0])):
        (tmp_path / split).mkdir()
        (tmp_path / split / "bf16.json").write_text(json.dumps(record(lever)))
        (tmp_path / f"series-{split}.json").write_text(json.dumps(record(base)))
    rows = levers.pooled_table([tmp_path / "a", tmp_path / "b"],
                               series=[tmp_path / "series-a.json", tmp_path / "series-b.json"]).splitlines()
    assert rows[3].startswith("| bf16 | +0.5000, -0.2500 | 0.6250 | +0.1250 (")
    with pytest.raises(SystemExit, match="no series.json"):
        levers.pooled_table([tmp_path / "a", tmp_path / "b"])


def test_a_table_against_another_run_pairs_every_lever_with_it_and_refuses_another_split(tmp_path):
    def record(scores, seed=1):
        return {"seed": seed, "held_out": len(scores), "held_out_per_image": scores,
                "held_out_score": float(np.mean(scores)), "stage_epochs": [3, 2], "val_score": 0.5,
                "postprocessing": {"threshold": 0.5, "flip_tta": True, "min_peak": 0.7, "min_pixels": 0}}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "series.json").write_text(json.dumps(record([1.0, 1.0])))
    (tmp_path / "runs" / "wide.json").write_text(json.dumps(record([1.0, 0.0])))
    (tmp_path / "sixty.json").write_text(json.dumps(record([0.5, 0.0])))
    rows = levers.table(tmp_path / "runs", against=tmp_path / "sixty.json").splitlines()
    assert rows[0].endswith("| paired gain over the --against run, 0.2500 (95% interval) |")
    assert rows[2].startswith("| series |") and rows[2].endswith("| +0.7500 (+0.500 to +1.000) |")
    assert rows[3].startswith("| wide |") and rows[3].endswith("| +0.2500 (+0.000 to +0.500) |")
    (tmp_path / "other-split.json").write_text(json.dumps(record([0.5, 0.0], seed=2)))
    with pytest.raises(SystemExit, match="other-split.json: split --seed 2"):
        levers.table(tmp_path / "runs", against=tmp_path / "other-split.json")
