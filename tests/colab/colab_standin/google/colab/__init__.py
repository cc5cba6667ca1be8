"""A stand-in for Colab's ``google.colab`` package (see tests/colab/colab_standin/README.md)."""

from . import drive, files, userdata  # noqa: F401
