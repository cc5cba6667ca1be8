"""Training never loses work: resume after SIGKILL, atomic checkpoints, restored counters, determinism."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
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
    _, plateau, early, checkpoint, budget, _ = callbacks
    assert (plateau.wait, plateau.best) == (3, 0.25)
    assert (early.wait, early.best, early.best_epoch) == (7, 0.25, 4)
    assert checkpoint.best == 0.25 and budget.spent_s == 120.0
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)


def test_crash_while_saving_keeps_the_previous_best(tmp_path):
    config = helpers.TrainingConfig(setting="test", epochs=1, base_filters=2)
    model = helpers.compile_unet(helpers.build_unet(base_filters=2))
    checkpoint = helpers.make_callbacks(config, tmp_path)[3]
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
