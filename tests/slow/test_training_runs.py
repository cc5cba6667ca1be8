"""Training runs never lose work and repeat themselves: a run killed mid-epoch resumes where it was, the
same seed gives the same result, and a saved model reloads and keeps training."""

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
from support import ROOT, SERIES_WARNINGS


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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": SERIES_WARNINGS, **(env or {})}
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(run_dir)], cwd=ROOT, env=env, **kwargs)


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


def test_compiled_model_with_the_series_loss_reloads_and_keeps_training(tmp_path):
    model = helpers.compile_unet(helpers.build_unet(base_filters=2))
    x = np.random.default_rng(7).random((4, 16, 16, 1)).astype(np.float32)
    y = (x > 0.5).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    loaded = helpers.load_model_safely(helpers.save_model_atomically(model, tmp_path / "m.keras"))
    assert loaded.loss is helpers.bce_dice_loss or getattr(loaded.loss, "__name__", "") == "bce_dice_loss"
    assert np.isclose(loaded.evaluate(x, y, verbose=0)[0], model.evaluate(x, y, verbose=0)[0], rtol=1e-5)
    loaded.fit(x, y, epochs=1, verbose=0)
