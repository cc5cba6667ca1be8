"""The series as a user runs it: papermill over the notebooks, in order and out of order."""

import os
from pathlib import Path

import papermill
import pytest

import helpers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_explore_data.ipynb", "02_build_unet.ipynb", "03_train.ipynb", "04_evaluate.ipynb"]
FAKE_KEY = "f4k3k4gg13k3y0123456789abcdef00"


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


@pytest.fixture(scope="module")
def series_with_fake_credentials(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("series") / "run"
    run_dir.mkdir()
    env = {"KAGGLE_USERNAME": "fake-user", "KAGGLE_KEY": FAKE_KEY}
    for notebook in NOTEBOOKS:
        execute(notebook, run_dir, env)
    return run_dir


def test_series_leaves_its_outputs(series_with_fake_credentials):
    run_dir = series_with_fake_credentials
    for name in NOTEBOOKS + ["split.csv", "best.keras", "history.csv", "lovasz/best.keras", "lovasz/history.csv",
                             "metrics.json", "learning_curves.png"]:
        assert (run_dir / name).is_file(), name


def test_credentials_are_never_written(series_with_fake_credentials):
    leaks = [str(path) for path in series_with_fake_credentials.rglob("*")
             if path.is_file() and FAKE_KEY.encode() in path.read_bytes()]
    assert not leaks


def test_failed_download_does_not_echo_the_key(monkeypatch):
    import kagglehub

    def refuse(handle, *args, **kwargs):
        raise RuntimeError(f"403 Client Error: Forbidden for url ...?key={FAKE_KEY}")

    monkeypatch.setattr(kagglehub, "competition_download", refuse)
    with pytest.raises(helpers.SaltDataError) as error:
        helpers.download_from_kaggle()
    assert "accept them" in str(error.value) and FAKE_KEY not in str(error.value)


def test_a_runtime_without_the_split_makes_the_same_one(tmp_path, series_with_fake_credentials):
    """02 in an empty run folder (a Colab runtime of its own, say) makes notebook 1's split again."""
    execute("02_build_unet.ipynb", tmp_path, {})
    made = (tmp_path / "split.csv").read_text()
    assert made == (series_with_fake_credentials / "split.csv").read_text()
    assert "made it again" in (tmp_path / "02_build_unet.ipynb").read_text()


@pytest.mark.parametrize("with_split", [False, True])
def test_evaluate_before_train_says_run_train(tmp_path, with_split):
    if with_split:
        data = helpers.make_synthetic_dataset(helpers.training_config("quick").synthetic_count)
        train, val = helpers.stratified_split(helpers.coverage_class(helpers.coverage(data.masks)), seed=42)
        helpers.save_split(tmp_path, data, train, val)
    with pytest.raises(papermill.PapermillExecutionError, match=f"run 03_train.ipynb first .*{tmp_path.name}"):
        execute("04_evaluate.ipynb", tmp_path, {})
