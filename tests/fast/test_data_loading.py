"""Loading the Kaggle layout and its zips, and a clear error for every bad input."""

import zipfile

import numpy as np
import pandas as pd
import pytest

import helpers
from support import write_kaggle_folder, write_png
from helpers import SaltDataError


def test_loads_the_real_layout_with_its_quirks(kaggle_folder):
    folder, written = kaggle_folder
    data = helpers.load_tgs_folder(folder)
    assert data.images.dtype == np.uint8 and data.images.shape == (6, 101, 101)
    assert data.masks.dtype == bool and data.masks.shape == (6, 101, 101)
    assert list(data.ids) == list(written.ids)
    assert np.array_equal(data.images, written.images)
    assert np.array_equal(data.masks, written.masks)
    assert np.allclose(data.depths, written.depths)


def test_missing_folder(tmp_path):
    with pytest.raises(SaltDataError, match="data folder not found"):
        helpers.load_tgs_folder(tmp_path / "nowhere")


def test_missing_train_csv(tmp_path):
    with pytest.raises(SaltDataError, match="train.csv: file not found"):
        helpers.load_tgs_folder(tmp_path)


@pytest.mark.parametrize("kind", ["images", "masks"])
def test_id_without_image_or_mask(kaggle_folder, kind):
    folder, data = kaggle_folder
    (folder / "train" / kind / f"{data.ids[2]}.png").unlink()
    with pytest.raises(SaltDataError, match=f"{data.ids[2]}.*{kind[:-1]} is missing"):
        helpers.load_tgs_folder(folder)


def test_truncated_png(kaggle_folder):
    folder, data = kaggle_folder
    path = folder / "train" / "images" / f"{data.ids[1]}.png"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SaltDataError, match=f"{data.ids[1]}.png: not a readable PNG"):
        helpers.load_tgs_folder(folder)


def test_corrupt_png(kaggle_folder):
    folder, data = kaggle_folder
    (folder / "train" / "masks" / f"{data.ids[1]}.png").write_bytes(b"not a png at all")
    with pytest.raises(SaltDataError, match="not a readable PNG"):
        helpers.load_tgs_folder(folder)


def test_wrong_image_size(kaggle_folder):
    folder, data = kaggle_folder
    write_png(folder / "train" / "images" / f"{data.ids[3]}.png", np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(SaltDataError, match=r"expected 101x101 pixels, got 64x80"):
        helpers.load_tgs_folder(folder)


def test_mask_that_is_not_binary(kaggle_folder):
    folder, data = kaggle_folder
    mask = np.zeros((101, 101), np.uint8)
    mask[:10] = 128
    write_png(folder / "train" / "masks" / f"{data.ids[4]}.png", mask)
    with pytest.raises(SaltDataError, match=f"{data.ids[4]}.png: a mask must be binary"):
        helpers.load_tgs_folder(folder)


def test_image_with_differing_channels(kaggle_folder):
    folder, data = kaggle_folder
    colour = np.zeros((101, 101, 3), np.uint8)
    colour[..., 0] = 200
    write_png(folder / "train" / "images" / f"{data.ids[0]}.png", colour)
    with pytest.raises(SaltDataError, match="differing channels"):
        helpers.load_tgs_folder(folder)


def test_duplicate_ids(kaggle_folder):
    folder, data = kaggle_folder
    table = pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False)
    pd.concat([table, table.iloc[[2]]]).to_csv(folder / "train.csv", index=False)
    with pytest.raises(SaltDataError, match=f"duplicate id '{data.ids[2]}' \\(line 8\\)"):
        helpers.load_tgs_folder(folder)


def test_limit_keeps_the_first_ids(kaggle_folder):
    folder, data = kaggle_folder
    assert list(helpers.load_tgs_folder(folder, limit=3).ids) == list(data.ids[:3])


# --- zips ---------------------------------------------------------------------


def _zip_folder(source, zip_path, prefix=""):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + str(path.relative_to(source)))


def test_competition_zip_as_downloaded(tmp_path):
    """The outer zip holds the CSVs and train.zip / test.zip, as Kaggle serves it."""
    staging = tmp_path / "staging"
    written = write_kaggle_folder(staging, count=4)
    outer = tmp_path / "outer"
    outer.mkdir()
    _zip_folder(staging / "train", outer / "train.zip")
    (staging / "test" / "images").mkdir(parents=True)
    write_png(staging / "test" / "images" / "t1.png", np.repeat(written.images[1][..., None], 3, 2))
    _zip_folder(staging / "test", outer / "test.zip")
    for name in ("train.csv", "depths.csv"):
        (outer / name).write_bytes((staging / name).read_bytes())
    download = tmp_path / f"{helpers.COMPETITION}.zip"
    _zip_folder(outer, download)

    folder = helpers.prepare_competition_zip(download, tmp_path / "cache")
    data = helpers.load_tgs_folder(folder)
    assert np.array_equal(data.masks, written.masks)
    assert helpers.list_test_ids(folder) == ["t1"]
    # a second call finds the marker and extracts nothing again: what changed since stays changed
    (folder / "train.csv").write_text("edited after the first extraction\n")
    (folder / "depths.csv").unlink()
    (folder / "test" / "images" / "t1.png").unlink()
    assert helpers.prepare_competition_zip(download, tmp_path / "cache") == folder
    assert (folder / "train.csv").read_text() == "edited after the first extraction\n"
    assert not (folder / "depths.csv").exists() and not (folder / "test" / "images" / "t1.png").exists()


@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/absolute-escape.txt", "a/../../escape.txt"])
def test_zip_member_escaping_its_folder_is_refused(tmp_path, member):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("train.csv", "id,rle_mask\n")
        archive.writestr(member, "gotcha")
    with pytest.raises(SaltDataError, match="outside"):
        helpers.safe_extract_zip(bad, tmp_path / "cache" / "x")
    assert not (tmp_path / "cache" / "x").exists()
    assert not (tmp_path / "cache" / "escape.txt").exists()


def test_not_a_zip(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_text("hello")
    with pytest.raises(SaltDataError, match="fake.zip: not a readable zip"):
        helpers.safe_extract_zip(fake, tmp_path / "out")
