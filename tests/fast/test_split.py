"""Coverage classes and the train/validation split: stratified, saved with the run, and made again
identically in a runtime that lacks it (notebook level: tests/slow/test_notebook_runs.py)."""

import numpy as np
import pytest

import helpers
from helpers import SaltDataError


def test_coverage_classes():
    cov = np.array([0.0, 0.001, 0.1, 0.1001, 0.5, 0.95, 1.0])
    assert helpers.coverage_class(cov).tolist() == [0, 1, 1, 2, 5, 10, 10]
    with pytest.raises(ValueError, match="coverage must lie in"):
        helpers.coverage_class([1.5])


def test_split_is_stratified_disjoint_and_complete():
    classes = np.repeat(np.arange(11), [390, 50, 60, 50, 50, 40, 40, 40, 50, 60, 170])
    train, val = helpers.stratified_split(classes, 0.2, seed=1)
    assert len(np.intersect1d(train, val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(classes)))
    for value in range(11):
        members = (classes == value).sum()
        assert (classes[val] == value).sum() == round(0.2 * members)


def test_split_missing_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 01_explore_data.ipynb first"):
        helpers.load_split(tmp_path, helpers.make_synthetic_dataset(3))


def test_a_missing_split_is_made_again_identically_then_read_back(tmp_path, capsys):
    """The same data and seed give the same split: a runtime without split.csv makes 01's again."""
    data = helpers.make_synthetic_dataset(60)
    classes = helpers.coverage_class(helpers.coverage(data.masks))
    train, val = helpers.stratified_split(classes, val_fraction=0.2, seed=42)  # as 01_explore_data does
    helpers.save_split(tmp_path / "first", data, train, val)
    again_train, again_val = helpers.split_for_run(tmp_path / "second", data, seed=42)
    assert "made it again" in capsys.readouterr().out
    assert (tmp_path / "first" / "split.csv").read_text() == (tmp_path / "second" / "split.csv").read_text()
    assert np.array_equal(again_val, val) and np.array_equal(again_train, train)
    read_train, read_val = helpers.split_for_run(tmp_path / "second", data, seed=42)  # present now: read, not made
    assert "made it again" not in capsys.readouterr().out
    assert np.array_equal(read_train, train) and np.array_equal(read_val, val)
    loaded_train, loaded_val = helpers.load_split(tmp_path / "first", data)
    assert np.array_equal(loaded_train, train) and np.array_equal(loaded_val, val)
    with pytest.raises(SaltDataError, match="made for other data"):
        helpers.load_split(tmp_path / "first", helpers.make_synthetic_dataset(10))
