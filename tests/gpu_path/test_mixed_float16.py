"""The GPU path on this CPU: stage 1 under ``mixed_float16`` (what 03_train turns on when it finds a
GPU), cut off and resumed, then stage 2, against the same run in float32.

TensorFlow and JAX both compute float16 on a CPU (slowly), so what only float16 produces can be
checked here: Adam wrapped in a ``LossScaleOptimizer`` with a finite loss scale, float16 layers
under a float32 head, finite losses, and averaged weights in ``best.keras`` exactly as in float32.
``make test-mixed-precision`` runs it on TensorFlow (then the notebooks under the same policy),
``make test-colab`` on Colab's versions, ``make test-jax`` on JAX.
"""

import json
from dataclasses import replace

import keras
import numpy as np
import pytest

import helpers


class _Interrupted(Exception):
    pass


class CutOff(keras.callbacks.Callback):
    """Stands for a runtime that dies at the start of stage 1's third epoch (after two were saved)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2 and not (self.run_dir / helpers.FINETUNE_DIR).exists():
            raise _Interrupted


def loss_scale(model):
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer), type(model.optimizer)
    return float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))


@pytest.fixture(scope="module")
def data():
    data = helpers.make_synthetic_dataset(96, seed=1)
    return [data.subset(i) for i in helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=1)]


def test_mixed_float16_trains_resumes_and_checkpoints_like_float32(tmp_path, data):
    train, val = data
    full = helpers.TrainingConfig(setting="test", epochs=3, finetune_epochs=2, batch_size=8, steps_per_epoch=3,
                                  base_filters=2, dropout=0.0, plateau_patience=20, early_stop_patience=20)
    half = replace(full, precision="mixed_float16")
    before = keras.config.dtype_policy().name
    run = tmp_path / "float16"
    with pytest.raises(_Interrupted):
        helpers.train_unet(half, train, val, run, verbose=0, extra_callbacks=[CutOff(run)])
    assert keras.config.dtype_policy().name == before  # the policy was for the model, not the process
    state = json.loads((run / "resume" / "state.json").read_text())
    assert state["epochs_done"] == 2 and not state["finished"]
    snapshot = helpers.load_model_safely(run / "resume" / state["snapshot"])
    assert np.isfinite(loss_scale(snapshot)) and loss_scale(snapshot) > 0

    history = helpers.train_unet(half, train, val, run, verbose=0)  # resumes stage 1, then stage 2
    assert list(history["stage"]) == [1, 1, 1, 2, 2]
    assert np.isfinite(history[["loss", "val_loss"]].to_numpy()).all()
    x_val, y_val = helpers.to_network_input(val.images), helpers.to_network_target(val.masks)
    for stage_dir in (run, run / helpers.FINETUNE_DIR):
        snapshot = helpers.load_model_safely(stage_dir / "resume" / helpers.load_run_state(stage_dir)["snapshot"])
        assert np.isfinite(loss_scale(snapshot)) and loss_scale(snapshot) > 0, stage_dir
        assert snapshot.optimizer.inner_optimizer.use_ema, stage_dir
        model = helpers.load_model_safely(stage_dir / "best.keras")
        assert model.get_layer("down1_conv1").compute_dtype == "float16", stage_dir
        assert model.get_layer("down1_conv1").kernel.dtype == "float32", stage_dir  # float32 weights
        assert model.get_layer("salt").compute_dtype == "float32", stage_dir  # and a float32 head
        # the checkpoint is the model that was validated: the averaged weights, not the raw ones
        loss = helpers.lovasz_hinge_loss if stage_dir.name == helpers.FINETUNE_DIR else helpers.bce_dice_loss
        helpers.compile_unet(model, loss=loss)
        best = json.loads((stage_dir / "best.json").read_text())
        assert model.evaluate(x_val, y_val, verbose=0)[0] == pytest.approx(best["val_loss"], rel=1e-3), stage_dir

    # the same seed in float32: after 3 epochs of stage 1 the validation loss is within 5%
    reference = helpers.train_unet(replace(full, finetune_epochs=0), train, val, tmp_path / "float32", verbose=0)
    assert reference["val_loss"].iloc[2] == pytest.approx(history["val_loss"].iloc[2], rel=0.05)


def test_a_float16_checkpoint_loaded_anew_needs_its_loss_scale_from_the_series(tmp_path):
    """Keras wraps Adam in a LossScaleOptimizer only for a model built under mixed_float16: a
    checkpoint loaded in a float32 process is not wrapped by compile (so helpers.compile_unet
    wraps it). When a Keras release restores the policy with the model, this fails: drop the
    workaround in compile_unet then."""
    with helpers.dtype_policy("mixed_float16"):
        built = helpers.build_unet(base_filters=2, depth=2)
    built.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
    assert isinstance(built.optimizer, keras.optimizers.LossScaleOptimizer)  # built under the policy: wrapped
    built.save(tmp_path / "float16.keras")
    loaded = keras.saving.load_model(tmp_path / "float16.keras", compile=False)  # as stage 2 starts, in a float32 process
    assert loaded.get_layer("down1_conv1").compute_dtype == "float16"  # the layers keep their policy ...
    loaded.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")  # ... the model does not
    assert not isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(helpers.compile_unet(loaded).optimizer, keras.optimizers.LossScaleOptimizer)
