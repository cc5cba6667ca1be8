"""03_train's live view (helpers.TrainingView): a figure that replaces itself each epoch, a short table at
the end, and training exactly as without it (no weight, no random number touched)."""

import keras
import numpy as np

import figures
import helpers


class FakeDisplay:
    """IPython's display, as a notebook kernel has it: the first call shows, the handle's update replaces."""

    def __init__(self):
        self.shown, self.updates = [], []

    def __call__(self, picture, display_id=False):
        self.shown.append(picture)
        return self

    def update(self, picture):
        self.updates.append(picture)


def tiny_run(tmp_path, extra=(), epochs=3):
    data = helpers.make_synthetic_dataset(24, seed=1)
    train, val = data.subset(np.arange(16)), data.subset(np.arange(16, 24))
    config = helpers.TrainingConfig(setting="test", epochs=epochs, base_filters=2, batch_size=8, finetune_epochs=0)
    arrays = helpers.network_arrays(train, val)
    helpers.train_stage(config, tmp_path, lambda: helpers.new_unet(config), arrays, verbose=0, extra_callbacks=extra)
    return val, keras.saving.load_model(tmp_path / "resume" / helpers.load_run_state(tmp_path)["snapshot"],
                                        compile=False).get_weights()


def test_the_view_redraws_in_place_and_leaves_training_as_it_was(tmp_path, monkeypatch, capsys):
    shown = FakeDisplay()
    monkeypatch.setattr(figures, "_notebook_display", lambda: shown)
    data = helpers.make_synthetic_dataset(24, seed=1)
    view = helpers.TrainingView(data.images[20], data.masks[20], helpers.predict_salt, title="Stage 1")
    _, with_view = tiny_run(tmp_path / "with", [view])
    _, without = tiny_run(tmp_path / "without")
    assert all(np.array_equal(a, b) for a, b in zip(with_view, without)), "the view changed the training"
    assert len(shown.shown) == 1 and len(shown.updates) == 2  # one figure, replaced after epochs 2 and 3
    assert shown.updates[-1].data.startswith(b"\x89PNG")
    assert [row["epoch"] for row in view.rows] == [1, 2, 3] and len(view.seconds) == len(view.epoch_seconds) == 3
    printed = capsys.readouterr().out
    assert "best val_loss" in printed and "The view:" in printed and "% of a" in printed


def test_outside_a_notebook_the_view_draws_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "_notebook_display", lambda: None)
    data = helpers.make_synthetic_dataset(24, seed=1)
    view = helpers.TrainingView(data.images[20], data.masks[20], helpers.predict_salt)
    tiny_run(tmp_path, [view], epochs=1)
    assert view.cost() == "The view drew nothing (no notebook)."


def test_the_short_table_keeps_the_first_the_cuts_the_best_and_the_last():
    view = figures.TrainingView(np.zeros((101, 101), np.uint8), np.zeros((101, 101), bool), None, table_rows=4)
    rates = [1e-3] * 12 + [1e-4] * 8
    losses = np.linspace(1, 0.5, 20)
    view.rows = [{"epoch": e + 1, "loss": losses[e], "val_loss": 0.9 - 0.01 * min(e, 13), "learning_rate": rates[e],
                  "minutes": e / 2} for e in range(20)]
    table = view.summary()
    assert table["epoch"].iloc[0] == 1 and table["epoch"].iloc[-1] == 20
    assert 12 in table["epoch"].tolist()  # the epoch after which the rate was cut
    assert table.loc[table["epoch"] == 14, "note"].item() == "best val_loss"
    assert len(table) <= 4 + 3
