"""In a Colab runtime (the stand-in ``google.colab`` of tests/colab/colab_standin, imported into this
process): Kaggle credentials come from Colab's secrets, and the run folder lives on Google Drive."""

import sys
from pathlib import Path

import helpers
from support import FAKE_TOKEN, enter_colab, leave_colab


def test_colab_secret_api_token_is_read(clean_env, monkeypatch):
    enter_colab(monkeypatch, {"KAGGLE_API_TOKEN": FAKE_TOKEN})
    assert helpers.in_colab()
    assert helpers.resolve_data_source().kind == "kaggle"


def test_colab_secrets_of_the_legacy_pair_are_read(clean_env, monkeypatch):
    """kagglehub alone gives up when KAGGLE_API_TOKEN is missing; the series reads the pair too."""
    from kagglehub.config import get_colab_credentials

    enter_colab(monkeypatch, {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": FAKE_TOKEN})
    assert get_colab_credentials() is None  # what kagglehub would do by itself
    assert helpers.resolve_data_source().kind == "kaggle"


def test_no_secrets_in_colab_means_synthetic(clean_env, monkeypatch):
    enter_colab(monkeypatch, {})
    assert helpers.resolve_data_source().kind == "synthetic"


def test_run_folder_is_on_drive_in_colab_only(monkeypatch, tmp_path, capsys):
    drive = tmp_path / "google-drive"
    enter_colab(monkeypatch, drive=drive)
    monkeypatch.setattr(helpers, "COLAB_DRIVE", tmp_path / "drive")
    assert helpers.run_folder(None, "quick") == tmp_path / "drive" / "MyDrive" / "salt-unet" / "runs" / "quick"
    assert (tmp_path / "drive").resolve() == drive.resolve() and (drive / "MyDrive").is_dir()
    assert helpers.run_folder("runs/mine", "quick", use_drive=False) == Path("runs/mine")
    assert helpers.run_folder(tmp_path / "abs", "quick") == tmp_path / "abs"  # an absolute folder stays
    leave_colab(monkeypatch)
    assert not helpers.in_colab()
    assert helpers.run_folder(None, "class") == Path("runs/class")
    printed = capsys.readouterr().out
    assert printed.count("Mounted at") == 1 and "already mounted" not in printed  # mounted on first use only


def test_the_stand_in_is_gone_after_a_test():
    assert "google.colab" not in sys.modules and not helpers.in_colab()
