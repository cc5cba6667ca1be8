"""Where the data comes from: an argument, then SALT_DATA_DIR, then data/tgs-salt, then Kaggle, then the
synthetic stand-in; a zip named as the source is extracted once."""

import zipfile

import numpy as np
import pytest

import helpers
from helpers import SaltDataError
from support import write_kaggle_folder, write_png


def test_source_order_argument_then_env_then_default(clean_env, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.setenv("SALT_DATA_DIR", str(b))
    assert helpers.resolve_data_source(a).path == a
    assert helpers.resolve_data_source().path == b
    monkeypatch.delenv("SALT_DATA_DIR")
    write_kaggle_folder(tmp_path / "data" / "tgs-salt", count=2)
    assert helpers.resolve_data_source().kind == "folder"


def test_falls_back_to_synthetic_and_says_so(clean_env, capsys):
    source = helpers.resolve_data_source()
    assert source.kind == "synthetic"
    data = helpers.load_salt_data(limit=5)
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "accept the rules" in printed and "403" in printed
    assert len(data) == 5


def test_kaggle_credentials_choose_a_download(clean_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    source = helpers.resolve_data_source()
    assert source.kind == "kaggle"
    assert "0123456789abcdef" not in source.describe()


def test_named_folder_that_does_not_exist_is_an_error(clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SALT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SaltDataError, match="nowhere: data folder not found \\(from SALT_DATA_DIR\\)"):
        helpers.resolve_data_source()


def test_synthetic_can_be_asked_for(clean_env):
    assert helpers.resolve_data_source("synthetic").kind == "synthetic"
    assert helpers.load_salt_data("synthetic", limit=3).folder is None


def test_a_zip_source_returns_the_extracted_folder(clean_env, tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    write_kaggle_folder(staging, count=3)
    write_png(staging / "test" / "images" / "t9.png", np.zeros((101, 101, 3), np.uint8))
    archive = tmp_path / "competition.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in staging.rglob("*"):
            if path.is_file():
                handle.write(path, str(path.relative_to(staging)))
    monkeypatch.setenv("SALT_DATA_DIR", str(archive))
    data = helpers.load_salt_data(cache_dir=tmp_path / "cache")
    assert data.folder == tmp_path / "cache" / "competition"
    assert helpers.list_test_ids(data.folder) == ["t9"]
    assert data.subset(np.array([0])).folder == data.folder
