"""Colab's kernel imports google.colab at start; so does a Python started with this folder on its path."""

import google.colab  # noqa: F401
