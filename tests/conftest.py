"""Shared fixtures, and the tiers: a test's folder says how long it takes and what it needs.

- ``tests/fast/``: unit tests, seconds in all;
- ``tests/slow/``: tests that train a model for more than a moment or run a notebook (marked ``slow``);
- ``tests/gpu_path/``: the GPU path (``mixed_float16``) trained on the CPU (marked ``slow``; run by
  ``make test-mixed-precision``, ``make test-colab`` and ``make test-jax``, not by ``make test``);
- ``tests/after_notebooks/``: checks of the run folder the four notebooks wrote under nbval in
  ``make test`` (marked ``after_notebooks``; skipped without SALT_SERIES_RUN_DIR);
- ``tests/colab/``: the Colab simulation (``make test-colab``; skipped without SALT_COLAB_SIMULATION=1).

The helpers every folder shares are in ``tests/support.py``.
"""

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for folder in (TESTS, TESTS.parent):  # support.py, and helpers.py as the notebooks import it
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from support import ROOT, real_data_dir, write_kaggle_folder, write_png  # noqa: E402,F401  (also from conftest)

import helpers  # noqa: E402,F401  (imported once here, before any test module)

TIER_MARKERS = {"slow": "slow", "gpu_path": "slow", "after_notebooks": "after_notebooks"}
"""A folder under tests/ whose every test carries the marker of the same name (see pytest.ini)."""


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        try:
            folder = item.path.relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (a notebook under nbval)
            continue
        if folder in TIER_MARKERS:
            item.add_marker(TIER_MARKERS[folder])


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No data source named and no Kaggle credentials anywhere; the working folder is ``tmp_path``."""
    monkeypatch.delenv("SALT_DATA_DIR", raising=False)
    for name in helpers.KAGGLE_SECRETS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def kaggle_folder(tmp_path):
    folder = tmp_path / "tgs"
    data = write_kaggle_folder(folder)
    return folder, data
