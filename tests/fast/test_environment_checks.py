"""The environment the series runs in: Colab's versions are the floors, the pins lie above them, the
check at the top of each notebook names what is too old, and native start-up noise stays hidden."""

import os

import pytest
from packaging.version import Version

import helpers
from support import ROOT, pins


def test_floors_are_the_colab_mirror_and_the_pins_are_above_them():
    floors, colab, pinned = helpers.version_floors(), pins("requirements-colab.txt"), pins("requirements.txt")
    assert set(floors) == {"keras", "tensorflow", "numpy", "pandas", "matplotlib", "scikit-image", "kagglehub"}
    for name, floor in floors.items():
        assert colab[name] == floor, name
        assert Version(pinned[name]) >= Version(floor), name


def test_the_jax_environment_is_the_pins_without_tensorflow():
    """requirements-jax.txt (make test-jax): what requirements.txt pins, less TensorFlow, plus JAX; no torch."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-jax.txt").read_text().splitlines()]
    assert "-c requirements.txt" in lines  # the versions are requirements.txt's
    names = {line.split("[")[0].split("=")[0] for line in lines if line and not line.startswith("-")}
    assert names == (set(pins("requirements.txt")) - {"tensorflow"}) | {"jax"}
    assert "jax[cpu]==" + pins("requirements-backends.txt")["jax"] in lines


def test_environment_check_names_a_package_below_its_floor(monkeypatch, tmp_path, capsys):
    floors = tmp_path / "floors.txt"
    floors.write_text("numpy>=999.0\n")
    monkeypatch.setattr(helpers, "FLOORS_FILE", floors)
    with pytest.raises(RuntimeError, match=r"numpy .* \(needs 999.0\).*pip install -r floors.txt"):
        helpers.check_environment()


def test_native_stderr_is_silenced_only_inside_the_block(capfd):
    with helpers.native_stderr_silenced():
        os.write(2, b"I0000 a TensorFlow start-up line\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
