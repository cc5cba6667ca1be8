"""The two stages: stage 2 (the Lovász hinge) starts from stage 1's best checkpoint and resumes on its
own, and one time budget covers both."""

import json
from pathlib import Path

import pytest

import helpers


def _two_stage_run(run_dir, **overrides):
    data = helpers.make_synthetic_dataset(96, seed=1)
    train, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=1)
    config = helpers.TrainingConfig(setting="test", **{**dict(epochs=2, finetune_epochs=1, batch_size=8,
                                                              steps_per_epoch=2, base_filters=2), **overrides})
    return config, helpers.train_unet(config, data.subset(train), data.subset(val), run_dir, verbose=0)


def test_stage_two_starts_from_stage_one_best_and_resumes_on_its_own(tmp_path, capsys, monkeypatch):
    loaded = []
    load = helpers.load_model_safely
    monkeypatch.setattr(helpers, "load_model_safely", lambda path: loaded.append(Path(path)) or load(path))
    config, history = _two_stage_run(tmp_path)
    assert loaded == [tmp_path / "best.keras"]  # stage 2 began from stage 1's best checkpoint, nothing else
    assert history["stage"].tolist() == [1, 1, 2] and history["epoch"].tolist() == [1, 2, 3]
    assert history["train_seconds"].is_monotonic_increasing
    assert helpers.final_checkpoint(tmp_path, config) == tmp_path / "lovasz" / "best.keras"
    snapshot = tmp_path / "lovasz" / "resume" / helpers.load_run_state(tmp_path / "lovasz")["snapshot"]
    assert load(snapshot).loss is helpers.lovasz_hinge_loss  # best.keras holds no loss: the network only
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


def test_the_time_budget_covers_both_stages(tmp_path):
    # A budget far shorter than one epoch: each stage still runs one epoch, then stops.
    _, history = _two_stage_run(tmp_path, epochs=5, finetune_epochs=5, time_budget_min=1e-4)
    assert history["stage"].tolist() == [1, 2]
    # No stage 2: the whole budget is stage 1's.
    config, history = _two_stage_run(tmp_path / "one", finetune_epochs=0)
    assert history["stage"].tolist() == [1, 1] and not (tmp_path / "one" / "lovasz").exists()
    assert helpers.final_checkpoint(tmp_path / "one", config) == tmp_path / "one" / "best.keras"
