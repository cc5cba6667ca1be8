"""salt-unet helpers: the code the notebooks teach, gathered for reuse, in the order they call it.

Each function says where it is taught or used ("01_explore_data, *Coverage*"), so a reader can
go from a notebook's ``helpers.X`` to the cell that explains it and back.

0. Setup (the first cells of every notebook): versions against the floors,
   the GPU, the precision, the setting's TrainingConfig, the run folder (on
   Google Drive in Colab).
1. Exploring the data (01_explore_data): the labelled slices, coverage and
   its classes, run-length encoding, IoU, Dice and the competition score,
   the coverage-stratified split.
2. The UNet (02_build_unet): padding 101 to 112 and the network itself.
3. Training (03_train): the losses, Adam with averaged weights, the feed
   with flips, the callbacks that never lose a run, the two stages; last,
   both stages in one call (what the benchmark and ``benchmarks/train_full.py`` run).
4. Evaluation (04_evaluate): probabilities for any uint8 images, turning
   them into masks (threshold, flips, the empty-slice rule, small
   components), choosing those on validation, the Kaggle submission.

The plumbing no notebook teaches (reading the Kaggle files and zips, Kaggle credentials and
the download, the synthetic stand-in, the packed one-file copy) lives in ``data_sources.py``, keeping a
run folder safe (whole files, one training at a time, the data it was trained on) in
``run_files.py``, keeping TensorFlow's start-up lines out of the outputs in ``kernel_logs.py``, and drawing the
UNet's diagram and the live training view in ``figures.py``; the names the
notebooks use are re-exported here, so they only ever import ``helpers``. The
benchmark's levers (other blocks, losses, augmentations) live in ``benchmarks/lever_models.py``.

Only numpy, pandas, scikit-image and ``keras`` / ``keras.ops`` are used, so the
same code runs with ``KERAS_BACKEND`` set to tensorflow, jax or torch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kernel_logs import divert_native_logs_in_a_notebook, native_stderr_silenced  # noqa: F401
from data_sources import (COMPETITION, IMAGE_SIZE, KAGGLE_SECRETS, colab_drive, drive_data_copy, REAL_DATA_HOWTO, SaltData,  # noqa: F401
                          SaltDataError, download_from_kaggle, in_colab, kaggle_credentials_present, kaggle_secrets_from_colab,
                          list_test_ids, load_packed_salt_data, load_test_images, load_tgs_folder,
                          make_synthetic_dataset, pack_salt_data, prepare_competition_zip, read_ids_csv,
                          read_image_png, read_mask_png, resolve_data_source, ricker_wavelet, safe_extract_zip)
from run_files import (RunFolderLock, atomic_write_text, check_trained_on, damaged, save_model_atomically,  # noqa: F401
                       snapshot_every_min)


# Every notebook's setup cell: importing helpers starts Keras with its log lines kept out of the outputs
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
divert_native_logs_in_a_notebook()
with native_stderr_silenced():
    import keras  # noqa: E402  (with TensorFlow as its backend, this starts TensorFlow)
from keras import layers, ops  # noqa: E402

from figures import SALT_PREDICTED, SALT_TRUE, TrainingView, draw_salt, plot_unet  # noqa: E402,F401


PADDED_SIZE = 112
"""The size the network sees: 101 reflect-padded to the next multiple of 16."""


IOU_THRESHOLDS = np.arange(0.5, 1.0, 0.05)
"""The competition's ten IoU thresholds: 0.50, 0.55, ..., 0.95."""


# ---------------------------------------------------------------------------
# 0. Setup: the first cells of every notebook (environment, GPU, precision, settings, run folder)
# ---------------------------------------------------------------------------


FLOORS_FILE = Path(__file__).resolve().parent / "requirements-floors.txt"
"""The oldest versions the series is tested with; Colab's setup cell installs from this file."""


# Every notebook's setup cell, through check_environment
def version_floors(path=None) -> dict[str, str]:
    """The package floors in ``requirements-floors.txt`` (or ``path``): {"keras": "3.13.2", ...}."""
    floors = {}
    for line in Path(path or FLOORS_FILE).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition(">=")
            floors[name.strip()] = version.strip()
    return floors


# Every notebook's setup cell
def check_environment() -> str | None:
    """Print the versions that matter, check them against the floors, and find a GPU.

    Returns the GPU's name, or None (with a warning that says what that means).
    Packages older than :func:`version_floors` raise an error that names them
    and the command that upgrades them.
    """
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    floors = version_floors()
    found = {}
    for name in floors:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    print(f"Python {sys.version.split()[0]}, Keras {keras.__version__} on the {keras.backend.backend()} backend; "
          + ", ".join(f"{name} {found[name]}" for name in ("numpy", "pandas", "scikit-image") if found.get(name)))
    old = [f"{name} {found[name]} (needs {floor})" for name, floor in floors.items()
           if found[name] and Version(found[name]) < Version(floor)]
    missing = [name for name, have in found.items() if have is None
               and not (name == "tensorflow" and keras.backend.backend() != "tensorflow")]
    if old or missing:
        raise RuntimeError("This series needs newer packages: " + ", ".join(old + [f"{m} (missing)" for m in missing])
                           + f". Run: pip install -r {FLOORS_FILE.name}, then restart the kernel.")
    gpu = find_gpu()
    if gpu:
        print(f"GPU: {gpu}")
    else:
        print("No GPU found: everything runs, but training is slow. The 'full' setting is capped at the class "
              "setting's time budget here (see the parameters below). In Colab: Runtime > Change runtime type > GPU.")
    return gpu


# Every notebook's setup cell, through check_environment
def find_gpu() -> str | None:
    """The name of the first GPU the Keras backend can use, or None on a CPU-only machine."""

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            return gpus[0].device_kind if gpus else None
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        import importlib

        with native_stderr_silenced():  # TensorFlow reports a failed CUDA start there
            devices = importlib.import_module("tensorflow").config.list_physical_devices("GPU")
        return devices[0].name if devices else None
    except Exception:
        return None


# Every notebook's parameters cell
def env_int(name, default=None):
    """Read an integer environment variable, with a clear error for anything else."""
    value = os.environ.get(name, "")
    if value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} must be a whole number") from None


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
"""The Keras dtype policies a run may train under: float32, or float16 / bfloat16 layers with float32 weights."""


# 03_train, *Mixed precision* (and the parameters cell of every notebook: SALT_PRECISION)
def choose_precision(precision="auto", gpu=None) -> str:
    """The dtype policy a run trains under: one of :data:`PRECISIONS`.

    ``precision`` is ``SALT_PRECISION``. ``"auto"`` (or None) picks
    ``mixed_float16`` when ``gpu`` names a GPU (what :func:`check_environment`
    found); on a CPU, ``mixed_bfloat16`` where TensorFlow computes it quicker
    (:func:`cpu_computes_bfloat16_fast`), else ``float32``. Any of
    :data:`PRECISIONS` is taken as it is, so a user can rule mixed precision
    out when a run misbehaves, or force float16 to test the GPU path on a CPU.
    """
    choice = str(precision or "auto").strip().lower()
    if choice == "auto":
        if gpu:
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_computes_bfloat16_fast() else "float32"
    if choice not in PRECISIONS:
        raise ValueError(f"SALT_PRECISION={precision!r} is not a precision; choose auto or one of {', '.join(PRECISIONS)}")
    return choice


# 03_train, *Mixed precision*, through choose_precision
def cpu_computes_bfloat16_fast(cpuinfo="/proc/cpuinfo") -> bool:
    """Whether this CPU trains the UNet quicker in bfloat16: TensorFlow on a CPU with AVX-512 BF16 or AMX.

    On such a CPU (recent AMD Zen and Intel Xeon) TensorFlow trains it about
    1.3x quicker (benchmarks/results/speed-table-cpu.json); most laptops lack
    the instructions (many Intel ones, Apple silicon) and would compute
    bfloat16 slower than float32. JAX and PyTorch gained little there: False.
    """
    if keras.config.backend() != "tensorflow":
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no way to tell, so no
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


# 03_train, *The recipe* (every notebook builds one in its parameters cell)
@dataclass
class TrainingConfig:
    """Everything a run's recipe depends on. ``epochs`` and ``steps_per_epoch`` may be shortened.

    Training has two stages. Stage 1 trains the UNet from scratch with
    cross-entropy + Dice for up to ``epochs``; stage 2 (when
    ``finetune_epochs`` > 0) starts from stage 1's best checkpoint and trains
    on with the Lovász hinge at ``finetune_learning_rate`` for up to
    ``finetune_epochs``. With a ``time_budget_min``, stage 2 gets
    ``finetune_share`` of it, plus whatever stage 1 left unused.

    In both stages Adam also keeps an exponential moving average of the
    weights (``ema_momentum``, 0 = none); validation, the checkpoints and
    everything after training use the averaged weights (see
    :func:`compile_unet` and :func:`make_callbacks`). ``precision`` is the
    Keras dtype policy the UNet is built under (:func:`choose_precision`).
    """

    setting: str
    epochs: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    ema_momentum: float = 0.99
    base_filters: int = 16
    dropout: float = 0.05
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    min_learning_rate: float = 1e-5
    early_stop_patience: int = 10
    time_budget_min: float | None = None
    finetune_epochs: int = 0
    finetune_learning_rate: float = 5e-4
    finetune_share: float = 0.5
    steps_per_epoch: int | None = None
    synthetic_count: int = 4000
    seed: int = 42
    notes: str = ""
    precision: str = "float32"

    def __post_init__(self):
        wrong = [f"{name}={getattr(self, name)!r}" for name, ok in self.checks().items() if not ok]
        if wrong:
            raise ValueError(f"{type(self).__name__}: {', '.join(wrong)} out of range ({self.RANGES})")

    RANGES = ("epochs, batch_size and steps_per_epoch at least 1, finetune_epochs at least 0, finetune_share "
              f"in [0, 1), learning rates and time_budget_min above 0, precision one of {', '.join(PRECISIONS)}")

    def checks(self) -> dict[str, bool]:
        """Each checked field -> whether its value is in range."""
        return {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                "steps_per_epoch": self.steps_per_epoch is None or self.steps_per_epoch >= 1,
                "time_budget_min": self.time_budget_min is None or self.time_budget_min > 0,
                "finetune_epochs": self.finetune_epochs >= 0, "finetune_share": 0.0 <= self.finetune_share < 1.0,
                "learning_rate": self.learning_rate > 0, "finetune_learning_rate": self.finetune_learning_rate > 0,
                "precision": self.precision in PRECISIONS}


SETTINGS = {
    "full": dict(epochs=100, finetune_epochs=50,
                 notes="The real recipe, for a GPU (Colab): up to 100 + 50 epochs, early stopping decides."),
    "class": dict(epochs=100, finetune_epochs=50, time_budget_min=55,
                  notes="A class without GPU: the same recipe, training stops after 55 minutes in all."),
    "lesson": dict(epochs=100, finetune_epochs=50, time_budget_min=20,
                   notes="Trained during a lesson on a laptop's CPU: the same recipe, 20 minutes in all."),
    "quick": dict(epochs=3, finetune_epochs=1, steps_per_epoch=8, batch_size=16, synthetic_count=800,
                  notes="A smoke test: a few short epochs, for make run / make test."),
}


NO_GPU_BUDGET_MIN = SETTINGS["class"]["time_budget_min"]
"""The 'full' setting's time budget on a machine without a GPU: the class setting's."""


# Every notebook's parameters cell
def training_config(setting="full", epochs=None, steps_per_epoch=None, time_budget_min=None,
                    gpu="not asked", precision="auto") -> TrainingConfig:
    """The TrainingConfig for 'full' (GPU), 'class' (CPU, 55 min), 'lesson' (CPU, 20 min) or 'quick' (smoke test).

    ``epochs`` caps both stages and ``steps_per_epoch`` shortens the epochs.
    ``time_budget_min`` replaces the setting's time budget: minutes, or
    ``"none"`` for no limit. ``gpu`` is what :func:`check_environment`
    found: the 'full' setting on a machine without one (``gpu=None``) gets
    the class setting's budget, and says so, unless ``time_budget_min`` says
    otherwise. ``precision`` (``SALT_PRECISION``) goes through
    :func:`choose_precision` with ``gpu``. Every value is checked by :class:`TrainingConfig`.
    """
    if setting not in SETTINGS:
        raise ValueError(f"SALT_SETTING={setting!r} is not a setting; choose one of {sorted(SETTINGS)}")
    config = TrainingConfig(setting=setting, **SETTINGS[setting])
    changes = {"precision": choose_precision(precision, gpu if gpu != "not asked" else None)}
    if epochs is not None:
        changes.update(epochs=int(epochs), finetune_epochs=min(config.finetune_epochs, int(epochs)))
    if steps_per_epoch is not None:
        changes["steps_per_epoch"] = int(steps_per_epoch)
    if time_budget_min is not None:
        no_limit = str(time_budget_min).strip().lower() == "none"
        try:
            changes["time_budget_min"] = None if no_limit else float(time_budget_min)
        except ValueError:
            raise ValueError(f"SALT_TIME_BUDGET_MIN={time_budget_min!r} must be a number of minutes or 'none'") from None
    elif setting == "full" and gpu is None:
        changes["time_budget_min"] = NO_GPU_BUDGET_MIN
        print(f"No GPU: the 'full' setting trains for at most {NO_GPU_BUDGET_MIN:g} minutes here (the class "
              f"setting's budget). To train without a limit anyway, set TIME_BUDGET_MIN = 'none' in the "
              f"parameters cell (or SALT_TIME_BUDGET_MIN=none).")
    return replace(config, **changes)


COLAB_DRIVE = colab_drive()
"""Where Colab mounts Google Drive (a test can point it elsewhere)."""


# Every notebook's parameters cell
def run_folder(run_dir=None, setting="full", use_drive=True) -> Path:
    """The folder a run reads and writes, as a Path, printed.

    ``run_dir`` (``SALT_RUN_DIR``), else ``runs/<setting>``. In Colab, with
    ``use_drive``, a relative folder lives on Google Drive
    (``MyDrive/salt-unet/runs/<setting>``): Colab opens each notebook in a
    runtime of its own whose files vanish with it, so notebooks 1 to 4 share
    their run folder, and an interrupted training resumes, only there. Drive
    is mounted on first use (Colab asks once per runtime for permission).
    """
    folder = Path(run_dir) if run_dir else Path("runs") / setting
    if in_colab() and use_drive and not folder.is_absolute():
        from google.colab import drive

        drive.mount(str(COLAB_DRIVE))  # a second call in the same runtime changes nothing
        folder = COLAB_DRIVE / "MyDrive" / "salt-unet" / folder
    print(f"Run folder: {folder}")
    return folder


# 03_train, *Data and split*
def ensure_run_dir(run_dir) -> Path:
    """Create the run folder if needed and prove it can be written, or say what to fix."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"The run folder {run_dir} cannot be written ({error.strerror}). "
                              f"Free some disk space, fix its permissions, or set SALT_RUN_DIR "
                              f"to a folder you can write.") from None
    return run_dir


# 03_train and 04_evaluate: a file an earlier notebook writes
def require_file(path, notebook) -> Path:
    """Return ``path`` if it exists, else stop with a message naming the notebook to run first."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run {notebook} first with the same SALT_RUN_DIR "
                                f"({path.parent}).")
    return path


# ---------------------------------------------------------------------------
# 1. Exploring the data (01_explore_data): slices and masks, coverage, RLE, the metric, the split
# ---------------------------------------------------------------------------


# 01_explore_data, *Load the data* (and every later notebook's data cell)
def load_salt_data(data_dir=None, limit=None, synthetic_count=4000, seed=0, cache_dir="data") -> SaltData:
    """Load the labelled data from wherever :func:`resolve_data_source` points, and say where.

    Returns a SaltData; its ``source`` says what was used and is printed, and
    its ``folder`` is the Kaggle-layout folder actually read (a packed copy:
    the file; None when synthetic). In Colab, a Kaggle download is packed onto
    Drive once for the other notebooks (:func:`drive_data_copy`).
    """
    source = resolve_data_source(data_dir)
    print(source.describe())
    if source.kind == "synthetic":
        return make_synthetic_dataset(synthetic_count if limit is None else min(limit, synthetic_count), seed=seed)
    if source.kind == "packed":
        return load_packed_salt_data(source.path, limit=limit)
    folder = source.path
    if source.kind == "zip":
        folder = prepare_competition_zip(source.path, cache_dir)
    elif source.kind == "kaggle":
        folder = download_from_kaggle(cache_dir)
        copy = drive_data_copy()
        if copy is not None:  # Colab: the next notebooks' runtimes read this instead of downloading again
            print(f"Packed a copy for the other notebooks on Drive: {pack_salt_data(load_tgs_folder(folder), copy, folder)}")
            return load_packed_salt_data(copy, limit=limit)
    return load_tgs_folder(folder, limit=limit)


# 01_explore_data, *What salt looks like*
def coverage(masks) -> np.ndarray:
    """Salt fraction per mask: (N, H, W) bool -> (N,) float64 in [0, 1]."""
    masks = np.asarray(masks, dtype=bool)
    return masks.reshape(len(masks), -1).mean(axis=1)


# 01_explore_data, *Coverage: how much of a slice is salt*
def coverage_class(cov) -> np.ndarray:
    """The 11 coverage classes: 0 for empty, k for coverage in ((k-1)/10, k/10], k = 1..10."""
    cov = np.asarray(cov, dtype=np.float64)
    if ((cov < 0) | (cov > 1)).any():
        raise ValueError(f"coverage must lie in [0, 1], got values from {cov.min()} to {cov.max()}")
    return np.ceil(np.round(cov * 10, 9)).astype(int)


# 01_explore_data, *Quirks of this data* (and 04_evaluate, *The best and the worst cases*)
def straight_edged(masks) -> np.ndarray:
    """(N, H, W) bool masks -> (N,) bool: True where every row is alike (salt edges straight down), neither empty nor full."""
    masks = np.asarray(masks, bool)
    return np.all(masks == masks[:, :1, :], axis=(1, 2)) & masks.any(axis=(1, 2)) & ~masks.all(axis=(1, 2))


# 01_explore_data, *How Kaggle stores masks: run-length encoding*
def rle_encode(mask) -> str:
    """Kaggle run-length encoding of a (H, W) mask: column-major, 1-indexed 'start length' pairs.

    An empty mask encodes as the empty string.
    """
    pixels = np.asarray(mask, dtype=bool).flatten(order="F")
    padded = np.concatenate([[False], pixels, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    starts, ends = changes[::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


# 01_explore_data, *How Kaggle stores masks: run-length encoding*
def rle_decode(rle, shape=(IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    """Decode a Kaggle RLE string into a (H, W) bool mask.

    Raises SaltDataError for non-numbers, an odd count, a zero-length run, a run
    outside the image, or runs that overlap or are not sorted.
    """
    if rle is None or (isinstance(rle, float) and math.isnan(rle)):
        rle = ""
    text = str(rle).strip()
    height, width = shape
    mask = np.zeros(height * width, dtype=bool)
    if not text:
        return mask.reshape(shape, order="F")
    tokens = text.split()
    try:
        numbers = [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise SaltDataError(f"RLE {_clip(text)!r}: {bad!r} is not a whole number") from None
    if len(numbers) % 2:
        raise SaltDataError(f"RLE {_clip(text)!r}: odd number of values ({len(numbers)}); "
                            f"expected 'start length' pairs")
    previous_end = 1
    for start, length in zip(numbers[::2], numbers[1::2]):
        if start < 1 or length < 1:
            raise SaltDataError(f"RLE {_clip(text)!r}: run '{start} {length}' needs start >= 1 and length >= 1")
        if start + length - 1 > height * width:
            raise SaltDataError(f"RLE {_clip(text)!r}: run '{start} {length}' ends at pixel "
                                f"{start + length - 1}, outside the {height}x{width} image")
        if start < previous_end:
            raise SaltDataError(f"RLE {_clip(text)!r}: run '{start} {length}' overlaps or comes "
                                f"before the previous run; runs must be sorted and disjoint")
        mask[start - 1:start - 1 + length] = True
        previous_end = start + length
    return mask.reshape(shape, order="F")


def _clip(text, size=40):
    return text if len(text) <= size else text[:size] + "..."


def _as_batch(masks):
    masks = np.asarray(masks, dtype=bool)
    return masks[None] if masks.ndim == 2 else masks


# 01_explore_data, *How a prediction is scored*
def iou_per_image(truth, pred) -> np.ndarray:
    """Intersection over union per image: (N, H, W) bool pairs -> (N,) float in [0, 1].

    Two empty masks have IoU 1 (they agree perfectly).
    """
    truth, pred = _as_batch(truth), _as_batch(pred)
    inter = (truth & pred).reshape(len(truth), -1).sum(1)
    union = (truth | pred).reshape(len(truth), -1).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


# 04_evaluate, *The scores at threshold 0.5*, through score_report
def dice_per_image(truth, pred) -> np.ndarray:
    """Dice coefficient 2|A∩B| / (|A|+|B|) per image, 1 when both are empty."""
    truth, pred = _as_batch(truth), _as_batch(pred)
    inter = (truth & pred).reshape(len(truth), -1).sum(1)
    total = truth.reshape(len(truth), -1).sum(1) + pred.reshape(len(pred), -1).sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


# 04_evaluate, *The scores at threshold 0.5*, through score_report
def pixel_iou(truth, pred) -> float:
    """IoU of all pixels of all images pooled together (the 'pixel IoU')."""
    truth, pred = _as_batch(truth), _as_batch(pred)
    union = (truth | pred).sum()
    return 1.0 if union == 0 else float((truth & pred).sum() / union)


# 01_explore_data, *How a prediction is scored*
def competition_score_per_image(truth, pred) -> np.ndarray:
    """The TGS score per image: the share of the thresholds 0.50..0.95 that its IoU exceeds.

    An empty truth scores 1 for an empty prediction and 0 for any salt predicted.
    """
    iou = iou_per_image(truth, pred)
    return (iou[:, None] > IOU_THRESHOLDS[None, :]).mean(axis=1)


# 01_explore_data, *How a prediction is scored*
def competition_score(truth, pred) -> float:
    """The TGS Salt competition metric: mean over images of :func:`competition_score_per_image`."""
    return float(competition_score_per_image(truth, pred).mean())


# 01_explore_data, *A fair train/validation split*
def stratified_split(classes, val_fraction=0.2, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and validation, keeping each class's share.

    classes: (N,) int. Returns two sorted int arrays that together hold 0..N-1.
    Each class puts round(val_fraction * its size) samples into validation.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    classes = np.asarray(classes)
    rng = np.random.default_rng(seed)
    val = []
    for value in np.unique(classes):
        members = np.flatnonzero(classes == value)
        rng.shuffle(members)
        val.extend(members[:int(round(val_fraction * len(members)))])
    val = np.sort(np.array(val, dtype=int))
    train = np.setdiff1d(np.arange(len(classes)), val)
    return train, val


# 01_explore_data, *A fair train/validation split*
def save_split(run_dir, data: SaltData, train_index, val_index) -> Path:
    """Write ``split.csv`` (id, subset, coverage, coverage_class) and ``data_source.txt`` into the run folder."""
    run_dir = ensure_run_dir(run_dir)
    cov = coverage(data.masks)
    subset = np.full(len(data), "train", dtype=object)
    subset[val_index] = "val"
    table = pd.DataFrame({"id": data.ids, "subset": subset, "coverage": cov.round(6),
                          "coverage_class": coverage_class(cov)})
    path = run_dir / "split.csv"
    atomic_write_text(path, table.to_csv(index=False))
    atomic_write_text(run_dir / "data_source.txt", data.source + "\n")
    return path


# 02_build_unet, 03_train and 04_evaluate, through split_for_run
def load_split(run_dir, data: SaltData) -> tuple[np.ndarray, np.ndarray]:
    """Read ``split.csv`` from the run folder and return (train_index, val_index) into ``data``.

    Raises FileNotFoundError that says to run 01_explore_data first when it is
    missing, and SaltDataError when its ids do not match the data loaded now.
    """
    path = Path(run_dir) / "split.csv"
    require_file(path, "01_explore_data.ipynb")
    table = pd.read_csv(path, dtype={"id": str})
    position = {sample_id: i for i, sample_id in enumerate(data.ids)}
    unknown = [i for i in table["id"] if i not in position]
    if unknown or len(table) != len(data):
        raise SaltDataError(f"{path}: this split was made for other data ({len(table)} ids, "
                            f"{len(unknown)} not in the {len(data)} loaded now, e.g. {unknown[:3]}). "
                            f"Run 01_explore_data.ipynb again with the same data, or use another SALT_RUN_DIR.")
    index = table["id"].map(position).to_numpy()
    is_val = (table["subset"] == "val").to_numpy()
    return np.sort(index[~is_val]), np.sort(index[is_val])


# 02_build_unet, *Start from notebook 1's split* (and 03_train, 04_evaluate)
def split_for_run(run_dir, data: SaltData, seed) -> tuple[np.ndarray, np.ndarray]:
    """Notebook 1's split from ``run_dir/split.csv``, or, when it is missing, the same split made again.

    The split depends only on the data and ``seed`` (the setting's), so
    making it again gives the slices notebook 1 chose; it is saved and the
    notebook says so. Returns (train_index, val_index) into ``data``.
    """
    if not (Path(run_dir) / "split.csv").is_file():
        train_index, val_index = stratified_split(coverage_class(coverage(data.masks)), 0.2, seed=seed)
        path = save_split(run_dir, data, train_index, val_index)
        print(f"{path.name} was not in the run folder: made it again as 01_explore_data.ipynb makes it "
              f"(the same data and seed {seed} give the same slices) and saved it there.")
    return load_split(run_dir, data)


# ---------------------------------------------------------------------------
# 2. The UNet (02_build_unet)
# ---------------------------------------------------------------------------


# 02_build_unet, *Why 101 must become 112*
def pad_to_multiple(batch, multiple=16) -> np.ndarray:
    """Reflect-pad (N, H, W[, C]) arrays so H and W become multiples of ``multiple``.

    101 becomes 112 (5 before, 6 after). Reflection keeps the seismic texture
    going into the border, and no pixel is resampled, so masks stay exact.
    """
    batch = np.asarray(batch)
    height, width = batch.shape[1:3]
    pads = []
    for size in (height, width):
        extra = -size % multiple
        pads.append((extra // 2, extra - extra // 2))
    widths = [(0, 0), *pads] + [(0, 0)] * (batch.ndim - 3)
    return np.pad(batch, widths, mode="reflect")


# 02_build_unet, *Why 101 must become 112*
def crop_to(batch, height, width) -> np.ndarray:
    """Undo :func:`pad_to_multiple`: cut the centre (height, width) out of (N, H', W'[, C])."""
    top = (batch.shape[1] - height) // 2
    left = (batch.shape[2] - width) // 2
    return batch[:, top:top + height, left:left + width]


# 02_build_unet, *Can it learn at all?* (and 03_train's feed)
def to_network_input(images) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H', W', 1) in [0, 1], H' and W' padded to multiples of 16 (101 -> 112)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    return (pad_to_multiple(images)[..., None] / 255.0).astype(np.float32)


# 02_build_unet, *Can it learn at all?* (and 03_train's feed)
def to_network_target(masks) -> np.ndarray:
    """bool (N, H, W) -> float32 (N, H', W', 1) in {0, 1}, padded like the images."""
    return pad_to_multiple(np.asarray(masks, dtype=bool))[..., None].astype(np.float32)


# 02_build_unet, *The convolution block* (written out there)
def conv_block(x, filters, name, bn_momentum=0.9):
    """Two rounds of 3x3 convolution, batch normalisation and ReLU; the size is kept.

    ``bn_momentum`` 0.9 makes batch normalisation's running statistics (the ones
    validation and prediction use) follow roughly the last 10 batches instead of
    Keras' default 0.99 (the last 100), so they keep up with the weights early on.
    """

    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


# 02_build_unet, *The same network lives in `helpers`* (and 03_train, *Stage 1, in plain sight*)
def build_unet(base_filters=16, depth=4, dropout=0.05, bn_momentum=0.9, name="unet", block=None):
    """The series' UNet: a keras.Model from (None, None, 1) images to (None, None, 1) salt probabilities.

    ``depth`` levels of :func:`conv_block` + 2x2 max-pool + dropout (filters
    doubling from ``base_filters``), a bottleneck, then ``depth`` levels of 2x2
    transposed convolution, concatenation with the skip, dropout and
    :func:`conv_block`, and a 1x1 sigmoid head. Fully convolutional: height and
    width only need to be multiples of 2**depth. The head is float32 even
    under mixed precision. ``bn_momentum`` goes to every block (the
    benchmark's seed-style reference uses Keras' default, 0.99). ``block`` is
    the block of every level, :func:`conv_block` unless the benchmark's levers
    pass another with its arguments (x, filters, name, bn_momentum).
    """

    block = block or conv_block
    inputs = keras.Input(shape=(None, None, 1), name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = block(x, base_filters * 2 ** level, name=f"down{level + 1}", bn_momentum=bn_momentum)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
        x = layers.Dropout(dropout, name=f"down{level + 1}_drop")(x)
    x = block(x, base_filters * 2 ** depth, name="bottleneck", bn_momentum=bn_momentum)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base_filters * 2 ** level, 2, strides=2, padding="same",
                                   name=f"up{level + 1}_transpose")(x)
        x = layers.Concatenate(name=f"up{level + 1}_concat")([x, skips[level]])
        x = layers.Dropout(dropout, name=f"up{level + 1}_drop")(x)
        x = block(x, base_filters * 2 ** level, name=f"up{level + 1}", bn_momentum=bn_momentum)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="salt")(x)
    return keras.Model(inputs, outputs, name=name)


# 02_build_unet, *The head*
def describe_model(model) -> list[tuple[str, str, int]]:
    """(layer name, class name, parameter count) for every layer: what 'the same model' means."""
    return [(layer.name, type(layer).__name__, layer.count_params()) for layer in model.layers]


# ---------------------------------------------------------------------------
# 3. Training (03_train): the recipe, losses, Adam, flips, callbacks, the two stages
# ---------------------------------------------------------------------------


# 03_train, *The recipe*
def stage_one_config(config: TrainingConfig) -> TrainingConfig:
    """Stage 1's TrainingConfig: with a time budget and a stage 2, stage 1 gets ``1 - finetune_share`` of it."""
    if config.time_budget_min and config.finetune_epochs:
        return replace(config, time_budget_min=config.time_budget_min * (1 - config.finetune_share))
    return config


# 03_train, *Loss and optimizer* (written out there)
@keras.saving.register_keras_serializable(package="salt_unet")
def soft_dice_loss(y_true, y_pred, smooth=1.0):
    """1 - soft Dice of each image, averaged: float32 tensors (B, H, W, 1) in [0, 1] -> scalar in [0, 1).

    Computed per image, like the competition metric, so an image without salt
    costs almost 1 as soon as its predicted probabilities add up to a few pixels.
    ``smooth`` keeps an empty mask predicted empty at a loss of 0.
    """

    y_true = ops.cast(y_true, y_pred.dtype)
    overlap = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3))
    return 1.0 - ops.mean((2.0 * overlap + smooth) / (total + smooth))


# 03_train, *Loss and optimizer* (written out there)
@keras.saving.register_keras_serializable(package="salt_unet")
def bce_dice_loss(y_true, y_pred):
    """The series' loss: binary cross-entropy (per pixel) plus :func:`soft_dice_loss` (per image).

    Cross-entropy gives every pixel a smooth gradient from the first step; the
    Dice term scores each image as a whole, closer to the IoU-based metric.
    """

    y_true = ops.cast(y_true, y_pred.dtype)
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred))
    return bce + soft_dice_loss(y_true, y_pred)


# 03_train, *Stage 1, in plain sight* (its cell writes this compile out)
def compile_unet(model, learning_rate=1e-3, loss=bce_dice_loss, ema_momentum=0.0, metrics=("accuracy",)):
    """Adam and (by default) :func:`bce_dice_loss`, with pixel accuracy for the log.

    With ``ema_momentum`` in (0, 1), Adam also keeps an exponential moving
    average of the weights, ``average = m * average + (1 - m) * weights`` after
    every step (0.99: roughly the last 100 steps). The raw weights jump around
    from batch to batch; the average does not. Training always moves the raw
    weights; :func:`make_callbacks` swaps the average in for validation and
    checkpoints. A model computing in float16 gets Adam inside a
    ``LossScaleOptimizer`` (small float16 gradients would round to zero):
    Keras does it only for a model built under the policy, not a loaded one.
    """

    if not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"ema_momentum={ema_momentum!r} must be at least 0 (no average) and below 1")
    optimizer = keras.optimizers.Adam(learning_rate, use_ema=ema_momentum > 0, ema_momentum=ema_momentum)
    if any(layer.dtype_policy.name == "mixed_float16" for layer in model.layers):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    return model


# 03_train, *Augmentation: horizontal flips* and *Stage 1, in plain sight*
class TrainFeed(keras.utils.PyDataset):
    """Shuffled, randomly horizontally flipped training batches, the same after a resume.

    x, y: (N, H, W, 1) float32 images and masks. Each batch is (B, H, W, 1)
    twice; an image and its mask are flipped together (``flip=False``: never).
    The order and flips of epoch e depend only on (seed, e), so a run resumed
    at ``start_epoch`` sees the batches the uninterrupted run would have.
    ``steps_per_epoch`` shortens the epochs (the quick setting). ``rng`` is
    the generator that drew the epoch (a subclass may draw more from it).
    """

    def __init__(self, x, y, batch_size, seed=0, flip=True, steps_per_epoch=None, start_epoch=0):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.flip = x, y, batch_size, seed, flip
        self.steps_per_epoch, self.epoch = steps_per_epoch, start_epoch
        self._draw()

    def _draw(self):
        self.rng = np.random.default_rng([self.seed, self.epoch])
        self.order = self.rng.permutation(len(self.x))
        self.flips = self.rng.random(len(self.x)) < 0.5 if self.flip else np.zeros(len(self.x), bool)

    def __len__(self):
        full = math.ceil(len(self.x) / self.batch_size)
        return min(full, self.steps_per_epoch) if self.steps_per_epoch else full

    def rows(self, index):
        """The indices into x and y of batch ``index``."""
        return self.order[index * self.batch_size:(index + 1) * self.batch_size]

    def __getitem__(self, index):
        rows = self.rows(index)
        xb, yb = self.x[rows].copy(), self.y[rows].copy()
        flips = self.flips[rows]
        xb[flips] = xb[flips, :, ::-1]
        yb[flips] = yb[flips, :, ::-1]
        return xb, yb

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()


# 03_train, *Stage 1, in plain sight*: the model
def load_run_state(run_dir) -> dict | None:
    """The saved state of an interrupted or finished run in ``run_dir``, or None for a new run."""
    path = Path(run_dir) / "resume" / "state.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(damaged(path, error)) from None


# 03_train, *Stage 1, in plain sight*, and 04_evaluate, *The trained model and the validation split*
def load_model_safely(path):
    """Load a .keras model with Keras safe mode on, so no code stored in the file runs.

    A file that carries code (a Lambda layer, say) is refused with a message
    that says why; a missing file names the notebook that writes it.
    """

    path = require_file(path, "03_train.ipynb")
    if not zipfile.is_zipfile(path):  # a .keras file is a zip; Keras would say "File not found" of it
        raise ValueError(damaged(path, "not a whole .keras file: cut off while it was written, by a full disk "
                                       "or a cut Drive sync, say"))
    try:
        return keras.saving.load_model(path, safe_mode=True)  # the series' losses are registered with Keras
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ValueError(f"{path}: refused to load a model that carries code (a Lambda layer or "
                             f"similar). Only load files you trust, and only this series' own "
                             f"checkpoints here.") from None
        raise ValueError(f"{path}: not a loadable Keras model ({error})") from None


# 03_train, *Stage 1, in plain sight*: the feed
def network_arrays(train: SaltData, val: SaltData) -> dict:
    """What :func:`train_stage` fits on: padded train "x" and "y", and "validation" as (images, masks)."""
    return dict(x=to_network_input(train.images), y=to_network_target(train.masks),
                validation=(to_network_input(val.images), to_network_target(val.masks)))


# 03_train, *Averaged weights* and the callbacks of *Stage 1, in plain sight*
class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights, told whether a resumed model already holds the averaged weights.

    From each epoch's end (validation included) to the next epoch's start the model holds Adam's
    average. A resume snapshot is saved at an epoch's end, so its model holds the average and its
    optimizer the raw weights: with ``resumed=True`` the first epoch's start swaps them back (Keras
    keeps that in ``_ema_weights_in_model``, with no public setter; a test fails if it is renamed).
    On JAX, Keras' last two copies (raw weights into the average, the average into the model) share
    one array, which the next ``predict`` on a GPU frees ("Array has been deleted" on saving): here
    each average gets an array of its own. Under ``mixed_float16`` the average is on the
    ``LossScaleOptimizer``'s ``inner_optimizer``.
    """

    def __init__(self, resumed=False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed

    def _backend_finalize_ema_values(self, optimizer):
        for weights, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            average.assign(ops.convert_to_numpy(weights))

    def on_train_end(self, logs=None):
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        for average in getattr(optimizer, "_model_variables_moving_average", ()):
            average.assign(ops.convert_to_numpy(average))


# 03_train, the callbacks of *Stage 1, in plain sight*
class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save ``best.keras`` (+ ``best.json``: its epoch and val_loss) only when val_loss improves.

    Keras' ModelCheckpoint(save_best_only=True) writes in place; this one
    writes a temporary file and renames it, so a crash mid-save leaves the
    previous best intact. It saves the network and its weights without the
    optimizer (a quarter of the size: no Adam moments, no average; what
    resumes training is ``resume/``). ``best`` is the val_loss to beat (inf for a new run).
    """

    def __init__(self, path, best=np.inf):
        super().__init__()
        self.path, self.best = Path(path), best

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get("val_loss")
        if current is None or not np.isfinite(current) or current >= self.best:
            return
        record = json.dumps({"val_loss": float(current), "epoch": epoch + 1})
        network = keras.Model(self.model.input, self.model.output, name=self.model.name)  # its layers, uncompiled
        save_model_atomically(network, self.path, lambda: atomic_write_text(self.path.with_suffix(".json"), record))
        self.best = float(current)


# 03_train, the callbacks of *Stage 1, in plain sight*
class TimeBudget(keras.callbacks.Callback):
    """Stop training when another epoch as long as the last would overrun ``minutes`` (None: no limit).

    ``spent_s`` is the training time already spent (a resumed run's), and
    grows by each epoch's duration.
    """

    def __init__(self, minutes=None, spent_s=0.0):
        super().__init__()
        self.minutes, self.spent_s = minutes, spent_s

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        took = time.monotonic() - self.started
        self.spent_s += took
        if self.minutes and self.spent_s + took > self.minutes * 60:
            print(f"Time budget: {self.spent_s / 60:.1f} of {self.minutes:g} min spent, and another epoch "
                  f"would overrun it; stopping after epoch {epoch + 1}.")
            self.model.stop_training = True


# 03_train, the callbacks of *Stage 1, in plain sight*
class RunState(keras.callbacks.Callback):
    """After every epoch, write what a resumed run needs into ``run_dir/resume/`` and ``history.csv``.

    Keras' BackupAndRestore keeps the model, the optimizer and the epoch, but
    not the counters of ReduceLROnPlateau and EarlyStopping, the best
    checkpoint's val_loss, the time spent or the history: this callback saves
    them all (``state.json``) beside a snapshot of the model and optimizer,
    and on a resumed run's start puts the counters back. It reads the other
    callbacks it is given, so it must come after them in the list. While it
    trains it holds the folder's :class:`RunFolderLock`, so a second run
    there refuses. On Google Drive it snapshots every
    :func:`snapshot_every_min` minutes, not every epoch (Drive keeps every
    replaced file in its trash for 30 days).
    """

    def __init__(self, run_dir, plateau, early, checkpoint, budget, state=None):
        super().__init__()
        self.run_dir, self.state = Path(run_dir), state or {}
        self.plateau, self.early, self.checkpoint, self.budget = plateau, early, checkpoint, budget
        self.history = list(self.state.get("history", []))
        self.lock, self.every_s = RunFolderLock(self.run_dir), 60 * snapshot_every_min(self.run_dir)
        self.snapshot_at_s = self.state.get("train_seconds", 0.0)
        self.longest_epoch_s, self.epoch_started = 0.0, time.monotonic()

    def on_train_begin(self, logs=None):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        if not self.state:
            return
        # the other callbacks reset themselves when training begins: put their counters back
        saved = self.state
        self.plateau.wait, self.plateau.best = saved["plateau"]["wait"], saved["plateau"]["best"]
        self.plateau.cooldown_counter = saved["plateau"]["cooldown_counter"]
        self.early.wait, self.early.best = saved["early"]["wait"], saved["early"]["best"]
        self.early.best_epoch = saved["early"]["best_epoch"]
        if (self.run_dir / "best.keras").is_file():
            self.early.best_weights = load_model_safely(self.run_dir / "best.keras").get_weights()
        self.model.optimizer.learning_rate.assign(saved["learning_rate"])

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.monotonic()
        done = self.history[-1]["epoch"] if self.history else 0
        if epoch < done:  # model.fit run again with the initial_epoch of a stage that has trained on since
            raise RuntimeError(f"{self.run_dir}: epoch {epoch + 1} is trained already ({done} epochs are in "
                               "history.csv). Run the stage's cells again from the model's cell, which reads "
                               "where the run stands, not model.fit alone.")

    def on_epoch_end(self, epoch, logs=None):
        learning_rate = self._learning_rate()
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                             "lr_next": learning_rate, "train_seconds": round(self.budget.spent_s, 1)})
        self.longest_epoch_s = max(self.longest_epoch_s, time.monotonic() - self.epoch_started)
        self.lock.beat(self.longest_epoch_s)
        last = self.model.stop_training or epoch + 1 >= self.params.get("epochs", math.inf)
        if last or self.budget.spent_s - self.snapshot_at_s >= self.every_s:
            self.save(epoch + 1, learning_rate, finished=False)
            self.snapshot_at_s = self.budget.spent_s

    def on_train_end(self, logs=None):
        try:
            self.save(self.history[-1]["epoch"] if self.history else 0, self._learning_rate(), finished=True)
        finally:
            self.lock.release()

    def _learning_rate(self):
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def save(self, epochs_done, learning_rate, finished):
        resume_dir = self.run_dir / "resume"
        resume_dir.mkdir(exist_ok=True)
        snapshot = resume_dir / f"epoch-{epochs_done:04d}.keras"
        if not finished:
            save_model_atomically(self.model, snapshot)
        record = {
            "epochs_done": epochs_done, "finished": finished, "snapshot": snapshot.name,
            "learning_rate": learning_rate, "train_seconds": self.budget.spent_s,
            "plateau": {"wait": self.plateau.wait, "best": _float_or_none(self.plateau.best),
                        "cooldown_counter": self.plateau.cooldown_counter},
            "early": {"wait": self.early.wait, "best": _float_or_none(self.early.best),
                      "best_epoch": self.early.best_epoch},
            "best_checkpoint": self.checkpoint.best, "history": self.history,
        }
        atomic_write_text(resume_dir / "state.json", json.dumps(record, indent=1))
        atomic_write_text(self.run_dir / "history.csv", pd.DataFrame(self.history).to_csv(index=False))
        for old in resume_dir.glob("epoch-*.keras"):
            if old != snapshot:
                old.unlink()


def _float_or_none(value):
    return None if value is None else float(value)


# 03_train, the callbacks of *Stage 1, in plain sight* (and stage 2)
def make_callbacks(config: TrainingConfig, run_dir, state=None, extra=()):
    """The run's callbacks, in the order they must run at each epoch's end.

    0. With ``config.ema_momentum``, :class:`AveragedWeights`: validation, the
    checkpoints and the snapshots below see Adam's averaged weights;
    1. TerminateOnNaN; 2. ReduceLROnPlateau (x``plateau_factor`` after
    ``plateau_patience`` epochs without a lower val_loss); 3. EarlyStopping
    (after ``early_stop_patience``, restoring the best weights); 4.
    :class:`AtomicBestCheckpoint`; 5. :class:`TimeBudget`; then ``extra``
    callbacks (measurements, say); last, :class:`RunState`, which saves what
    all the others hold. ``state`` (from :func:`load_run_state`) puts the
    counters back where an interrupted run left them.
    """
    run_dir = Path(run_dir)
    state = state or {}
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.plateau_factor,
                                                patience=config.plateau_patience,
                                                min_lr=config.min_learning_rate, verbose=0)
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stop_patience,
                                          restore_best_weights=True, verbose=0)
    best_so_far = state.get("best_checkpoint", np.inf)
    if (run_dir / "best.json").is_file():
        best_so_far = min(best_so_far, json.loads((run_dir / "best.json").read_text())["val_loss"])
    checkpoint = AtomicBestCheckpoint(run_dir / "best.keras", best_so_far)
    budget = TimeBudget(config.time_budget_min, state.get("train_seconds", 0.0))
    averaged = [AveragedWeights(resumed=bool(state))] if config.ema_momentum else []
    return [*averaged, keras.callbacks.TerminateOnNaN(), plateau, early, checkpoint, budget, *extra,
            RunState(run_dir, plateau, early, checkpoint, budget, state)]


# 03_train, *Stage 1, in plain sight* (the cells there are this function, step by step)
def train_stage(config, stage_dir, new_model, arrays, verbose=2, extra_callbacks=(), flip=True, new_feed=TrainFeed):
    """Fit one stage into ``stage_dir``: a new model from ``new_model()``, or the stage's resume snapshot.

    ``arrays`` comes from :func:`network_arrays`; the seed, the feed and the
    callbacks are the series' own, so every stage trains the same way.
    ``flip=False`` feeds the batches unflipped (the benchmark's reference);
    ``new_feed`` makes the feed (:class:`TrainFeed`'s arguments; the benchmark's
    levers pass a subclass).
    """

    stage_dir = ensure_run_dir(stage_dir)
    state = load_run_state(stage_dir)
    if state and state["finished"]:
        print(f"{stage_dir}: this stage finished after {state['epochs_done']} epochs; nothing to train. "
              f"Use a new SALT_RUN_DIR (or delete {stage_dir}/resume) to train it again.")
        return
    keras.utils.set_random_seed(config.seed)
    if state:
        model = load_model_safely(stage_dir / "resume" / state["snapshot"])
        print(f"Resuming from the end of epoch {state['epochs_done']} in {stage_dir} "
              f"(learning rate {state['learning_rate']:.1e}).")
    else:
        model = new_model()
    initial_epoch = state["epochs_done"] if state else 0
    feed = new_feed(arrays["x"], arrays["y"], config.batch_size, seed=config.seed, flip=flip,
                    steps_per_epoch=config.steps_per_epoch, start_epoch=initial_epoch)
    model.fit(feed, validation_data=arrays["validation"], epochs=config.epochs, initial_epoch=initial_epoch,
              verbose=verbose, callbacks=make_callbacks(config, stage_dir, state, extra_callbacks))


# 03_train, *Stage 2: the Lovász hinge* (written out there)
@keras.saving.register_keras_serializable(package="salt_unet")
def lovasz_hinge_loss(y_true, y_pred):
    """Per-image Lovász hinge (stage 2): float32 (B, H, W, 1) truth in {0, 1} and probabilities -> scalar >= 0.

    Berman et al. (2018): a convex surrogate of each image's Jaccard loss
    1 - IoU, the quantity the competition metric thresholds. The probabilities
    are turned back into logits (clipped to about +-16), each pixel gets the
    hinge error ``max(0, 1 - logit * sign)`` (sign +1 for salt, -1 for none),
    and the errors, largest first, are weighted by how much each one adds to
    the image's Jaccard loss. At hinge errors of exactly 0 or 1 the loss *is*
    the Jaccard loss of the wrong pixels. Averaged over the batch's images.
    """

    eps = 1e-7
    probs = ops.clip(ops.cast(y_pred, "float32"), eps, 1.0 - eps)
    logits = ops.reshape(ops.log(probs) - ops.log(1.0 - probs), (ops.shape(y_pred)[0], -1))
    labels = ops.reshape(ops.cast(y_true, logits.dtype), ops.shape(logits))
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    order = ops.flip(ops.argsort(errors, axis=1), axis=1)  # largest error first
    errors_sorted = ops.take_along_axis(errors, order, axis=1)
    labels_sorted = ops.take_along_axis(labels, order, axis=1)
    salt = ops.sum(labels_sorted, axis=1, keepdims=True)
    intersection = salt - ops.cumsum(labels_sorted, axis=1)
    union = salt + ops.cumsum(1.0 - labels_sorted, axis=1)
    jaccard = 1.0 - intersection / union
    weights = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=1)
    return ops.mean(ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(weights), axis=1))


# 03_train, *Stage 2*, through train_stage_two
def finetune_config(config: TrainingConfig, time_budget_min=None) -> TrainingConfig:
    """Stage 2's TrainingConfig: ``finetune_epochs`` at ``finetune_learning_rate``, its own seed and budget."""
    return replace(config, epochs=config.finetune_epochs, learning_rate=config.finetune_learning_rate,
                   seed=config.seed + 1, time_budget_min=time_budget_min)


# 03_train, *Stage 2*, through train_stage_two
def finetune_model(checkpoint, config: TrainingConfig, loss=lovasz_hinge_loss):
    """Stage 2's starting model: stage 1's ``checkpoint`` compiled with ``loss`` and ``config``'s Adam.

    ``config`` is stage 2's own (from :func:`finetune_config`): its learning
    rate and averaged weights.
    """
    return compile_unet(load_model_safely(checkpoint), config.learning_rate, loss=loss,
                        ema_momentum=config.ema_momentum)


FINETUNE_DIR = "lovasz"
"""The sub-folder of a run that holds stage 2 (its own best.keras, history.csv and resume/)."""


# 03_train, *Stage 2: the Lovász hinge*
def train_stage_two(config: TrainingConfig, run_dir, arrays, verbose=2, extra_callbacks=(), finetune=finetune_model,
                    new_feed=TrainFeed):
    """Stage 2 (when ``config.finetune_epochs`` > 0): stage 1's best.keras fine-tuned with the Lovász hinge.

    It trains into ``run_dir/lovasz/`` with :func:`finetune_config` and
    whatever is left of the time budget after stage 1. ``arrays`` comes from
    :func:`network_arrays`. ``finetune(checkpoint, config)`` makes the
    starting model (default :func:`finetune_model`) and ``new_feed`` the feed
    (:func:`train_stage`); the benchmark's levers pass their own.
    """
    if not config.finetune_epochs:
        return
    run_dir = Path(run_dir)
    budget = config.time_budget_min
    spent_min = load_run_state(run_dir)["train_seconds"] / 60
    second = finetune_config(config, time_budget_min=max(budget - spent_min, 1e-3) if budget else None)
    train_stage(second, run_dir / FINETUNE_DIR, lambda: finetune(run_dir / "best.keras", second),
                arrays, verbose, extra_callbacks, new_feed=new_feed)


# 03_train, *Learning curves*
def training_history(run_dir) -> pd.DataFrame:
    """Both stages' history.csv as one table, one row per epoch.

    Columns: ``stage`` (1 or 2), ``epoch`` and ``train_seconds`` counted from
    the start of stage 1, then Keras' logs (loss, val_loss, accuracy, ...,
    learning_rate) and ``lr_next``. Stage 2's losses are Lovász hinge values,
    not comparable with stage 1's.
    """
    run_dir = Path(run_dir)
    parts, epochs, seconds = [], 0, 0.0
    for stage, folder in ((1, run_dir), (2, run_dir / FINETUNE_DIR)):
        path = folder / "history.csv"
        if not path.is_file():
            continue
        part = pd.read_csv(path)
        part.insert(0, "stage", stage)
        part["epoch"] += epochs
        part["train_seconds"] += seconds
        epochs, seconds = int(part["epoch"].iloc[-1]), float(part["train_seconds"].iloc[-1])
        parts.append(part)
    if not parts:
        raise FileNotFoundError(f"{run_dir / 'history.csv'} is missing: run 03_train.ipynb first")
    return pd.concat(parts, ignore_index=True)


# 03_train, *What training left in the run folder*, and 04_evaluate, *The trained model and the validation split*
def final_checkpoint(run_dir, config: TrainingConfig) -> Path:
    """The model a run ends with: stage 2's ``lovasz/best.keras``, or ``best.keras`` without stage 2."""
    run_dir = Path(run_dir)
    return run_dir / FINETUNE_DIR / "best.keras" if config.finetune_epochs else run_dir / "best.keras"


# The two stages in one call, through train_unet: stage 1's model (03_train builds it in its cells)
def new_unet(config: TrainingConfig):
    """Stage 1's starting model for ``config``: :func:`build_unet` compiled by :func:`compile_unet`.

    The UNet gets ``config``'s filters and dropout and is built under
    ``config.precision`` (the global dtype policy is left as it was), Adam
    gets its learning rate and averaged weights, the loss is
    :func:`bce_dice_loss`. This is the model 03_train builds in its cells.
    """
    with dtype_policy(config.precision):
        model = build_unet(config.base_filters, dropout=config.dropout)
    return compile_unet(model, config.learning_rate, ema_momentum=config.ema_momentum)


# The two stages in one call, through new_unet (03_train sets the policy in *Mixed precision*)
@contextlib.contextmanager
def dtype_policy(name):
    """Build layers under the Keras dtype policy ``name`` (e.g. ``"mixed_bfloat16"``), then restore the global one."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


# The two stages in one call (benchmarks/train_full.py, the benchmark, the tests)
def train_unet(config: TrainingConfig, train: SaltData, val: SaltData, run_dir, verbose=2, extra_callbacks=(),
               new_model=new_unet, finetune=finetune_model, new_feed=TrainFeed):
    """Train (or resume) the series' two stages into ``run_dir``; return :func:`training_history`.

    Stage 1 is ``new_model(config)`` (:func:`new_unet`) trained into ``run_dir``, as 03_train's
    cells do; stage 2 is :func:`train_stage_two`. Each stage has its own callbacks and resume
    state, so a run cut off in either continues where it stopped, and a finished stage is not
    trained again. ``extra_callbacks`` run in both stages, before the run state. ``new_model``,
    ``finetune`` and ``new_feed`` are the benchmark's doors for its levers (``benchmarks/lever_models.py``).
    """
    run_dir = ensure_run_dir(run_dir)
    arrays = network_arrays(train, val)
    first = stage_one_config(config)
    train_stage(first, run_dir, lambda: new_model(first), arrays, verbose, extra_callbacks, new_feed=new_feed)
    train_stage_two(config, run_dir, arrays, verbose, extra_callbacks, finetune=finetune, new_feed=new_feed)
    return training_history(run_dir)


# ---------------------------------------------------------------------------
# 4. Evaluation (04_evaluate): predictions, thresholds, post-processing, the submission
# ---------------------------------------------------------------------------


# 04_evaluate, *Predict the validation slices*
def predict_salt(model, images, batch_size=64, flip_tta=False) -> np.ndarray:
    """Salt probabilities for uint8 images with the series' preprocessing.

    model: the saved UNet (see :func:`load_model_safely`). images: (N, H, W)
    uint8, any H and W (101 for TGS). Returns (N, H, W) float32 in [0, 1].
    ``flip_tta`` averages the prediction with that of the mirrored image.
    Works in chunks of ``batch_size``, so memory does not grow with N.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if flip_tta:
        mirrored = predict_salt(model, images[:, :, ::-1], batch_size)
        return (predict_salt(model, images, batch_size) + mirrored[:, :, ::-1]) / 2
    height, width = images.shape[1:]
    out = np.empty(images.shape, np.float32)
    for start in range(0, len(images), batch_size):
        x = to_network_input(images[start:start + batch_size])
        probs = keras_to_numpy(model.predict_on_batch(x))
        out[start:start + batch_size] = crop_to(probs[..., 0], height, width)
    return out


# 04_evaluate, through predict_salt
def keras_to_numpy(tensor) -> np.ndarray:
    """Any backend's tensor as a float32 numpy array."""

    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float32)


# 04_evaluate, *The scores at threshold 0.5*
def score_report(truth, pred) -> dict:
    """Competition score, mean IoU, pixel IoU and mean Dice of bool (N, H, W) predictions."""
    return {"competition_score": competition_score(truth, pred),
            "mean_iou": float(iou_per_image(truth, pred).mean()),
            "pixel_iou": pixel_iou(truth, pred),
            "dice": float(dice_per_image(truth, pred).mean())}


# 04_evaluate, *How sure are these numbers?* (and the benchmark's intervals)
def bootstrap_interval(values, paired_with=None, seed=0, resamples=2000) -> tuple[float, float]:
    """95% percentile-bootstrap interval (low, high) of the mean of ``values`` (one score per slice).

    Each of ``resamples`` draws picks len(values) slices with replacement and takes the mean
    score; the interval holds the middle 95% of those means. With ``paired_with`` (another
    choice's scores on the same slices, in the same order) it is the interval of the mean
    difference ``values - paired_with``: both are drawn on the same slices, so the slices'
    difficulty, shared by both, cancels out. An interval that holds 0 is no evidence of a gain.
    """
    values = np.asarray(values, dtype=np.float64)
    if paired_with is not None:
        other = np.asarray(paired_with, dtype=np.float64)
        if other.shape != values.shape:
            raise ValueError(f"paired scores differ in shape: {values.shape} and {other.shape}")
        values = values - other
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    low, high = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


PIXEL_THRESHOLDS = np.round(np.arange(0.2, 0.81, 0.05), 3)
"""The pixel thresholds that 04_evaluate and :func:`tune_postprocessing` sweep."""


# 04_evaluate, *Choosing the threshold*
def threshold_sweep(truth, probs, thresholds=PIXEL_THRESHOLDS) -> pd.DataFrame:
    """The competition score of ``probs > t`` for each threshold t: a DataFrame (threshold, score)."""
    scores = [competition_score(truth, probs > t) for t in thresholds]
    return pd.DataFrame({"threshold": np.round(thresholds, 3), "score": scores})


# 04_evaluate, *Test-time augmentation, small components and empty slices*
def remove_small_components(masks, min_pixels) -> np.ndarray:
    """Drop connected salt regions smaller than ``min_pixels`` from (N, H, W) bool masks.

    Regions are 4-connected (pixels that share an edge). Written with
    ``skimage.measure.label`` alone, which behaves the same in every
    scikit-image release the series supports.
    """
    from skimage.measure import label

    masks = _as_batch(masks).copy()
    if min_pixels <= 0:
        return masks
    for mask in masks:
        if mask.any():
            regions = label(mask, connectivity=1)
            sizes = np.bincount(regions.ravel())
            mask[sizes[regions] < min_pixels] = False
    return masks


# 04_evaluate, *Test-time augmentation, small components and empty slices*
def masks_from_probabilities(probs, threshold=0.5, min_pixels=0, min_peak=0.0) -> np.ndarray:
    """Salt masks from (N, H, W) float probabilities in [0, 1]: (N, H, W) bool.

    A pixel is salt when its probability exceeds ``threshold``; connected
    regions smaller than ``min_pixels`` are dropped; and the empty-slice rule
    clears the whole mask of an image whose highest probability stays below
    ``min_peak`` (0: no rule), since one false pixel costs an empty slice its
    whole score.
    """
    probs = np.asarray(probs)
    masks = remove_small_components(probs > threshold, min_pixels)
    masks[probs.reshape(len(probs), -1).max(axis=1) < min_peak] = False
    return masks


# 04_evaluate, *Test-time augmentation, small components and empty slices*
@dataclass(frozen=True)
class Postprocessing:
    """How probabilities become masks: the four choices :func:`tune_postprocessing` makes on validation.

    ``threshold``: a pixel is salt above it. ``flip_tta``: average the
    prediction with that of the mirrored slice. ``min_peak``: the empty-slice
    rule (clear a mask whose highest probability stays below it; 0: no rule).
    ``min_pixels``: drop connected regions smaller than this (0: keep all).
    The defaults are the plain rule: threshold 0.5, nothing else.
    """

    threshold: float = 0.5
    flip_tta: bool = False
    min_peak: float = 0.0
    min_pixels: int = 0

    def masks(self, probs) -> np.ndarray:
        """(N, H, W) bool masks from probabilities predicted with (or without) ``flip_tta`` as chosen."""
        return masks_from_probabilities(probs, self.threshold, self.min_pixels, self.min_peak)

    def predict(self, model, images) -> np.ndarray:
        """(N, H, W) bool masks for uint8 (N, H, W) images: :func:`predict_salt`, then :meth:`masks`."""
        return self.masks(predict_salt(model, images, flip_tta=self.flip_tta))


# 04_evaluate, *Test-time augmentation, small components and empty slices*
def tune_postprocessing(truth, probs, probs_flipped, sizes=(0, 10, 25, 50, 100, 200),
                        peaks=(0.6, 0.7, 0.8, 0.9)) -> tuple[Postprocessing, pd.DataFrame, pd.Series]:
    """Pick, on validation, what turns probabilities into masks: 04_evaluate's four choices.

    truth: (N, H, W) bool; probs / probs_flipped: (N, H, W) float32 without and
    with flip test-time augmentation. For each, the pixel threshold is swept
    together with the empty-slice rule's ``min_peak`` (0, or one of ``peaks``
    above the threshold); flips are kept if they raise the best score (ties
    keep the simpler choice); then the minimum component size is chosen.
    Returns the :class:`Postprocessing` chosen and the two tables behind it:
    ``rules`` (flip_tta, threshold, min_peak, score; its rows with min_peak 0
    are the plain threshold sweeps) and ``cleaning`` (score by component size).
    """
    rows = [{"flip_tta": flip_tta, "threshold": threshold, "min_peak": peak,
             "score": competition_score(truth, masks_from_probabilities(candidate, threshold, 0, peak))}
            for flip_tta, candidate in ((False, probs), (True, probs_flipped))
            for threshold in PIXEL_THRESHOLDS
            for peak in (0.0, *[p for p in peaks if p > threshold])]
    rules = pd.DataFrame(rows)
    best = rules.loc[rules["score"].idxmax()]
    flip_tta, threshold, min_peak = bool(best["flip_tta"]), float(best["threshold"]), float(best["min_peak"])
    chosen = probs_flipped if flip_tta else probs
    cleaning = pd.Series({size: competition_score(truth, masks_from_probabilities(chosen, threshold, size, min_peak))
                          for size in sizes}, name="score").rename_axis("min component size (px)")
    return Postprocessing(threshold, flip_tta, min_peak, int(cleaning.idxmax())), rules, cleaning


# 04_evaluate, *The best and the worst cases*
ERROR_COLOURS = {"salt found": (0.0, 0.45, 0.70), "false salt": (0.80, 0.47, 0.65), "salt missed": (0.94, 0.89, 0.26)}
"""Okabe-Ito blue, reddish purple and yellow: told apart with the common kinds of colour blindness too
(and apart from the orange of a true salt boundary in the other figures)."""


# 04_evaluate, *The best and the worst cases*
def error_overlay(image, truth, pred) -> np.ndarray:
    """An RGB picture of one prediction's hits and misses over its slice.

    image: (H, W) uint8; truth, pred: (H, W) bool. Returns (H, W, 3) float in
    [0, 1]: the slice in gray, tinted where the prediction found salt (blue),
    called salt where there is none (reddish purple) and missed salt (yellow):
    :data:`ERROR_COLOURS`, which the figure's legend uses.
    """
    gray = np.repeat((np.asarray(image, np.float32) / 255.0)[..., None], 3, axis=2)
    cases = {"salt found": (True, True), "false salt": (False, True), "salt missed": (True, False)}
    out = gray.copy()
    for name, (is_salt, predicted) in cases.items():
        where = (truth == is_salt) & (pred == predicted)
        out[where] = 0.45 * gray[where] + 0.55 * np.array(ERROR_COLOURS[name])
    return out


# 04_evaluate, *A Kaggle submission*
def write_submission(model, folder, out_path, postprocessing=Postprocessing(), chunk=1000) -> int:
    """Predict every ``<folder>/test/images/*.png`` and write a Kaggle submission.csv.

    The masks are made by ``postprocessing`` (see :class:`Postprocessing`).
    Reads, predicts and writes ``chunk`` images at a time, so memory stays
    bounded for the 18,000 test slices. Returns the number of rows written.
    The file is written under a temporary name and renamed when complete.
    """
    ids = list_test_ids(folder)
    out_path = Path(out_path)
    temporary = out_path.with_name(out_path.name + ".partial")
    with open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "rle_mask"])
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            masks = postprocessing.predict(model, load_test_images(folder, part))
            writer.writerows((i, rle_encode(m)) for i, m in zip(part, masks))
    os.replace(temporary, out_path)
    return len(ids)


# 04_evaluate, *A Kaggle submission*
def check_submission(path, expected_ids) -> None:
    """Raise SaltDataError unless ``path`` has the header id,rle_mask, exactly ``expected_ids``, valid RLEs."""
    table = read_ids_csv(path, ["id", "rle_mask"])
    if list(table.columns) != ["id", "rle_mask"]:
        raise SaltDataError(f"{path}: header must be 'id,rle_mask', got {','.join(table.columns)}")
    missing = set(expected_ids) - set(table["id"])
    extra = set(table["id"]) - set(expected_ids)
    if missing or extra:
        raise SaltDataError(f"{path}: {len(missing)} ids missing, {len(extra)} unexpected "
                            f"(e.g. {sorted(missing)[:2]} {sorted(extra)[:2]})")
    for row, rle in enumerate(table["rle_mask"], start=2):
        try:
            rle_decode(rle)
        except SaltDataError as error:
            raise SaltDataError(f"{path}, line {row}: {error}") from None
