"""kagglehub's ``competition_download``, imitated and counted, for the Colab simulation.

With ``COLAB_STANDIN_KAGGLE_LOG`` set, ``sitecustomize.py`` puts :func:`competition_download` in
the real kagglehub's place. Each call appends a line to that file (so a test counts the downloads
across runtimes) and, like kagglehub in a fresh Colab runtime, writes the competition into a cache
of this runtime only (``./kagglehub-cache`` of the working folder, the clone in ``/content``): a
small Kaggle-layout folder of synthetic slices, with test images, in the real files' layout.
"""

import json
import os
import sys
from pathlib import Path


def competition_download(handle, path=None, force_download=False, output_dir=None):
    with open(os.environ["COLAB_STANDIN_KAGGLE_LOG"], "a") as log:
        log.write(json.dumps({"handle": handle, "pid": os.getpid(), "cwd": os.getcwd()}) + "\n")
    folder = Path.cwd() / "kagglehub-cache" / "competitions" / handle
    if not (folder / "train.csv").is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for support
        from support import make_test_folder, write_kaggle_folder

        write_kaggle_folder(folder, count=240, seed=3)
        make_test_folder(folder, 40)
    return str(folder)


def install():
    if os.environ.get("COLAB_STANDIN_KAGGLE_LOG"):
        import kagglehub

        kagglehub.competition_download = competition_download
