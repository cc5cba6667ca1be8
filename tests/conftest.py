"""Shared fixtures: a tiny Kaggle-layout folder written the way the real files are."""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import helpers  # noqa: E402


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


@pytest.fixture
def kaggle_folder(tmp_path):
    folder = tmp_path / "tgs"
    data = write_kaggle_folder(folder)
    return folder, data
