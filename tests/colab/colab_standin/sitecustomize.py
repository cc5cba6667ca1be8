"""Colab's kernel imports google.colab at start; so does a Python started with this folder on its path.

With ``COLAB_STANDIN_KAGGLE_LOG`` set, kagglehub's competition download is the counted stand-in of
``kagglehub_standin.py``.
"""

import google.colab  # noqa: F401
import kagglehub_standin

kagglehub_standin.install()
