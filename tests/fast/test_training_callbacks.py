"""Training's callbacks, one call at a time (no training beyond a few steps): counters put back on resume,
a crash while saving keeps the previous best, a full disk or a truncated file is named, model.fit run
again adds no duplicate epochs, an unwritable run folder fails early, and the averaged
weights (Adam's moving average) are swapped in and out as 03_train teaches."""

import inspect
import json
from pathlib import Path

import keras
import numpy as np
import pytest

import helpers


def test_counters_are_put_back_on_resume(tmp_path):
    config = helpers.TrainingConfig(setting="test", epochs=10, base_filters=2)
    model = helpers.compile_unet(helpers.build_unet(base_filters=2))
    state = {"plateau": {"wait": 3, "best": 0.25, "cooldown_counter": 0},
             "early": {"wait": 7, "best": 0.25, "best_epoch": 4},
             "learning_rate": 1e-4, "best_checkpoint": 0.25, "train_seconds": 120.0, "history": []}
    callbacks = helpers.make_callbacks(config, tmp_path, state)
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    averaged, _, plateau, early, checkpoint, budget, _ = callbacks  # config's default: averaged weights
    assert (plateau.wait, plateau.best) == (3, 0.25)
    assert (early.wait, early.best, early.best_epoch) == (7, 0.25, 4)
    assert checkpoint.best == 0.25 and budget.spent_s == 120.0
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)


def test_crash_while_saving_keeps_the_previous_best(tmp_path, monkeypatch):
    config = helpers.TrainingConfig(setting="test", epochs=1, base_filters=2)
    model = helpers.compile_unet(helpers.build_unet(base_filters=2))
    checkpoint = helpers.make_callbacks(config, tmp_path)[-3]
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 0.5})
    before = (tmp_path / "best.keras").read_bytes()
    assert json.loads((tmp_path / "best.json").read_text()) == {"val_loss": 0.5, "epoch": 1}

    def crash(model, path, *args, **kwargs):
        Path(path).write_bytes(b"half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", crash)  # best.keras is saved from a copy without the optimizer
    with pytest.raises(OSError):
        checkpoint.on_epoch_end(1, {"val_loss": 0.4})
    monkeypatch.undo()
    assert (tmp_path / "best.keras").read_bytes() == before
    assert json.loads((tmp_path / "best.json").read_text())["val_loss"] == 0.5
    assert not list(tmp_path.glob("*.partial*"))  # the half-written file is gone
    helpers.load_model_safely(tmp_path / "best.keras")
    checkpoint.on_epoch_end(2, {"val_loss": 0.9})  # worse: nothing is written
    assert (tmp_path / "best.keras").read_bytes() == before


def test_a_full_disk_names_the_file_and_the_room_a_snapshot_needs(tmp_path):
    model = helpers.compile_unet(helpers.build_unet(base_filters=2), ema_momentum=0.99)
    snapshot = tmp_path / "resume" / "epoch-0003.keras"
    snapshot.parent.mkdir()

    def crash(path, *args, **kwargs):
        Path(path).write_bytes(b"half a zip")
        raise OSError(28, "No space left on device")

    model.save = crash
    megabytes = model.count_params() * 16 / 1e6  # weights, Adam's two moments and the average, in float32
    with pytest.raises(OSError, match=rf"epoch-0003.keras could not be written \(No space left on device\): "
                                      rf"it needs about {megabytes:.0f} MB free in .*resume"):
        helpers.save_model_atomically(model, snapshot)
    assert not list(snapshot.parent.iterdir())  # no epoch-0003.partial.keras left behind


def test_a_truncated_snapshot_is_called_damaged_with_the_way_on(tmp_path):
    model = helpers.compile_unet(helpers.build_unet(base_filters=2))
    (tmp_path / "resume").mkdir()
    snapshot = helpers.save_model_atomically(model, tmp_path / "resume" / "epoch-0002.keras")
    whole = snapshot.read_bytes()
    snapshot.write_bytes(whole[:len(whole) // 2])  # what a full disk or a cut Drive sync leaves
    with pytest.raises(ValueError, match=r"epoch-0002.keras is damaged \(not a whole .keras file.*delete the "
                                         r"folder .*resume to start training over \(best.keras is kept\)"):
        helpers.load_model_safely(snapshot)
    best = tmp_path / "best.keras"
    best.write_bytes(whole[:100])
    with pytest.raises(ValueError, match="best.keras is damaged .*new SALT_RUN_DIR"):
        helpers.load_model_safely(best)


def test_model_fit_run_again_with_a_stale_initial_epoch_adds_no_epochs(tmp_path):
    """03_train: running only the model.fit cell again after the stage trained must not append duplicates."""
    config = helpers.TrainingConfig(setting="test", epochs=2, base_filters=2, batch_size=4)
    data = helpers.make_synthetic_dataset(8, seed=0)
    x, y = helpers.to_network_input(data.images), helpers.to_network_target(data.masks)
    model = helpers.compile_unet(helpers.build_unet(base_filters=2, depth=2), ema_momentum=config.ema_momentum)
    callbacks = helpers.make_callbacks(config, tmp_path)
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=4, verbose=0, callbacks=callbacks)
    with pytest.raises(RuntimeError, match="epoch 1 is trained already .2 epochs are in history.csv"):
        model.fit(x, y, validation_data=(x, y), epochs=2, initial_epoch=0, batch_size=4, verbose=0,
                  callbacks=callbacks)
    assert list(helpers.training_history(tmp_path)["epoch"]) == [1, 2]


def test_unwritable_run_folder_fails_early_with_what_to_fix(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="cannot be written.*SALT_RUN_DIR"):
        helpers.ensure_run_dir(blocker / "run")

    def disk_full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(PermissionError, match="No space left on device.*Free some disk space"):
        helpers.ensure_run_dir(tmp_path / "run")


def test_ema_momentum_must_be_below_one():
    with pytest.raises(ValueError, match="ema_momentum=1.0 must be"):
        helpers.compile_unet(helpers.build_unet(base_filters=2), ema_momentum=1.0)


def test_keras_still_keeps_where_the_average_is_in_the_attribute_the_series_sets():
    """AveragedWeights sets SwapEMAWeights' private _ema_weights_in_model: fail loudly if Keras renames it."""
    assert keras.callbacks.SwapEMAWeights(swap_on_epoch=True)._ema_weights_in_model is False
    assert "_ema_weights_in_model" in inspect.getsource(keras.callbacks.SwapEMAWeights.on_epoch_begin)


@pytest.mark.parametrize("resumed", [True, False], ids=["resumed", "new-run"])
def test_a_resumed_run_swaps_the_raw_weights_back_before_its_first_epoch(resumed):
    """A resume snapshot is saved at an epoch's end: its model holds the average, its optimizer the raw weights.

    AveragedWeights(resumed=True) puts the raw weights back into the model as the first epoch
    begins (and the average back into the optimizer), so training goes on from the raw ones; a new
    run's model holds its raw weights already, and nothing is swapped.
    """
    model = helpers.compile_unet(helpers.build_unet(base_filters=2, depth=2), ema_momentum=0.9)
    model.optimizer.build(model.trainable_variables)
    slots = model.optimizer._model_variables_moving_average
    rng = np.random.default_rng(0)
    in_model = [rng.standard_normal(v.shape).astype("float32") for v in model.trainable_variables]
    in_optimizer = [rng.standard_normal(v.shape).astype("float32") for v in model.trainable_variables]
    for variable, model_value, slot, optimizer_value in zip(model.trainable_variables, in_model, slots, in_optimizer):
        variable.assign(model_value)
        slot.assign(optimizer_value)

    callback = helpers.AveragedWeights(resumed=resumed)
    callback.set_model(model)
    callback.on_epoch_begin(0)
    weights = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    averages = [keras.ops.convert_to_numpy(v) for v in slots]
    raw, average = (in_optimizer, in_model) if resumed else (in_model, in_optimizer)
    # (TensorFlow swaps by adding and subtracting: equal up to rounding)
    assert all(np.allclose(w, r, atol=1e-6) for w, r in zip(weights, raw))
    assert all(np.allclose(a, r, atol=1e-6) for a, r in zip(averages, average))


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="only JAX can share one array between a weight and its average: on "
                           f"{keras.backend.backend()} this passes whatever AveragedWeights does (make test-jax runs it)")
def test_the_last_epochs_average_is_a_copy_so_predict_then_save_works(tmp_path):
    """At the epoch cap Keras copies the weights into the average; sharing one array breaks JAX on a GPU.

    A JAX predict on a GPU frees the model's arrays it was given (buffer donation), so an average
    that shares them makes the next save fail ("Array has been deleted", seen on an H200 when a
    benchmark callback predicted after the last epoch). The CPU does not free them, so this checks
    the cause: no average holds the same array as a weight, at each epoch's end and after fit.
    TensorFlow's variables never share, so the check bites on JAX only: it skips elsewhere, and
    ``make test-jax`` (and ``make test-backends``) run it there.
    """
    assert "_backend_finalize_ema_values" in inspect.getsource(keras.callbacks.SwapEMAWeights)
    model = helpers.compile_unet(helpers.build_unet(base_filters=2, depth=2), ema_momentum=0.9)
    data = helpers.make_synthetic_dataset(8, seed=4)
    x, y = helpers.to_network_input(data.images), helpers.to_network_target(data.masks)

    shared = []

    class PredictAfterEachEpoch(keras.callbacks.Callback):  # what the benchmark's held-out scorer does
        def on_epoch_end(self, epoch, logs=None):
            optimizer = self.model.optimizer
            pairs = list(zip(optimizer._trainable_variables, optimizer._model_variables_moving_average))
            shared.extend(weights.path for weights, average in pairs if average.value is weights.value)
            if epoch == 1:  # the last: Keras has just put the weights into the average too
                assert all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(w))
                           for w, a in pairs)
            self.model.predict(x, verbose=0)
            helpers.save_model_atomically(self.model, tmp_path / f"epoch-{epoch}.keras")

    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[helpers.AveragedWeights(), PredictAfterEachEpoch()])
    optimizer = model.optimizer
    pairs = list(zip(optimizer._trainable_variables, optimizer._model_variables_moving_average))
    shared.extend(weights.path for weights, average in pairs if average.value is weights.value)  # after fit
    assert shared == []
    model.predict(x, verbose=0)
    helpers.save_model_atomically(model, tmp_path / "after-fit.keras")
    assert (tmp_path / "epoch-1.keras").is_file()
