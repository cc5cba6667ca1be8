"""One notebook run on purpose (papermill), in a run folder of its own: a runtime without the split makes
notebook 1's again, and evaluation before training says to train first."""

import os
from pathlib import Path

import papermill
import pytest

import helpers
from support import ROOT, SERIES_WARNINGS, quick_synthetic


def execute(notebook, run_dir, env):
    saved = dict(os.environ)
    os.environ.update({"SALT_DATA_DIR": "synthetic", "SALT_SETTING": "quick", "SALT_RUN_DIR": str(run_dir),
                       "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": SERIES_WARNINGS, **env})
    try:
        papermill.execute_notebook(str(ROOT / notebook), str(Path(run_dir) / notebook), cwd=str(ROOT),
                                   kernel_name="python3", progress_bar=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_runtime_without_the_split_makes_the_same_one(tmp_path):
    """02 in an empty run folder (a Colab runtime of its own, say) makes notebook 1's split again.

    Notebook 1's split is stratified_split + save_split on the same data and seed; that the nbval run's
    split.csv is this one is checked by test_notebook_three_stage_one_is_what_the_helpers_train.
    """
    config, data = quick_synthetic()
    expected = tmp_path / "expected"
    train, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), 0.2,
                                          seed=config.seed)
    helpers.save_split(expected, data, train, val)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    execute("02_build_unet.ipynb", runtime, {})
    assert (runtime / "split.csv").read_text() == (expected / "split.csv").read_text()
    assert "made it again" in (runtime / "02_build_unet.ipynb").read_text()


@pytest.mark.parametrize("with_split", [False, True])
def test_evaluate_before_train_says_run_train(tmp_path, with_split):
    if with_split:
        config, data = quick_synthetic()
        train, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)),
                                              seed=config.seed)
        helpers.save_split(tmp_path, data, train, val)
    with pytest.raises(papermill.PapermillExecutionError, match=f"run 03_train.ipynb first .*{tmp_path.name}"):
        execute("04_evaluate.ipynb", tmp_path, {})
