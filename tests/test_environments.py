"""Where users run the series: Colab's versions and secrets, a second runtime, a machine without a GPU."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import write_kaggle_folder, write_png
from packaging.version import Version

import helpers

ROOT = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "KGAT_f4k3t0k3n0123456789abcdef"


def pins(path):
    """{name: version} of the ``name==version`` lines of a requirements file."""
    found = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.split("[")[0].strip()] = version.strip()
    return found


# --- versions: the floors are Colab's, the pins are at or above them ---------------------


def test_floors_are_the_colab_mirror_and_the_pins_are_above_them():
    floors, colab, pinned = helpers.version_floors(), pins("requirements-colab.txt"), pins("requirements.txt")
    assert set(floors) == {"keras", "tensorflow", "numpy", "pandas", "matplotlib", "scikit-image", "kagglehub"}
    for name, floor in floors.items():
        assert colab[name] == floor, name
        assert Version(pinned[name]) >= Version(floor), name


def test_environment_check_names_a_package_below_its_floor(monkeypatch, tmp_path, capsys):
    floors = tmp_path / "floors.txt"
    floors.write_text("numpy>=999.0\n")
    monkeypatch.setattr(helpers, "FLOORS_FILE", floors)
    with pytest.raises(RuntimeError, match=r"numpy .* \(needs 999.0\).*pip install -r floors.txt"):
        helpers.check_environment()


def test_small_components_match_scikit_image_at_this_version():
    """The series' own removal equals scikit-image's, called as the installed release wants."""
    import skimage
    from skimage.morphology import remove_small_objects

    rng = np.random.default_rng(0)
    masks = rng.random((20, 24, 24)) < 0.35
    for min_pixels in (1, 2, 5, 12):
        if Version(skimage.__version__) >= Version("0.26"):
            expected = [remove_small_objects(m, max_size=min_pixels - 1) for m in masks]
        else:
            expected = [remove_small_objects(m, min_size=min_pixels) for m in masks]
        assert np.array_equal(helpers.remove_small_components(masks, min_pixels), np.stack(expected)), min_pixels
    assert np.array_equal(helpers.remove_small_components(masks, 0), masks)


# --- Kaggle credentials as kagglehub reads them ------------------------------------------


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SALT_DATA_DIR", raising=False)
    for name in helpers.KAGGLE_SECRETS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def fake_colab(monkeypatch, secrets):
    """Put a google.colab with ``secrets`` in sys.modules; userdata.get raises for others, as Colab's does."""
    class SecretNotFoundError(Exception):
        pass

    def get(name):
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)
    monkeypatch.setitem(sys.modules, "google", sys.modules.get("google") or types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return colab


def test_colab_secret_api_token_is_read(clean_env, monkeypatch):
    fake_colab(monkeypatch, {"KAGGLE_API_TOKEN": FAKE_TOKEN})
    assert helpers.resolve_data_source().kind == "kaggle"


def test_colab_secrets_of_the_legacy_pair_are_read(clean_env, monkeypatch):
    """kagglehub alone gives up when KAGGLE_API_TOKEN is missing; the series reads the pair too."""
    from kagglehub.config import get_colab_credentials

    fake_colab(monkeypatch, {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": FAKE_TOKEN})
    assert get_colab_credentials() is None  # what kagglehub would do by itself
    assert helpers.resolve_data_source().kind == "kaggle"


def test_no_secrets_in_colab_means_synthetic(clean_env, monkeypatch):
    fake_colab(monkeypatch, {})
    assert helpers.resolve_data_source().kind == "synthetic"


def test_download_path_end_to_end_never_shows_the_key(clean_env, monkeypatch, tmp_path, capsys):
    """The real credential path (only kagglehub's download stubbed): the key is in nothing printed or written."""
    import kagglehub

    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_TOKEN)
    download = tmp_path / "kagglehub-cache" / "tgs"
    written = write_kaggle_folder(download, count=4)
    write_png(download / "test" / "images" / "t1.png", np.repeat(written.images[0][..., None], 3, axis=2))
    asked = []

    def competition_download(handle, *args, **kwargs):
        from kagglehub.config import get_kaggle_credentials

        asked.append((handle, get_kaggle_credentials().api_key == FAKE_TOKEN))
        return str(download)

    monkeypatch.setattr(kagglehub, "competition_download", competition_download)
    data = helpers.load_salt_data(cache_dir=tmp_path / "data")
    assert asked == [(helpers.COMPETITION, True)]
    assert data.folder == download and helpers.list_test_ids(data.folder) == ["t1"]
    printed = capsys.readouterr()
    assert FAKE_TOKEN not in printed.out + printed.err
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaks


def test_no_network_says_what_to_do(monkeypatch):
    import kagglehub
    import requests

    def offline(handle, *args, **kwargs):
        raise requests.exceptions.ConnectionError(f"Max retries exceeded ... token={FAKE_TOKEN}")

    monkeypatch.setattr(kagglehub, "competition_download", offline)
    with pytest.raises(helpers.SaltDataError) as error:
        helpers.download_from_kaggle()
    message = str(error.value)
    assert "ConnectionError" in message and "internet connection" in message
    assert "SALT_DATA_DIR" in message and "synthetic" in message and FAKE_TOKEN not in message


def test_a_zip_source_returns_the_extracted_folder(clean_env, tmp_path, monkeypatch):
    import zipfile

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
    assert helpers.load_salt_data("synthetic", limit=3).folder is None


# --- the run folder and the split in a runtime of its own ---------------------------------


def test_run_folder_is_on_drive_in_colab_only(monkeypatch, tmp_path, capsys):
    mounted = []
    colab = fake_colab(monkeypatch, {})
    colab.drive = types.SimpleNamespace(mount=lambda point: mounted.append(point))
    monkeypatch.setattr(helpers, "COLAB_DRIVE", tmp_path / "drive")
    assert helpers.run_folder(None, "quick") == tmp_path / "drive" / "MyDrive" / "salt-unet" / "runs" / "quick"
    assert mounted == [str(tmp_path / "drive")]
    assert helpers.run_folder("runs/mine", "quick", use_drive=False) == Path("runs/mine")
    assert helpers.run_folder(tmp_path / "abs", "quick") == tmp_path / "abs"  # an absolute folder stays
    monkeypatch.delitem(sys.modules, "google.colab")
    assert helpers.run_folder(None, "class") == Path("runs/class")
    assert len(mounted) == 1


def test_a_missing_split_is_made_again_identically(tmp_path, capsys):
    data = helpers.make_synthetic_dataset(60)
    classes = helpers.coverage_class(helpers.coverage(data.masks))
    train, val = helpers.stratified_split(classes, val_fraction=0.2, seed=42)  # as 01_explore_data does
    helpers.save_split(tmp_path / "first", data, train, val)
    again_train, again_val = helpers.split_for_run(tmp_path / "second", data, seed=42)
    assert "made it again" in capsys.readouterr().out
    assert (tmp_path / "first" / "split.csv").read_text() == (tmp_path / "second" / "split.csv").read_text()
    assert np.array_equal(again_val, val) and np.array_equal(again_train, train)
    helpers.split_for_run(tmp_path / "second", data, seed=42)  # present now: read, not made
    assert "made it again" not in capsys.readouterr().out


# --- no GPU, no endless run ----------------------------------------------------------------


def test_full_setting_without_a_gpu_gets_the_class_budget(capsys):
    capped = helpers.training_config("full", gpu=None)
    assert capped.time_budget_min == helpers.SETTINGS["class"]["time_budget_min"]
    printed = capsys.readouterr().out
    assert "No GPU" in printed and "TIME_BUDGET_MIN = 'none'" in printed and "SALT_TIME_BUDGET_MIN=none" in printed
    assert helpers.training_config("full", gpu="NVIDIA H200").time_budget_min is None
    assert helpers.training_config("full", gpu=None, time_budget_min="none").time_budget_min is None
    assert helpers.training_config("full", gpu=None, time_budget_min="30").time_budget_min == 30
    assert helpers.training_config("class", gpu=None).time_budget_min == 55
    assert capsys.readouterr().out == ""  # said only when the cap is applied


@pytest.mark.parametrize("kwargs, field", [({"epochs": 0}, "epochs=0"), ({"epochs": -3}, "epochs=-3"),
                                           ({"time_budget_min": "-5"}, "time_budget_min=-5"),
                                           ({"steps_per_epoch": 0}, "steps_per_epoch=0")])
def test_every_override_is_checked(kwargs, field):
    with pytest.raises(ValueError, match=field):
        helpers.training_config("quick", **kwargs)


def test_a_budget_that_is_not_a_number_is_named():
    with pytest.raises(ValueError, match="SALT_TIME_BUDGET_MIN='an hour' must be a number of minutes or 'none'"):
        helpers.training_config("quick", time_budget_min="an hour")


def test_native_stderr_is_silenced_only_inside_the_block(capfd):
    import os

    with helpers.native_stderr_silenced():
        os.write(2, b"I0000 a TensorFlow start-up line\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
