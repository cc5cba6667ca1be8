"""The series as a user runs it.

`make test` runs the four notebooks once, with nbval, into a run folder of its own, then points
SALT_SERIES_RUN_DIR at that folder and runs the tests marked ``after_notebooks`` here: what the run
left, and that 03_train.ipynb's stage 1 is exactly what the helpers train. Without
SALT_SERIES_RUN_DIR those tests skip. The other tests run one notebook on purpose (papermill) in a
folder of their own: a runtime without the split, evaluation before training.
"""

import json
import os
from pathlib import Path

import pandas as pd
import papermill
import pytest

import helpers

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "f4k3k4gg13k3y0123456789abcdef00"
RUN_OUTPUTS = ["split.csv", "best.keras", "best.json", "history.csv", "lovasz/best.keras", "lovasz/best.json",
               "lovasz/history.csv", "metrics.json", "learning_curves.png"]


def execute(notebook, run_dir, env):
    saved = dict(os.environ)
    os.environ.update({"SALT_DATA_DIR": "synthetic", "SALT_SETTING": "quick", "SALT_RUN_DIR": str(run_dir),
                       "PYTHONPATH": str(ROOT), **env})
    try:
        papermill.execute_notebook(str(ROOT / notebook), str(Path(run_dir) / notebook), cwd=str(ROOT),
                                   kernel_name="python3", progress_bar=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def quick_synthetic():
    """The nbval run's config and data: SALT_SETTING=quick, SALT_DATA_DIR=synthetic."""
    config = helpers.training_config("quick")
    return config, helpers.make_synthetic_dataset(config.synthetic_count)


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


@pytest.mark.after_notebooks
def test_series_leaves_its_outputs(nbval_run):
    missing = [name for name in RUN_OUTPUTS if not (nbval_run / name).is_file()]
    assert not missing, f"{nbval_run} lacks {missing}"
    history = helpers.training_history(nbval_run)
    config = helpers.training_config("quick")
    assert history["stage"].tolist() == [1] * config.epochs + [2] * config.finetune_epochs
    metrics = json.loads((nbval_run / "metrics.json").read_text())
    assert metrics["setting"] == "quick" and "synthetic" in metrics["data"], metrics


@pytest.mark.slow
@pytest.mark.after_notebooks
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


def test_failed_download_does_not_echo_the_key(monkeypatch):
    import kagglehub

    def refuse(handle, *args, **kwargs):
        raise RuntimeError(f"403 Client Error: Forbidden for url ...?key={FAKE_KEY}")

    monkeypatch.setattr(kagglehub, "competition_download", refuse)
    with pytest.raises(helpers.SaltDataError) as error:
        helpers.download_from_kaggle()
    assert "accept them" in str(error.value) and FAKE_KEY not in str(error.value)


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("with_split", [False, True])
def test_evaluate_before_train_says_run_train(tmp_path, with_split):
    if with_split:
        config, data = quick_synthetic()
        train, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)),
                                              seed=config.seed)
        helpers.save_split(tmp_path, data, train, val)
    with pytest.raises(papermill.PapermillExecutionError, match=f"run 03_train.ipynb first .*{tmp_path.name}"):
        execute("04_evaluate.ipynb", tmp_path, {})
