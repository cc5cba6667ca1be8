"""The run folder the four notebooks wrote under nbval in `make test`.

`make test` runs the four notebooks once, with nbval, into a run folder of its own, then points
SALT_SERIES_RUN_DIR at that folder and runs this folder's tests (marked ``after_notebooks`` by
tests/conftest.py): what the run left, and that 03_train.ipynb's stage 1 is exactly what the helpers
train. Without SALT_SERIES_RUN_DIR they skip.
"""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import helpers
from support import quick_synthetic


RUN_OUTPUTS = ["split.csv", "best.keras", "best.json", "history.csv", "lovasz/best.keras", "lovasz/best.json",
               "lovasz/history.csv", "metrics.json", "learning_curves.png"]


@pytest.fixture(scope="module")
def nbval_run():
    """The run folder the four notebooks wrote under nbval in `make test` (SALT_SERIES_RUN_DIR)."""
    folder = os.environ.get("SALT_SERIES_RUN_DIR")
    if not folder:
        pytest.skip("checks a run of the four notebooks: SALT_SERIES_RUN_DIR is unset (`make test` sets it "
                    "to the folder its nbval run wrote)")
    folder = Path(folder)
    if not folder.is_dir():
        pytest.fail(f"SALT_SERIES_RUN_DIR={folder}: no such folder")
    return folder


def test_series_leaves_its_outputs(nbval_run):
    missing = [name for name in RUN_OUTPUTS if not (nbval_run / name).is_file()]
    assert not missing, f"{nbval_run} lacks {missing}"
    history = helpers.training_history(nbval_run)
    config = helpers.training_config("quick")
    assert history["stage"].tolist() == [1] * config.epochs + [2] * config.finetune_epochs
    metrics = json.loads((nbval_run / "metrics.json").read_text())
    assert metrics["setting"] == "quick" and "synthetic" in metrics["data"], metrics


@pytest.mark.slow
def test_notebook_three_stage_one_is_what_the_helpers_train(nbval_run, tmp_path):
    """03_train.ipynb trains stage 1 cell by cell; helpers.train_unet's stage 1 must give the same epochs."""
    config, data = quick_synthetic()
    train_index, val_index = helpers.split_for_run(tmp_path, data, seed=config.seed)
    assert (tmp_path / "split.csv").read_text() == (nbval_run / "split.csv").read_text(), \
        "the run's split is not the one the helpers make from the same data and seed"
    arrays = helpers.network_arrays(data.subset(train_index), data.subset(val_index))
    first = helpers.stage_one_config(config)
    helpers.train_stage(first, tmp_path, lambda: helpers.new_unet(first), arrays, verbose=0)  # as train_unet does
    notebook = pd.read_csv(nbval_run / "history.csv")
    ours = pd.read_csv(tmp_path / "history.csv")
    assert notebook["epoch"].tolist() == ours["epoch"].tolist() == list(range(1, config.epochs + 1))
    for column in ("val_loss", "loss"):
        assert ours[column].tolist() == pytest.approx(notebook[column].tolist(), rel=1e-5), column
