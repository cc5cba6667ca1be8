"""``files.download`` as Colab's behaves for the series: the file goes to the browser's downloads.

Here "the browser's downloads" is the folder ``COLAB_STANDIN_DOWNLOADS``; a file that does not
exist raises FileNotFoundError, as Colab's does.
"""

import os
import shutil
from pathlib import Path


def download(filename):
    path = Path(filename)
    if not path.is_file():
        raise FileNotFoundError(f"Cannot find file: {filename}")
    downloads = Path(os.environ.get("COLAB_STANDIN_DOWNLOADS", "downloads"))
    downloads.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, downloads / path.name)
