"""What tests in every folder share: the project's paths, a tiny Kaggle-layout folder written the way
the real files are, the quick synthetic run's data, and the stand-in for Google Colab.

``tests/conftest.py`` puts the project root and ``tests/`` on ``sys.path`` before any test module is
imported, so a test in any folder imports this as ``from support import ...`` (and ``helpers`` as the
notebooks do).
"""

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import helpers

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COLAB_STANDIN = TESTS / "colab" / "colab_standin"
"""The ``google.colab`` stand-in: the Colab simulation puts it on a kernel's path, the fast tests on theirs."""

SERIES_WARNINGS = ",".join(f"error::{category}:{module}" for module in ("helpers", "data_sources")
                           for category in ("DeprecationWarning", "PendingDeprecationWarning"))
"""PYTHONWARNINGS for a kernel or a Python the tests start: a deprecated call in the series' own code
fails there too, as pytest.ini makes it fail in the tests (the Makefile gives nbval's kernels the same)."""

FAKE_TOKEN = "KGAT_f4k3t0k3n0123456789abcdef"
"""A Kaggle API token that must never be printed, written or put into an error message."""


def real_data_dir():
    """The real TGS folder (SALT_DATA_DIR or ../shared/tgs-salt), or None when absent."""
    for candidate in (os.environ.get("SALT_DATA_DIR"), ROOT.parent / "shared" / "tgs-salt"):
        if candidate and candidate != "synthetic" and (Path(candidate) / "train.csv").is_file():
            return Path(candidate)
    return None


def write_png(path, array):
    from skimage import io

    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, array, check_contrast=False)


def write_kaggle_folder(folder, count=6, seed=0):
    """Write ``count`` synthetic samples in the real layout and quirks; return the SaltData written."""
    data = helpers.make_synthetic_dataset(count, seed=seed)
    data.masks[0] = False  # at least one empty mask
    rows = []
    for sample_id, image, mask in zip(data.ids, data.images, data.masks):
        write_png(folder / "train" / "images" / f"{sample_id}.png", np.repeat(image[..., None], 3, axis=2))
        stored = (mask.astype(np.uint16) * 65535) if mask.any() else np.zeros(mask.shape, np.uint8)
        write_png(folder / "train" / "masks" / f"{sample_id}.png", stored)
        rows.append((sample_id, helpers.rle_encode(mask)))
    pd.DataFrame(rows, columns=["id", "rle_mask"]).to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"id": data.ids, "z": data.depths.astype(int)}).to_csv(folder / "depths.csv", index=False)
    return data


def make_test_folder(folder, count, distinct=16):
    """``count`` test PNGs (RGB, equal channels) as the real test set has them, made from a few slices."""
    data = helpers.make_synthetic_dataset(distinct, seed=5)
    images = folder / "test" / "images"
    sources = []
    for k in range(distinct):
        path = images / f"src{k:02d}.png"
        write_png(path, np.repeat(data.images[k][..., None], 3, axis=2))
        sources.append(path)
    for i in range(count - distinct):
        shutil.copyfile(sources[i % distinct], images / f"t{i:05d}.png")
    return helpers.list_test_ids(folder)


def quick_synthetic():
    """The config and data of a run with SALT_SETTING=quick, SALT_DATA_DIR=synthetic (what nbval runs)."""
    config = helpers.training_config("quick")
    return config, helpers.make_synthetic_dataset(config.synthetic_count)


def pins(path):
    """{name: version} of the ``name==version`` lines of a requirements file of the project."""
    found = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.split("[")[0].strip()] = version.strip()
    return found


COLAB_MODULES = ("google.colab", "google.colab.drive", "google.colab.userdata")


def enter_colab(monkeypatch, secrets=None, drive=None):
    """Make this process look like a Colab runtime for one test: import the stand-in ``google.colab``.

    The same package the Colab simulation's kernels import at start (``tests/colab/colab_standin``):
    ``userdata.get`` returns ``secrets`` and raises ``SecretNotFoundError`` for any other name, and
    ``drive.mount`` links its mount point to the folder ``drive``. When the test ends, monkeypatch
    takes it all away again (``sys.path``, the modules, the environment).
    """
    monkeypatch.setenv("COLAB_STANDIN_SECRETS", json.dumps(secrets or {}))
    if drive is not None:
        monkeypatch.setenv("COLAB_STANDIN_DRIVE", str(drive))
    monkeypatch.syspath_prepend(str(COLAB_STANDIN))
    for name in COLAB_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # recorded as absent, so undone by deletion
        del sys.modules[name]
    google = importlib.import_module("google")  # a namespace package (protobuf's google.protobuf beside it)
    monkeypatch.setattr(google, "colab", None, raising=False)
    colab = importlib.import_module("google.colab")
    assert Path(colab.__file__).is_relative_to(COLAB_STANDIN), colab.__file__
    return colab


def leave_colab(monkeypatch):
    """Within a test that entered Colab: this process is no Colab runtime any more."""
    for name in COLAB_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
