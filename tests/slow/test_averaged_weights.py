"""The averaged weights (Adam's moving average of the weights, 03_train): Keras averages as the notebook
teaches, and a run cut off and resumed validates and checkpoints the same averaged model."""

import json

import keras
import numpy as np
import pytest

import helpers


class _Interrupted(Exception):
    pass


def test_averaged_weights_are_validated_checkpointed_and_resumed_exactly(tmp_path):
    # Dropout off, so a run cut off after epoch 2 and resumed must repeat the uninterrupted run:
    # the snapshot holds the averaged weights and its optimizer the raw ones, and the resumed
    # run has to swap them back before it trains on.
    data = helpers.make_synthetic_dataset(96, seed=1)
    train, val = [data.subset(i) for i in
                  helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=1)]
    config = helpers.TrainingConfig(setting="test", epochs=4, batch_size=8, steps_per_epoch=3, base_filters=2,
                                    dropout=0.0, plateau_patience=20, early_stop_patience=20)
    assert config.ema_momentum == 0.99
    whole = helpers.train_unet(config, train, val, tmp_path / "whole", verbose=0)

    class CutOff(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise _Interrupted

    with pytest.raises(_Interrupted):
        helpers.train_unet(config, train, val, tmp_path / "cut", verbose=0, extra_callbacks=[CutOff()])
    assert json.loads((tmp_path / "cut" / "resume" / "state.json").read_text())["epochs_done"] == 2
    resumed = helpers.train_unet(config, train, val, tmp_path / "cut", verbose=0)
    assert np.allclose(resumed["val_loss"], whole["val_loss"], rtol=1e-4, atol=1e-6), (resumed, whole)

    # The checkpoint is the model that was validated: the averaged weights, not the raw ones.
    best = json.loads((tmp_path / "whole" / "best.json").read_text())
    model = helpers.load_model_safely(tmp_path / "whole" / "best.keras")
    assert getattr(model, "optimizer", None) is None  # the network and its weights only: a quarter of a snapshot
    assert (tmp_path / "whole" / "best.keras").stat().st_size < 0.6 * max(  # a small UNet: its config weighs too
        p.stat().st_size for p in (tmp_path / "whole" / "resume").glob("epoch-*.keras"))
    helpers.compile_unet(model)
    x_val, y_val = helpers.to_network_input(val.images), helpers.to_network_target(val.masks)
    assert model.evaluate(x_val, y_val, verbose=0)[0] == pytest.approx(best["val_loss"], rel=1e-4)


def test_keras_averages_the_weights_the_way_03_train_teaches():
    # 03_train: the average starts at the weights after the first step, then
    # average = m * average + (1 - m) * weights after every step. Keras' fit ends by putting the
    # average into the model, so the model after fit must equal the formula applied by hand.
    momentum = 0.9
    model = helpers.compile_unet(helpers.build_unet(base_filters=2, depth=2), learning_rate=1e-2,
                                 ema_momentum=momentum)
    trainable = [v.path for v in model.trainable_variables]
    raw = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables])

    data = helpers.make_synthetic_dataset(12, seed=2)
    x, y = helpers.to_network_input(data.images), helpers.to_network_target(data.masks)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[Record()])
    assert len(raw) == 3 and [v.path for v in model.trainable_variables] == trainable
    average = raw[0]
    for weights in raw[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    got = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert all(np.allclose(g, a, atol=1e-6) for g, a in zip(got, average))
    assert not all(np.allclose(g, r, atol=1e-6) for g, r in zip(got, raw[-1]))  # not the raw weights
