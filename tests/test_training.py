"""Training never loses work (resume after SIGKILL, atomic checkpoints, restored counters, determinism),
its two stages chain and resume, and the stage-2 Lovász loss is right."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers

ROOT = Path(__file__).resolve().parents[1]

# A small, fast recipe: 4-filter UNet, 6 short epochs, patience large enough to run them all.
TRAIN_SCRIPT = textwrap.dedent("""
    import sys
    import helpers
    run_dir = sys.argv[1]
    data = helpers.make_synthetic_dataset(160, seed=1)
    train, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=1)
    config = helpers.TrainingConfig(setting="test", epochs=6, batch_size=8, steps_per_epoch=6,
                                    base_filters=4, plateau_patience=2, early_stop_patience=20, seed=3)
    helpers.train_unet(config, data.subset(train), data.subset(val), run_dir, verbose=0)
""")


def run_training(run_dir, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(run_dir)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kwargs)


def read_state(run_dir):
    path = Path(run_dir) / "resume" / "state.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    process = run_training(run_dir)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = read_state(run_dir)
        if state and state["epochs_done"] >= 2:
            break
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.2)
    else:
        pytest.fail("training did not reach epoch 2 in time")
    time.sleep(0.5)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = read_state(run_dir)
    assert not killed_at["finished"] and 2 <= killed_at["epochs_done"] < 6
    best_before = json.loads((run_dir / "best.json").read_text())["val_loss"]

    resumed = run_training(run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"Resuming from the end of epoch {killed_at['epochs_done']}" in output
    final = read_state(run_dir)
    history = pd.read_csv(run_dir / "history.csv")
    assert final["finished"] and final["epochs_done"] == 6
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]  # each epoch once, none repeated or lost
    assert history.iloc[:killed_at["epochs_done"]]["val_loss"].tolist() == \
        [row["val_loss"] for row in killed_at["history"]]
    best_after = json.loads((run_dir / "best.json").read_text())["val_loss"]
    assert best_after <= best_before
    assert best_after == pytest.approx(history["val_loss"].min())
    helpers.load_model_safely(run_dir / "best.keras")
    assert len(list((run_dir / "resume").glob("epoch-*.keras"))) == 1


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


def test_crash_while_saving_keeps_the_previous_best(tmp_path):
    config = helpers.TrainingConfig(setting="test", epochs=1, base_filters=2)
    model = helpers.compile_unet(helpers.build_unet(base_filters=2))
    checkpoint = helpers.make_callbacks(config, tmp_path)[-3]
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 0.5})
    before = (tmp_path / "best.keras").read_bytes()
    assert json.loads((tmp_path / "best.json").read_text()) == {"val_loss": 0.5, "epoch": 1}

    def crash(path, *args, **kwargs):
        Path(path).write_bytes(b"half a zip")
        raise OSError(28, "No space left on device")

    model.save = crash
    with pytest.raises(OSError):
        checkpoint.on_epoch_end(1, {"val_loss": 0.4})
    assert (tmp_path / "best.keras").read_bytes() == before
    assert json.loads((tmp_path / "best.json").read_text())["val_loss"] == 0.5
    helpers.load_model_safely(tmp_path / "best.keras")
    checkpoint.on_epoch_end(2, {"val_loss": 0.9})  # worse: nothing is written
    assert (tmp_path / "best.keras").read_bytes() == before


@pytest.mark.slow
def test_same_seed_same_result(tmp_path):
    results = []
    for name in ("a", "b"):
        process = run_training(tmp_path / name, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        results.append(pd.read_csv(tmp_path / name / "history.csv"))
    columns = ["loss", "val_loss", "accuracy", "val_accuracy"]
    assert np.allclose(results[0][columns], results[1][columns], rtol=1e-4, atol=1e-5)
    data = helpers.make_synthetic_dataset(160, seed=1)  # the script's data and split
    _, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=1)
    probs = [helpers.predict_salt(helpers.load_model_safely(tmp_path / name / "best.keras"), data.images[val])
             for name in ("a", "b")]
    assert np.allclose(probs[0], probs[1], atol=1e-4)
    reports = [helpers.score_report(data.masks[val], p > 0.5) for p in probs]
    assert reports[0] == pytest.approx(reports[1], abs=1e-3)


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


def _two_stage_run(run_dir, **overrides):
    data = helpers.make_synthetic_dataset(96, seed=1)
    train, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=1)
    config = helpers.TrainingConfig(setting="test", **{**dict(epochs=2, finetune_epochs=1, batch_size=8,
                                                              steps_per_epoch=2, base_filters=2), **overrides})
    return config, helpers.train_unet(config, data.subset(train), data.subset(val), run_dir, verbose=0)


@pytest.mark.slow
def test_stage_two_starts_from_stage_one_best_and_resumes_on_its_own(tmp_path, capsys, monkeypatch):
    loaded = []
    load = helpers.load_model_safely
    monkeypatch.setattr(helpers, "load_model_safely", lambda path: loaded.append(Path(path)) or load(path))
    config, history = _two_stage_run(tmp_path)
    assert loaded == [tmp_path / "best.keras"]  # stage 2 began from stage 1's best checkpoint, nothing else
    assert history["stage"].tolist() == [1, 1, 2] and history["epoch"].tolist() == [1, 2, 3]
    assert history["train_seconds"].is_monotonic_increasing
    assert helpers.final_checkpoint(tmp_path, config) == tmp_path / "lovasz" / "best.keras"
    assert load(tmp_path / "lovasz" / "best.keras").loss is helpers.lovasz_hinge_loss
    assert history.loc[2, "learning_rate"] == pytest.approx(config.finetune_learning_rate)

    # A kill after stage 2's first epoch (its state written, not finished) resumes stage 2 only.
    state_path = tmp_path / "lovasz" / "resume" / "state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps(dict(state, finished=False)))
    stage_one_history = (tmp_path / "history.csv").read_text()
    capsys.readouterr()
    _, resumed = _two_stage_run(tmp_path, finetune_epochs=2)
    printed = capsys.readouterr().out
    assert "this stage finished after 2 epochs; nothing to train" in printed
    assert "Resuming from the end of epoch 1 in" in printed
    assert (tmp_path / "history.csv").read_text() == stage_one_history
    assert resumed["stage"].tolist() == [1, 1, 2, 2] and resumed.iloc[:3].equals(history)


@pytest.mark.slow
def test_the_time_budget_covers_both_stages(tmp_path):
    # A budget far shorter than one epoch: each stage still runs one epoch, then stops.
    _, history = _two_stage_run(tmp_path, epochs=5, finetune_epochs=5, time_budget_min=1e-4)
    assert history["stage"].tolist() == [1, 2]
    # No stage 2: the whole budget is stage 1's.
    config, history = _two_stage_run(tmp_path / "one", finetune_epochs=0)
    assert history["stage"].tolist() == [1, 1] and not (tmp_path / "one" / "lovasz").exists()
    assert helpers.final_checkpoint(tmp_path / "one", config) == tmp_path / "one" / "best.keras"


class _Interrupted(Exception):
    pass


@pytest.mark.slow
def test_averaged_weights_are_validated_checkpointed_and_resumed_exactly(tmp_path):
    # Dropout off, so a run cut off after epoch 2 and resumed must repeat the uninterrupted run:
    # the snapshot holds the averaged weights and its optimizer the raw ones, and the resumed
    # run has to swap them back before it trains on.
    import keras

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
    assert read_state(tmp_path / "cut")["epochs_done"] == 2
    resumed = helpers.train_unet(config, train, val, tmp_path / "cut", verbose=0)
    assert np.allclose(resumed["val_loss"], whole["val_loss"], rtol=1e-4, atol=1e-6), (resumed, whole)

    # The checkpoint is the model that was validated: the averaged weights, not the raw ones.
    best = json.loads((tmp_path / "whole" / "best.json").read_text())
    model = helpers.load_model_safely(tmp_path / "whole" / "best.keras")
    assert model.optimizer.use_ema
    x_val, y_val = helpers.to_network_input(val.images), helpers.to_network_target(val.masks)
    assert model.evaluate(x_val, y_val, verbose=0)[0] == pytest.approx(best["val_loss"], rel=1e-4)


def test_ema_momentum_must_be_below_one():
    with pytest.raises(ValueError, match="ema_momentum=1.0 must be"):
        helpers.compile_unet(helpers.build_unet(base_filters=2), ema_momentum=1.0)


@pytest.mark.slow
def test_keras_averages_the_weights_the_way_03_train_teaches():
    # 03_train: the average starts at the weights after the first step, then
    # average = m * average + (1 - m) * weights after every step. Keras' fit ends by putting the
    # average into the model, so the model after fit must equal the formula applied by hand.
    import keras

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


def test_a_config_out_of_range_names_the_field():
    config = helpers.training_config("class")
    for field, value in (("finetune_share", 1.0), ("batch_size", 0), ("learning_rate", -1e-3)):
        with pytest.raises(ValueError, match=f"{field}={value!r}"):
            replace(config, **{field: value})


def test_keras_still_keeps_where_the_average_is_in_the_attribute_the_series_sets():
    """AveragedWeights sets SwapEMAWeights' private _ema_weights_in_model: fail loudly if Keras renames it."""
    import inspect

    import keras

    assert keras.callbacks.SwapEMAWeights(swap_on_epoch=True)._ema_weights_in_model is False
    assert "_ema_weights_in_model" in inspect.getsource(keras.callbacks.SwapEMAWeights.on_epoch_begin)
    assert helpers.AveragedWeights(resumed=True)._ema_weights_in_model is True
    assert helpers.AveragedWeights()._ema_weights_in_model is False


def test_the_last_epochs_average_is_a_copy_so_predict_then_save_works(tmp_path):
    """At the epoch cap Keras copies the weights into the average; sharing one array breaks JAX on a GPU.

    A JAX predict on a GPU frees the model's arrays it was given (buffer donation), so an average
    that shares them makes the next save fail ("Array has been deleted", seen on an H200 when a
    benchmark callback predicted after the last epoch). The CPU does not free them, so this checks
    the cause: no average holds the same array as a weight, at each epoch's end and after fit.
    TensorFlow's variables never share, so the check bites on JAX: ``make test-backends`` runs it there.
    """
    import inspect

    import keras

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
