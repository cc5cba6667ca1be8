"""salt-unet helpers: the code the notebooks teach, gathered for reuse, in the order they call it.

0. Setup (the first cells of every notebook): versions against the floors,
   the GPU, the setting's TrainingConfig, the run folder (on Google Drive in
   Colab).
1. Exploring the data (01_explore_data): the labelled slices, coverage and
   its classes, run-length encoding, IoU, Dice and the competition score,
   the coverage-stratified split.
2. The UNet (02_build_unet): padding 101 to 112 and the network itself
   (and the blocks the benchmark screens as levers: residual, scSE,
   hypercolumn, the empty-slice head; off by default).
3. Training (03_train): the losses, Adam with averaged weights, the feed
   with flips, the callbacks that never lose a run, the two stages (and
   the levers' focal and size-weighted losses, the empty-slice head's
   loss, translation and bfloat16; off by default).
4. Evaluation (04_evaluate): probabilities for any uint8 images, turning
   them into masks (threshold, flips, the empty-slice rule, small
   components), choosing those on validation, the Kaggle submission.
5. Plumbing no notebook teaches: reading the Kaggle files and zips, Kaggle
   credentials and the download, the synthetic stand-in, packing the data
   into one file for a machine without the folder.

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


@contextlib.contextmanager
def native_stderr_silenced():
    """Send what compiled libraries write straight to the process's stderr to /dev/null, for a moment.

    TensorFlow writes its start-up lines (absl, oneDNN, CUDA) there, below
    Python, and ``TF_CPP_MIN_LOG_LEVEL`` does not stop all of them; in a
    notebook they would land in the cell's output. Python's own errors still
    show: an exception leaves the block before it is printed.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


NATIVE_LOG = None
"""In a notebook kernel, the file that compiled libraries' log lines go to (see :func:`check_environment`)."""


def divert_native_logs_in_a_notebook():
    """In a Jupyter kernel, send what compiled libraries write to the process's stderr to a file.

    TensorFlow logs through absl, below Python, and ``TF_CPP_MIN_LOG_LEVEL``
    does not stop those lines: a notebook would show them in its cells'
    outputs (start-up notes, CUDA probes, data-pipeline notes). Python's own
    warnings and errors do not pass there in a kernel, so they still show.
    The file is :data:`NATIVE_LOG`, in the temporary folder. Outside a kernel
    nothing changes.
    """
    global NATIVE_LOG
    if "ipykernel" not in sys.modules or NATIVE_LOG is not None:
        return
    import tempfile

    NATIVE_LOG = Path(tempfile.gettempdir()) / f"salt-unet-native-{os.getpid()}.log"
    handle = os.open(NATIVE_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(handle, 2)
    os.close(handle)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
divert_native_logs_in_a_notebook()
with native_stderr_silenced():
    import keras  # noqa: E402  (with TensorFlow as its backend, this starts TensorFlow)
from keras import layers, ops  # noqa: E402

IMAGE_SIZE = 101
"""Height and width of every TGS slice, in pixels."""

PADDED_SIZE = 112
"""The size the network sees: 101 reflect-padded to the next multiple of 16."""

COMPETITION = "tgs-salt-identification-challenge"
IOU_THRESHOLDS = np.arange(0.5, 1.0, 0.05)
"""The competition's ten IoU thresholds: 0.50, 0.55, ..., 0.95."""


class SaltDataError(ValueError):
    """Bad input data: the message names the file, row or value at fault."""


# ---------------------------------------------------------------------------
# 0. Setup: the first cells of every notebook (environment, GPU, settings, run folder)
# ---------------------------------------------------------------------------


def in_colab() -> bool:
    """Whether this kernel is a Google Colab runtime (Colab imports ``google.colab`` at start)."""
    return "google.colab" in sys.modules


FLOORS_FILE = Path(__file__).resolve().parent / "requirements-floors.txt"
"""The oldest versions the series is tested with; Colab's setup cell installs from this file."""


def version_floors(path=None) -> dict[str, str]:
    """The package floors in ``requirements-floors.txt`` (or ``path``): {"keras": "3.13.2", ...}."""
    floors = {}
    for line in Path(path or FLOORS_FILE).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition(">=")
            floors[name.strip()] = version.strip()
    return floors


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


def env_int(name, default=None):
    """Read an integer environment variable, with a clear error for anything else."""
    value = os.environ.get(name, "")
    if value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} must be a whole number") from None


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
    :func:`compile_unet` and :func:`make_callbacks`).

    The last eight fields are levers the benchmark measures before one becomes
    the series' default (``benchmarks/levers.py``); their defaults are the
    recipe the notebooks teach. ``block`` ("plain" or "residual") and
    ``scse`` / ``hypercolumn`` / ``empty_head`` / ``upscale`` go to :func:`build_unet`; ``stage_one_loss``
    (a key of :data:`STAGE_ONE_LOSSES`) is stage 1's loss; ``shift_pixels`` shifts
    each training slice by up to that many pixels (:class:`TrainFeed`);
    ``mixed_precision`` builds the UNet in bfloat16 with float32 weights.
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
    block: str = "plain"
    scse: bool = False
    hypercolumn: bool = False
    stage_one_loss: str = "bce_dice"
    shift_pixels: int = 0
    mixed_precision: bool = False
    empty_head: bool = False
    upscale: int = 1

    def __post_init__(self):
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                  "steps_per_epoch": self.steps_per_epoch is None or self.steps_per_epoch >= 1,
                  "time_budget_min": self.time_budget_min is None or self.time_budget_min > 0,
                  "finetune_epochs": self.finetune_epochs >= 0, "finetune_share": 0.0 <= self.finetune_share < 1.0,
                  "learning_rate": self.learning_rate > 0, "finetune_learning_rate": self.finetune_learning_rate > 0,
                  "block": self.block in ("plain", "residual"), "shift_pixels": 0 <= self.shift_pixels <= 16,
                  "upscale": self.upscale in (1, 2, 4),
                  "stage_one_loss": self.stage_one_loss in STAGE_ONE_LOSSES}
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"TrainingConfig: {', '.join(f'{n}={getattr(self, n)!r}' for n in wrong)} out of range "
                             "(epochs, batch_size and steps_per_epoch at least 1, finetune_epochs at least 0, "
                             "finetune_share in [0, 1), learning rates and time_budget_min above 0, block 'plain' "
                             f"or 'residual', shift_pixels 0 to 16, upscale 1, 2 or 4, stage_one_loss one of {sorted(STAGE_ONE_LOSSES)})")


SETTINGS = {
    "full": dict(epochs=100, finetune_epochs=50,
                 notes="The real recipe, for a GPU (Colab): up to 100 + 50 epochs, early stopping decides."),
    "class": dict(epochs=100, finetune_epochs=50, time_budget_min=55,
                  notes="A class without GPU: the same recipe, training stops after 55 minutes in all."),
    "quick": dict(epochs=3, finetune_epochs=1, steps_per_epoch=8, batch_size=16, synthetic_count=800,
                  notes="A smoke test: a few short epochs, for make run / make test."),
}


NO_GPU_BUDGET_MIN = SETTINGS["class"]["time_budget_min"]
"""The 'full' setting's time budget on a machine without a GPU: the class setting's."""


def training_config(setting="full", epochs=None, steps_per_epoch=None, time_budget_min=None,
                    gpu="not asked") -> TrainingConfig:
    """The TrainingConfig for 'full' (GPU), 'class' (CPU, 55 min) or 'quick' (smoke test).

    ``epochs`` caps both stages and ``steps_per_epoch`` shortens the epochs.
    ``time_budget_min`` replaces the setting's time budget: minutes, or
    ``"none"`` for no limit. ``gpu`` is what :func:`check_environment`
    found: the 'full' setting on a machine without one (``gpu=None``) gets
    the class setting's budget, and says so, unless ``time_budget_min`` says
    otherwise. Every value is checked by :class:`TrainingConfig`.
    """
    if setting not in SETTINGS:
        raise ValueError(f"SALT_SETTING={setting!r} is not a setting; choose one of {sorted(SETTINGS)}")
    config = TrainingConfig(setting=setting, **SETTINGS[setting])
    changes = {}
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


COLAB_DRIVE = Path(os.environ.get("SALT_COLAB_DRIVE", "/content/drive"))
"""Where Colab mounts Google Drive (a test can point it elsewhere)."""


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


@dataclass
class SaltData:
    """A labelled set of slices.

    ids: (N,) str. images: (N, 101, 101) uint8 in [0, 255].
    masks: (N, 101, 101) bool, True where there is salt.
    depths: (N,) float64 depth in feet (NaN where unknown).
    source: where the data came from, in words.
    folder: the Kaggle-layout folder it was read from (a named folder, an
    extracted zip or a kagglehub download), None for the synthetic stand-in;
    its ``test/images`` are what a submission predicts.
    """

    ids: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    depths: np.ndarray
    source: str = ""
    folder: Path | None = None

    def __len__(self):
        return len(self.ids)

    def subset(self, index):
        """The samples at ``index`` (an int array or boolean mask)."""
        return SaltData(self.ids[index], self.images[index], self.masks[index],
                        self.depths[index], self.source, self.folder)


def load_salt_data(data_dir=None, limit=None, synthetic_count=4000, seed=0, cache_dir="data") -> SaltData:
    """Load the labelled data from wherever :func:`resolve_data_source` points, and say where.

    Returns a SaltData; its ``source`` says what was used and is printed, and
    its ``folder`` is the Kaggle-layout folder actually read (None when synthetic).
    """
    source = resolve_data_source(data_dir)
    print(source.describe())
    if source.kind == "synthetic":
        return make_synthetic_dataset(synthetic_count if limit is None else min(limit, synthetic_count), seed=seed)
    folder = source.path
    if source.kind == "zip":
        folder = prepare_competition_zip(source.path, cache_dir)
    elif source.kind == "kaggle":
        folder = download_from_kaggle(cache_dir)
    return load_tgs_folder(folder, limit=limit)


def coverage(masks) -> np.ndarray:
    """Salt fraction per mask: (N, H, W) bool -> (N,) float64 in [0, 1]."""
    masks = np.asarray(masks, dtype=bool)
    return masks.reshape(len(masks), -1).mean(axis=1)


def coverage_class(cov) -> np.ndarray:
    """The 11 coverage classes: 0 for empty, k for coverage in ((k-1)/10, k/10], k = 1..10."""
    cov = np.asarray(cov, dtype=np.float64)
    if ((cov < 0) | (cov > 1)).any():
        raise ValueError(f"coverage must lie in [0, 1], got values from {cov.min()} to {cov.max()}")
    return np.ceil(np.round(cov * 10, 9)).astype(int)


def rle_encode(mask) -> str:
    """Kaggle run-length encoding of a (H, W) mask: column-major, 1-indexed 'start length' pairs.

    An empty mask encodes as the empty string.
    """
    pixels = np.asarray(mask, dtype=bool).flatten(order="F")
    padded = np.concatenate([[False], pixels, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    starts, ends = changes[::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


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


def iou_per_image(truth, pred) -> np.ndarray:
    """Intersection over union per image: (N, H, W) bool pairs -> (N,) float in [0, 1].

    Two empty masks have IoU 1 (they agree perfectly).
    """
    truth, pred = _as_batch(truth), _as_batch(pred)
    inter = (truth & pred).reshape(len(truth), -1).sum(1)
    union = (truth | pred).reshape(len(truth), -1).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def dice_per_image(truth, pred) -> np.ndarray:
    """Dice coefficient 2|A∩B| / (|A|+|B|) per image, 1 when both are empty."""
    truth, pred = _as_batch(truth), _as_batch(pred)
    inter = (truth & pred).reshape(len(truth), -1).sum(1)
    total = truth.reshape(len(truth), -1).sum(1) + pred.reshape(len(pred), -1).sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def pixel_iou(truth, pred) -> float:
    """IoU of all pixels of all images pooled together (the 'pixel IoU')."""
    truth, pred = _as_batch(truth), _as_batch(pred)
    union = (truth | pred).sum()
    return 1.0 if union == 0 else float((truth & pred).sum() / union)


def competition_score_per_image(truth, pred) -> np.ndarray:
    """The TGS score per image: the share of the thresholds 0.50..0.95 that its IoU exceeds.

    An empty truth scores 1 for an empty prediction and 0 for any salt predicted.
    """
    iou = iou_per_image(truth, pred)
    return (iou[:, None] > IOU_THRESHOLDS[None, :]).mean(axis=1)


def competition_score(truth, pred) -> float:
    """The TGS Salt competition metric: mean over images of :func:`competition_score_per_image`."""
    return float(competition_score_per_image(truth, pred).mean())


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


def save_split(run_dir, data: SaltData, train_index, val_index) -> Path:
    """Write ``split.csv`` (id, subset, coverage, coverage_class) and ``data_source.txt`` into the run folder."""
    run_dir = ensure_run_dir(run_dir)
    cov = coverage(data.masks)
    subset = np.full(len(data), "train", dtype=object)
    subset[val_index] = "val"
    table = pd.DataFrame({"id": data.ids, "subset": subset, "coverage": cov.round(6),
                          "coverage_class": coverage_class(cov)})
    path = run_dir / "split.csv"
    _atomic_write_text(path, table.to_csv(index=False))
    _atomic_write_text(run_dir / "data_source.txt", data.source + "\n")
    return path


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


def crop_to(batch, height, width) -> np.ndarray:
    """Undo :func:`pad_to_multiple`: cut the centre (height, width) out of (N, H', W'[, C])."""
    top = (batch.shape[1] - height) // 2
    left = (batch.shape[2] - width) // 2
    return batch[:, top:top + height, left:left + width]


def to_network_input(images) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H', W', 1) in [0, 1], H' and W' padded to multiples of 16 (101 -> 112)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    return (pad_to_multiple(images)[..., None] / 255.0).astype(np.float32)


def to_network_target(masks) -> np.ndarray:
    """bool (N, H, W) -> float32 (N, H', W', 1) in {0, 1}, padded like the images."""
    return pad_to_multiple(np.asarray(masks, dtype=bool))[..., None].astype(np.float32)


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


def residual_block(x, filters, name, bn_momentum=0.9):
    """A lever (``block="residual"``): :func:`conv_block` with a shortcut, as in ResNet.

    3x3 convolution, batch norm, ReLU, 3x3 convolution, batch norm, then the
    input is added back (through a 1x1 convolution when the number of
    channels changes) before the last ReLU. The block learns a correction to
    its input, which keeps gradients flowing through deep stacks.
    """

    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal",
                                 name=f"{name}_shortcut")(x)
        shortcut = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_shortcut_bn")(shortcut)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(y)


def scse_block(x, name, reduction=2):
    """A lever (``scse=True``): spatial and channel squeeze-and-excitation (Roy et al., 2018).

    (B, H, W, C) -> the same shape. The channel branch averages each channel
    over the image and learns a weight in (0, 1) per channel; the spatial
    branch learns a weight in (0, 1) per pixel with a 1x1 convolution. The
    block returns the input reweighted each way, summed.
    """

    channels = x.shape[-1]
    squeeze = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_cse_squeeze")(x)
    squeeze = layers.Dense(max(channels // reduction, 1), activation="relu", name=f"{name}_cse_dense1")(squeeze)
    squeeze = layers.Dense(channels, activation="sigmoid", name=f"{name}_cse_dense2")(squeeze)
    by_channel = layers.Multiply(name=f"{name}_cse")([x, squeeze])
    where = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_sse_conv")(x)
    by_pixel = layers.Multiply(name=f"{name}_sse")([x, where])
    return layers.Add(name=f"{name}_scse")([by_channel, by_pixel])


@keras.saving.register_keras_serializable(package="salt_unet")
class SpreadOverImage(layers.Layer):
    """[(B, 1, 1, C) values, (B, H, W, any) image] -> (B, H, W, C): each value repeated at every pixel."""

    def call(self, inputs):
        values, image = inputs
        return values * ops.ones_like(image[..., :1], dtype=values.dtype)


def empty_slice_head(bottleneck, decoded, name="empty_head"):
    """A lever (``empty_head=True``): a head that judges the whole slice, salt or none, for the pixels.

    bottleneck: (B, h, w, C) the UNet's deepest features; decoded: (B, H, W, F)
    the last expanding block's output. The bottleneck is averaged over the
    slice into a summary of F values (global average pooling, a ReLU dense
    layer); one sigmoid unit reads the chance in (0, 1) that the slice holds
    any salt. The summary is spread over every pixel and concatenated to
    ``decoded``, so the pixel head sees what the whole slice looks like
    (salt texture without a boundary in view, or nothing at all). Returns
    ``(features for the pixel head (B, H, W, 2F), chance (B, 1, 1, 1) float32)``.
    """

    summary = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(bottleneck)
    summary = layers.Dense(decoded.shape[-1], activation="relu", name=f"{name}_dense")(summary)
    chance = layers.Dense(1, activation="sigmoid", dtype="float32", name="has_salt")(summary)
    spread = SpreadOverImage(name=f"{name}_spread")([summary, decoded])
    return layers.Concatenate(name=f"{name}_fuse")([decoded, spread]), chance


def build_unet(base_filters=16, depth=4, dropout=0.05, bn_momentum=0.9, name="unet",
               block="plain", scse=False, hypercolumn=False, empty_head=False, upscale=1):
    """The series' UNet: a keras.Model from (None, None, 1) images to (None, None, 1) salt probabilities.

    ``depth`` levels of conv_block + 2x2 max-pool (filters doubling from
    ``base_filters``), a bottleneck, then ``depth`` levels of 2x2 transposed
    convolution, concatenation with the skip and conv_block, and a 1x1 sigmoid
    head. Fully convolutional: height and width only need to be multiples of
    2**depth. The head is float32 even under mixed precision. ``bn_momentum``
    goes to every conv_block.

    Levers the benchmark measures (the defaults are the series' UNet):
    ``block="residual"`` uses :func:`residual_block` for every block;
    ``scse=True`` puts a :func:`scse_block` after every expanding block;
    ``hypercolumn=True`` feeds the head every expanding level's output,
    upsampled to full size and concatenated, not only the last one;
    ``empty_head=True`` adds :func:`empty_slice_head` and a second output
    channel, (None, None, 2): channel 0 the salt probabilities, channel 1 the
    slice's chance of holding salt, the same at every pixel (its loss:
    :func:`with_empty_head`).
    """

    if block not in ("plain", "residual"):
        raise ValueError(f"block={block!r}: choose 'plain' or 'residual'")
    if not (isinstance(upscale, int) and upscale >= 1):
        raise ValueError(f"upscale={upscale!r}: the enlargement is a whole number, 1 (none) or more")
    make_block = residual_block if block == "residual" else conv_block
    inputs = keras.Input(shape=(None, None, 1), name="image")
    x = inputs
    if upscale > 1:
        x = layers.UpSampling2D(upscale, interpolation="bilinear", name="upscale")(x)
    skips = []
    for level in range(depth):
        x = make_block(x, base_filters * 2 ** level, name=f"down{level + 1}", bn_momentum=bn_momentum)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
        x = layers.Dropout(dropout, name=f"down{level + 1}_drop")(x)
    x = make_block(x, base_filters * 2 ** depth, name="bottleneck", bn_momentum=bn_momentum)
    bottleneck, columns = x, []
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base_filters * 2 ** level, 2, strides=2, padding="same",
                                   name=f"up{level + 1}_transpose")(x)
        x = layers.Concatenate(name=f"up{level + 1}_concat")([x, skips[level]])
        x = layers.Dropout(dropout, name=f"up{level + 1}_drop")(x)
        x = make_block(x, base_filters * 2 ** level, name=f"up{level + 1}", bn_momentum=bn_momentum)
        if scse:
            x = scse_block(x, name=f"up{level + 1}")
        if hypercolumn and level:
            columns.append(layers.UpSampling2D(2 ** level, interpolation="bilinear",
                                               name=f"up{level + 1}_to_full")(x))
    if columns:
        x = layers.Concatenate(name="hypercolumn")([x, *reversed(columns)])
    if empty_head:
        x, chance = empty_slice_head(bottleneck, x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="salt")(x)
    if upscale > 1:
        outputs = layers.AveragePooling2D(upscale, dtype="float32", name="salt_to_input_size")(outputs)
    if empty_head:
        spread = SpreadOverImage(dtype="float32", name="has_salt_spread")([chance, outputs])
        outputs = layers.Concatenate(dtype="float32", name="salt_and_has_salt")([outputs, spread])
    return keras.Model(inputs, outputs, name=name)


def describe_model(model) -> list[tuple[str, str, int]]:
    """(layer name, class name, parameter count) for every layer: what 'the same model' means."""
    return [(layer.name, type(layer).__name__, layer.count_params()) for layer in model.layers]


def plot_unet(model, input_size=PADDED_SIZE, ax=None):
    """Draw the UNet's U from the model itself: each level's block as a box labelled H×W×filters.

    ``model``: a UNet with the layer names of :func:`build_unet`; the filters
    are read from its layers, the sizes follow from ``input_size`` (halved at
    every level down). Down the left side the contracting
    path, the bottleneck at the bottom, up the right side the expanding
    path; dashed arrows are the skip connections. Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    depth = sum(1 for layer in model.layers if layer.name.endswith("_pool"))
    ax = ax or plt.subplots(figsize=(10, 5))[1]

    def box(name, level, x, y, label):
        size, channels = input_size // 2 ** level, model.get_layer(name).output.shape[-1]
        ax.add_patch(plt.Rectangle((x - 0.4, y - 0.3), 0.8, 0.6, facecolor="tab:orange", alpha=0.35,
                                   edgecolor="black"))
        ax.text(x, y + 0.05, label, ha="center", fontsize=9, weight="bold")
        ax.text(x, y - 0.18, f"{size}×{size}×{channels}", ha="center", fontsize=8)

    for level in range(depth):
        y = depth - level
        box(f"down{level + 1}_relu2", level, level, y, f"down {level + 1}")
        box(f"up{level + 1}_relu2", level, 2 * depth - level, y, f"up {level + 1}")
        ax.annotate("", xy=(2 * depth - level - 0.42, y), xytext=(level + 0.42, y),
                    arrowprops=dict(arrowstyle="->", linestyle="--", color="tab:blue"))
        ax.annotate("", xy=(level + 0.75, y - 0.7), xytext=(level + 0.2, y - 0.32),
                    arrowprops=dict(arrowstyle="->", color="gray"))
        ax.annotate("", xy=(2 * depth - level - 0.2, y - 0.32), xytext=(2 * depth - level - 0.75, y - 0.7),
                    arrowprops=dict(arrowstyle="->", color="gray"))
    box("bottleneck_relu2", depth, depth, 0, "bottleneck")
    ax.text(depth, depth + 0.15, "skip connections (concatenated)", ha="center", color="tab:blue", fontsize=9)
    ax.text(0.6, 0.4, "max pool\n(halves H, W)", fontsize=8, color="gray")
    ax.text(2 * depth - 1.4, 0.4, "transposed conv\n(doubles H, W)", fontsize=8, color="gray")
    ax.set(xlim=(-0.7, 2 * depth + 0.7), ylim=(-0.6, depth + 0.5))
    ax.axis("off")
    return ax


# ---------------------------------------------------------------------------
# 3. Training (03_train): losses, Adam, flips, callbacks, the two stages
# ---------------------------------------------------------------------------


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


@keras.saving.register_keras_serializable(package="salt_unet")
def bce_dice_loss(y_true, y_pred):
    """The series' loss: binary cross-entropy (per pixel) plus :func:`soft_dice_loss` (per image).

    Cross-entropy gives every pixel a smooth gradient from the first step; the
    Dice term scores each image as a whole, closer to the IoU-based metric.
    """

    y_true = ops.cast(y_true, y_pred.dtype)
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred))
    return bce + soft_dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="salt_unet")
def focal_dice_loss(y_true, y_pred, gamma=2.0):
    """A lever (``stage_one_loss="focal_dice"``): focal cross-entropy plus :func:`soft_dice_loss`.

    float32 tensors (B, H, W, 1) in [0, 1] -> scalar >= 0. Focal loss (Lin et
    al., 2017) multiplies each pixel's cross-entropy by ``(1 - p_t) ** gamma``,
    ``p_t`` being the probability given to the pixel's true class: the many
    pixels the model already gets right count for little, the hard ones (the
    edges and small bodies) for more.
    """

    y_true = ops.cast(y_true, y_pred.dtype)
    probs = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    p_true = y_true * probs + (1.0 - y_true) * (1.0 - probs)
    focal = ops.mean(-((1.0 - p_true) ** gamma) * ops.log(p_true))
    return focal + soft_dice_loss(y_true, y_pred)


SMALL_BODY_FRACTION = 0.1
"""Salt covering less of the padded slice than this counts as a small body (the issue's "under 10% salt")."""

SMALL_BODY_MAX_WEIGHT = 5.0
"""The most a small body's salt pixel weighs in :func:`size_weighted_bce_dice_loss` (reached at 0.4% salt)."""


def small_body_weights(y_true):
    """Each salt pixel's weight for :func:`size_weighted_bce_dice_loss`: (B, H, W, 1) masks -> float32 (B, H, W, 1).

    In a slice whose salt covers a fraction ``f`` of it, each salt pixel
    weighs ``sqrt(SMALL_BODY_FRACTION / f)``, between 1 and
    ``SMALL_BODY_MAX_WEIGHT``: 1 from 10% salt up, about 3.2 at 1%, 5 at
    0.4% (some 50 pixels of 112x112) and below. Pixels without salt weigh 1.
    """
    y_true = ops.cast(y_true, "float32")
    fraction = ops.mean(y_true, axis=(1, 2, 3), keepdims=True)
    weight = ops.sqrt(SMALL_BODY_FRACTION / ops.maximum(fraction, 1e-6))
    weight = ops.clip(weight, 1.0, SMALL_BODY_MAX_WEIGHT)
    return 1.0 + (weight - 1.0) * y_true


@keras.saving.register_keras_serializable(package="salt_unet")
def size_weighted_bce_dice_loss(y_true, y_pred):
    """A lever (``stage_one_loss="sized_bce_dice"``): cross-entropy that weighs small bodies' salt more, plus Dice.

    float32 tensors (B, H, W, 1) in [0, 1] -> scalar >= 0. In plain
    cross-entropy every pixel counts the same, so a body of 50 pixels is
    0.4% of a slice's loss and the network can miss it cheaply. Here each
    pixel's cross-entropy is multiplied by :func:`small_body_weights` (a
    salt pixel of a slice with under 10% salt weighs up to 5 times more);
    the per-image :func:`soft_dice_loss` is added unchanged.
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    weights = ops.cast(small_body_weights(y_true), y_pred.dtype)
    bce = ops.mean(weights * ops.binary_crossentropy(y_true, y_pred))
    return bce + soft_dice_loss(y_true, y_pred)


STAGE_ONE_LOSSES = {"bce_dice": bce_dice_loss, "focal_dice": focal_dice_loss,
                    "sized_bce_dice": size_weighted_bce_dice_loss}
"""Stage 1's loss by ``TrainingConfig.stage_one_loss``."""


def compile_unet(model, learning_rate=1e-3, loss=bce_dice_loss, ema_momentum=0.0):
    """Adam and (by default) :func:`bce_dice_loss`, with pixel accuracy for the log.

    With ``ema_momentum`` in (0, 1), Adam also keeps an exponential moving
    average of the weights, ``average = m * average + (1 - m) * weights`` after
    every step (0.99: roughly the last 100 steps). The raw weights jump around
    from batch to batch; the average does not. Training always moves the raw
    weights; :func:`make_callbacks` swaps the average in for validation and
    checkpoints. A model with the empty-slice head (two output channels)
    gets ``loss`` through :func:`with_empty_head`.
    """

    if not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"ema_momentum={ema_momentum!r} must be at least 0 (no average) and below 1")
    optimizer = keras.optimizers.Adam(learning_rate, use_ema=ema_momentum > 0, ema_momentum=ema_momentum)
    metrics = ["accuracy"]
    if model.output.shape[-1] == 2:  # the empty-slice head's lever: its loss and the pixels' accuracy
        loss, metrics = with_empty_head(loss), [keras.metrics.MeanMetricWrapper(salt_accuracy, name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return model


def new_unet(config: TrainingConfig):
    """Stage 1's starting model for ``config``: :func:`build_unet` compiled by :func:`compile_unet`.

    The UNet gets ``config``'s filters, dropout and levers (block, scSE,
    hypercolumn, the empty-slice head, the upscaling; bfloat16 layers with
    ``mixed_precision``), Adam its learning
    rate and averaged weights, and the loss is ``config.stage_one_loss``. With
    the defaults this is the model 03_train builds in its cells.
    """
    policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_unet(config.base_filters, dropout=config.dropout, block=config.block, scse=config.scse,
                           hypercolumn=config.hypercolumn, empty_head=config.empty_head, upscale=config.upscale)
    finally:
        keras.config.set_dtype_policy(policy)
    return compile_unet(model, config.learning_rate, loss=STAGE_ONE_LOSSES[config.stage_one_loss],
                        ema_momentum=config.ema_momentum)


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


EMPTY_HEAD_WEIGHT = 0.1
"""How much the empty-slice head's own cross-entropy counts against the pixels' loss."""


def _pixel_and_slice_loss(pixel_loss):
    """``pixel_loss`` plus the empty-slice head's cross-entropy, registered as ``<name>_with_empty_head``."""

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        has_salt = ops.max(ops.reshape(y_true, (ops.shape(y_true)[0], -1)), axis=1)
        chance = ops.clip(ops.cast(y_pred[:, 0, 0, 1], "float32"), 1e-7, 1.0 - 1e-7)
        image_loss = ops.mean(ops.binary_crossentropy(has_salt, chance))
        return pixel_loss(y_true, y_pred[..., :1]) + EMPTY_HEAD_WEIGHT * image_loss

    loss.__name__ = loss.__qualname__ = f"{pixel_loss.__name__}_with_empty_head"
    return keras.saving.register_keras_serializable(package="salt_unet", name=loss.__name__)(loss)


EMPTY_HEAD_LOSSES = {pixel_loss: _pixel_and_slice_loss(pixel_loss)
                     for pixel_loss in (*STAGE_ONE_LOSSES.values(), lovasz_hinge_loss)}
"""Each of the series' losses -> its version for the empty-slice head, registered at import so a
checkpoint with the head reloads in a new process."""


def with_empty_head(pixel_loss):
    """The loss of a UNet with the empty-slice head: ``pixel_loss`` on channel 0, plus the head's cross-entropy.

    ``pixel_loss`` is one of the series' losses (stage 1's or the Lovász
    hinge; :data:`EMPTY_HEAD_LOSSES`). For (B, H, W, 1) masks and
    (B, H, W, 2) outputs the result is ``pixel_loss`` of the masks and
    channel 0, plus ``EMPTY_HEAD_WEIGHT`` times the binary cross-entropy
    between "the mask holds salt" and channel 1 (read at one pixel: it is the
    same at all). A loss that has the head already is returned as it is.
    """
    if pixel_loss in EMPTY_HEAD_LOSSES.values():
        return pixel_loss
    if pixel_loss not in EMPTY_HEAD_LOSSES:
        raise ValueError(f"the empty-slice head trains with one of the series' losses "
                         f"({', '.join(f.__name__ for f in EMPTY_HEAD_LOSSES)}), not {pixel_loss!r}")
    return EMPTY_HEAD_LOSSES[pixel_loss]


@keras.saving.register_keras_serializable(package="salt_unet")
def salt_accuracy(y_true, y_pred):
    """Pixel accuracy of channel 0 at threshold 0.5: (B, H, W, 1) masks, (B, H, W, 1 or 2) outputs -> (B,)."""
    right = ops.equal(ops.cast(y_true, "float32"), ops.cast(y_pred[..., :1] > 0.5, "float32"))
    return ops.mean(ops.cast(right, "float32"), axis=(1, 2, 3))


class TrainFeed(keras.utils.PyDataset):
    """Shuffled, randomly horizontally flipped training batches, the same after a resume.

    x, y: (N, H, W, 1) float32 images and masks. Each batch is (B, H, W, 1)
    twice; an image and its mask are flipped together (``flip=False``: never).
    The order and flips of epoch e depend only on (seed, e), so a run resumed
    at ``start_epoch`` sees the batches the uninterrupted run would have.
    ``steps_per_epoch`` shortens the epochs (the quick setting).
    ``shift_pixels`` > 0 (a lever) also moves each image and its mask by up
    to that many pixels up or down and left or right, reflecting at the edges.
    """

    def __init__(self, x, y, batch_size, seed=0, flip=True, steps_per_epoch=None, start_epoch=0,
                 shift_pixels=0):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.flip = x, y, batch_size, seed, flip
        self.steps_per_epoch, self.epoch, self.shift_pixels = steps_per_epoch, start_epoch, shift_pixels
        self._draw()

    def _draw(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(len(self.x))
        self.flips = rng.random(len(self.x)) < 0.5 if self.flip else np.zeros(len(self.x), bool)
        reach = self.shift_pixels
        self.shifts = rng.integers(-reach, reach + 1, size=(len(self.x), 2)) if reach else None

    def __len__(self):
        full = math.ceil(len(self.x) / self.batch_size)
        return min(full, self.steps_per_epoch) if self.steps_per_epoch else full

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        xb, yb = self.x[rows].copy(), self.y[rows].copy()
        flips = self.flips[rows]
        xb[flips] = xb[flips, :, ::-1]
        yb[flips] = yb[flips, :, ::-1]
        if self.shifts is not None:
            xb, yb = shift_batch(xb, self.shifts[rows]), shift_batch(yb, self.shifts[rows])
        return xb, yb

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()


def shift_batch(batch, shifts) -> np.ndarray:
    """Move each (H, W, C) item of ``batch`` by its (down, right) pixels in ``shifts``, reflecting at the edges."""
    reach = int(np.abs(shifts).max()) if len(shifts) else 0
    if not reach:
        return batch
    height, width = batch.shape[1:3]
    padded = np.pad(batch, [(0, 0), (reach, reach), (reach, reach), (0, 0)], mode="reflect")
    return np.stack([padded[k, reach - down:reach - down + height, reach - right:reach - right + width]
                     for k, (down, right) in enumerate(shifts)])


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights, told whether a resumed model already holds the averaged weights.

    From each epoch's end (validation included) to the next epoch's start the
    model holds Adam's average. A resume snapshot is saved at an epoch's end,
    so its model holds the average and its optimizer the raw weights: with
    ``resumed=True`` the first epoch's start swaps them back. Keras keeps
    that fact in ``_ema_weights_in_model``, which has no public setter;
    ``tests/test_training.py`` fails if a Keras release renames it.

    At the last epoch's end Keras copies the raw weights into the average
    (``_backend_finalize_ema_values``), and when ``fit`` ends it copies the
    average into the model; on JAX each copy shares one array between the
    two, and the next ``predict`` on a GPU frees it, so saving the model
    afterwards fails ("Array has been deleted"). Here each average gets an
    array of its own, both times.
    """

    def __init__(self, resumed=False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed

    def _backend_finalize_ema_values(self, optimizer):
        for weights, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            average.assign(ops.convert_to_numpy(weights))

    def on_train_end(self, logs=None):
        optimizer = self.model.optimizer
        for average in getattr(optimizer, "_model_variables_moving_average", ()):
            average.assign(ops.convert_to_numpy(average))


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save ``best.keras`` (+ ``best.json``: its epoch and val_loss) only when val_loss improves.

    Keras' ModelCheckpoint(save_best_only=True) writes in place; this one
    writes a temporary file and renames it, so a crash mid-save leaves the
    previous best intact. ``best`` is the val_loss to beat (inf for a new run).
    """

    def __init__(self, path, best=np.inf):
        super().__init__()
        self.path, self.best = Path(path), best

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get("val_loss")
        if current is None or not np.isfinite(current) or current >= self.best:
            return
        temporary = self.path.with_name(self.path.stem + ".partial.keras")
        self.model.save(temporary)
        _atomic_write_text(self.path.with_suffix(".json"), json.dumps({"val_loss": float(current), "epoch": epoch + 1}))
        os.replace(temporary, self.path)
        self.best = float(current)


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


class RunState(keras.callbacks.Callback):
    """After every epoch, write what a resumed run needs into ``run_dir/resume/`` and ``history.csv``.

    Keras' BackupAndRestore keeps the model, the optimizer and the epoch, but
    not the counters of ReduceLROnPlateau and EarlyStopping, the best
    checkpoint's val_loss, the time spent or the history: this callback saves
    them all (``state.json``) beside a snapshot of the model and optimizer,
    and on a resumed run's start puts the counters back. It reads the other
    callbacks it is given, so it must come after them in the list.
    """

    def __init__(self, run_dir, plateau, early, checkpoint, budget, state=None):
        super().__init__()
        self.run_dir, self.state = Path(run_dir), state or {}
        self.plateau, self.early, self.checkpoint, self.budget = plateau, early, checkpoint, budget
        self.history = list(self.state.get("history", []))

    def on_train_begin(self, logs=None):
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

    def on_epoch_end(self, epoch, logs=None):
        learning_rate = self._learning_rate()
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                             "lr_next": learning_rate, "train_seconds": round(self.budget.spent_s, 1)})
        self.save(epoch + 1, learning_rate, finished=False)

    def on_train_end(self, logs=None):
        self.save(self.history[-1]["epoch"] if self.history else 0, self._learning_rate(), finished=True)

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
        _atomic_write_text(resume_dir / "state.json", json.dumps(record, indent=1))
        _atomic_write_text(self.run_dir / "history.csv", pd.DataFrame(self.history).to_csv(index=False))
        for old in resume_dir.glob("epoch-*.keras"):
            if old != snapshot:
                old.unlink()


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
                                                min_lr=config.min_learning_rate, verbose=1)
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stop_patience,
                                          restore_best_weights=True, verbose=1)
    best_so_far = state.get("best_checkpoint", np.inf)
    if (run_dir / "best.json").is_file():
        best_so_far = min(best_so_far, json.loads((run_dir / "best.json").read_text())["val_loss"])
    checkpoint = AtomicBestCheckpoint(run_dir / "best.keras", best_so_far)
    budget = TimeBudget(config.time_budget_min, state.get("train_seconds", 0.0))
    averaged = [AveragedWeights(resumed=bool(state))] if config.ema_momentum else []
    return [*averaged, keras.callbacks.TerminateOnNaN(), plateau, early, checkpoint, budget, *extra,
            RunState(run_dir, plateau, early, checkpoint, budget, state)]


def load_run_state(run_dir) -> dict | None:
    """The saved state of an interrupted or finished run in ``run_dir``, or None for a new run."""
    path = Path(run_dir) / "resume" / "state.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is damaged ({error}); delete the folder {path.parent} to start "
                         f"training over (best.keras is kept).") from None


def _float_or_none(value):
    return None if value is None else float(value)


def _atomic_write_text(path, text):
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)


def save_model_atomically(model, path) -> Path:
    """Save a .keras model to a temporary file, then rename it into place.

    A crash during the save leaves the file that was there before intact.
    """
    path = Path(path)
    temporary = path.with_name(path.stem + ".partial.keras")
    model.save(temporary)
    os.replace(temporary, path)
    return path


def load_model_safely(path):
    """Load a .keras model with Keras safe mode on, so no code stored in the file runs.

    A file that carries code (a Lambda layer, say) is refused with a message
    that says why; a missing file names the notebook that writes it.
    """

    path = require_file(path, "03_train.ipynb")
    try:
        return keras.saving.load_model(path, safe_mode=True)  # the series' losses are registered with Keras
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ValueError(f"{path}: refused to load a model that carries code (a Lambda layer or "
                             f"similar). Only load files you trust, and only this series' own "
                             f"checkpoints here.") from None
        raise ValueError(f"{path}: not a loadable Keras model ({error})") from None


FINETUNE_DIR = "lovasz"
"""The sub-folder of a run that holds stage 2 (its own best.keras, history.csv and resume/)."""


def final_checkpoint(run_dir, config: TrainingConfig) -> Path:
    """The model a run ends with: stage 2's ``lovasz/best.keras``, or ``best.keras`` without stage 2."""
    run_dir = Path(run_dir)
    return run_dir / FINETUNE_DIR / "best.keras" if config.finetune_epochs else run_dir / "best.keras"


def train_unet(config: TrainingConfig, train: SaltData, val: SaltData, run_dir, verbose=2, extra_callbacks=()):
    """Train (or resume) the series' two stages into ``run_dir``; return :func:`training_history`.

    Stage 1 builds the UNet with :func:`new_unet` and trains it with
    :func:`bce_dice_loss` (or the config's ``stage_one_loss``) into
    ``run_dir`` (best.keras + best.json, history.csv, resume/): the cells of
    03_train do exactly this with the default config. Stage 2 is :func:`train_stage_two`. Each stage
    has its own callbacks and resume state (the two losses are not
    comparable), so a run cut off in either stage continues where it
    stopped, and a finished stage is not trained again. ``extra_callbacks``
    (measurements, say) run in both stages, after the time budget and before
    the run state.
    """
    run_dir = ensure_run_dir(run_dir)
    arrays = network_arrays(train, val)
    first = stage_one_config(config)
    train_stage(first, run_dir, lambda: new_unet(first), arrays, verbose, extra_callbacks)
    train_stage_two(config, run_dir, arrays, verbose, extra_callbacks)
    return training_history(run_dir)


def stage_one_config(config: TrainingConfig) -> TrainingConfig:
    """Stage 1's TrainingConfig: with a time budget and a stage 2, stage 1 gets ``1 - finetune_share`` of it."""
    if config.time_budget_min and config.finetune_epochs:
        return replace(config, time_budget_min=config.time_budget_min * (1 - config.finetune_share))
    return config


def train_stage_two(config: TrainingConfig, run_dir, arrays, verbose=2, extra_callbacks=()):
    """Stage 2 (when ``config.finetune_epochs`` > 0): stage 1's best.keras fine-tuned with the Lovász hinge.

    It trains into ``run_dir/lovasz/`` with :func:`finetune_config` and
    whatever is left of the time budget after stage 1. ``arrays`` comes from
    :func:`network_arrays`.
    """
    if not config.finetune_epochs:
        return
    run_dir = Path(run_dir)
    budget = config.time_budget_min
    spent_min = load_run_state(run_dir)["train_seconds"] / 60
    second = finetune_config(config, time_budget_min=max(budget - spent_min, 1e-3) if budget else None)
    train_stage(second, run_dir / FINETUNE_DIR, lambda: finetune_model(run_dir / "best.keras", second),
                arrays, verbose, extra_callbacks)


def finetune_config(config: TrainingConfig, time_budget_min=None) -> TrainingConfig:
    """Stage 2's TrainingConfig: ``finetune_epochs`` at ``finetune_learning_rate``, its own seed and budget."""
    return replace(config, epochs=config.finetune_epochs, learning_rate=config.finetune_learning_rate,
                   seed=config.seed + 1, time_budget_min=time_budget_min)


def finetune_model(checkpoint, config: TrainingConfig, loss=lovasz_hinge_loss):
    """Stage 2's starting model: stage 1's ``checkpoint`` compiled with ``loss`` and ``config``'s Adam.

    ``config`` is stage 2's own (from :func:`finetune_config`): its learning
    rate and averaged weights.
    """
    return compile_unet(load_model_safely(checkpoint), config.learning_rate, loss=loss,
                        ema_momentum=config.ema_momentum)


def network_arrays(train: SaltData, val: SaltData) -> dict:
    """What :func:`train_stage` fits on: padded train "x" and "y", and "validation" as (images, masks)."""
    return dict(x=to_network_input(train.images), y=to_network_target(train.masks),
                validation=(to_network_input(val.images), to_network_target(val.masks)))


def train_stage(config, stage_dir, new_model, arrays, verbose=2, extra_callbacks=(), flip=True):
    """Fit one stage into ``stage_dir``: a new model from ``new_model()``, or the stage's resume snapshot.

    ``arrays`` comes from :func:`network_arrays`; the seed, the feed and the
    callbacks are the series' own, so every stage trains the same way.
    ``flip=False`` feeds the batches unflipped (the benchmark's reference).
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
    feed = TrainFeed(arrays["x"], arrays["y"], config.batch_size, seed=config.seed, flip=flip,
                     steps_per_epoch=config.steps_per_epoch, start_epoch=initial_epoch,
                     shift_pixels=config.shift_pixels)
    model.fit(feed, validation_data=arrays["validation"], epochs=config.epochs, initial_epoch=initial_epoch,
              verbose=verbose, callbacks=make_callbacks(config, stage_dir, state, extra_callbacks))


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


# ---------------------------------------------------------------------------
# 4. Evaluation (04_evaluate): predictions, thresholds, post-processing, the submission
# ---------------------------------------------------------------------------


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


def keras_to_numpy(tensor) -> np.ndarray:
    """Any backend's tensor as a float32 numpy array."""

    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float32)


def score_report(truth, pred) -> dict:
    """Competition score, mean IoU, pixel IoU and mean Dice of bool (N, H, W) predictions."""
    return {"competition_score": competition_score(truth, pred),
            "mean_iou": float(iou_per_image(truth, pred).mean()),
            "pixel_iou": pixel_iou(truth, pred),
            "dice": float(dice_per_image(truth, pred).mean())}


PIXEL_THRESHOLDS = np.round(np.arange(0.2, 0.81, 0.05), 3)
"""The pixel thresholds that 04_evaluate and :func:`tune_postprocessing` sweep."""


def threshold_sweep(truth, probs, thresholds=PIXEL_THRESHOLDS) -> pd.DataFrame:
    """The competition score of ``probs > t`` for each threshold t: a DataFrame (threshold, score)."""
    scores = [competition_score(truth, probs > t) for t in thresholds]
    return pd.DataFrame({"threshold": np.round(thresholds, 3), "score": scores})


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


def error_overlay(image, truth, pred) -> np.ndarray:
    """An RGB picture of one prediction's hits and misses over its slice.

    image: (H, W) uint8; truth, pred: (H, W) bool. Returns (H, W, 3) float in
    [0, 1]: the slice in gray, true positives (salt found) tinted green, false
    positives (salt predicted where there is none) red, false negatives (salt
    missed) blue.
    """
    gray = np.repeat((np.asarray(image, np.float32) / 255.0)[..., None], 3, axis=2)
    colours = {(True, True): (0.1, 0.8, 0.1), (False, True): (0.9, 0.1, 0.1), (True, False): (0.1, 0.3, 0.95)}
    out = gray.copy()
    for (is_salt, predicted), colour in colours.items():
        where = (truth == is_salt) & (pred == predicted)
        out[where] = 0.45 * gray[where] + 0.55 * np.array(colour)
    return out


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


# ---------------------------------------------------------------------------
# 5. Plumbing no notebook teaches: reading the Kaggle files, zips, Kaggle credentials and download, the synthetic stand-in
# ---------------------------------------------------------------------------


def read_image_png(path) -> np.ndarray:
    """Read one seismic slice as (H, W) uint8.

    The Kaggle PNGs are RGB with three equal channels; grayscale PNGs are
    accepted too. Raises SaltDataError naming the file when it is missing,
    unreadable or not a grayscale picture.
    """
    array = _read_png(path)
    if array.ndim == 3:
        if array.shape[2] == 4:
            array = array[..., :3]
        if array.shape[2] != 3 or not (np.array_equal(array[..., 0], array[..., 1])
                                       and np.array_equal(array[..., 0], array[..., 2])):
            raise SaltDataError(f"{path}: expected a grayscale image (or RGB with three "
                                f"equal channels), got shape {array.shape} with differing channels")
        array = array[..., 0]
    if array.ndim != 2:
        raise SaltDataError(f"{path}: expected a 2-D image, got shape {array.shape}")
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    if array.dtype != np.uint8:
        raise SaltDataError(f"{path}: expected 8-bit pixels, got {array.dtype}")
    return array


def read_mask_png(path) -> np.ndarray:
    """Read one salt mask as (H, W) bool.

    Masks with salt are 16-bit PNGs holding 0 and 65535; empty masks are 8-bit
    zeros; 8-bit 0/255 masks are accepted too. Any other value is an error.
    """
    array = _read_png(path)
    if array.ndim == 3:
        array = array[..., 0]
    full = np.iinfo(array.dtype).max if array.dtype.kind == "u" else 1
    values = np.unique(array)
    if not np.isin(values, [0, full]).all():
        raise SaltDataError(f"{path}: a mask must be binary (0 and {full}), "
                            f"found values {values[:8].tolist()}")
    return array == full


def _read_png(path) -> np.ndarray:
    from skimage import io

    path = Path(path)
    if not path.is_file():
        raise SaltDataError(f"{path}: file not found")
    try:
        return np.asarray(io.imread(path))
    except Exception as error:  # imageio raises many kinds; all mean "unreadable"
        raise SaltDataError(f"{path}: not a readable PNG ({type(error).__name__}: {error})") from None


def _check_size(array, path, size=IMAGE_SIZE):
    if array.shape != (size, size):
        raise SaltDataError(f"{path}: expected {size}x{size} pixels, got {array.shape[0]}x{array.shape[1]}")


def read_ids_csv(path, columns) -> pd.DataFrame:
    """Read a Kaggle CSV (train.csv or depths.csv) with its ``id`` column as str.

    Raises SaltDataError for a missing file, a missing column or duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise SaltDataError(f"{path}: file not found")
    table = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SaltDataError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    duplicated = table["id"][table["id"].duplicated()]
    if len(duplicated):
        row = int(duplicated.index[0]) + 2  # +1 for the header, +1 for 1-indexing
        raise SaltDataError(f"{path}: duplicate id {duplicated.iloc[0]!r} (line {row})")
    return table


def load_tgs_folder(folder, limit=None) -> SaltData:
    """Load the labelled part of a Kaggle-layout TGS folder.

    Expects ``train.csv`` (id, rle_mask), ``train/images/<id>.png`` and
    ``train/masks/<id>.png``; ``depths.csv`` (id, z) is optional. When only
    ``train.zip`` is there it is extracted first. ``limit`` keeps the first
    ``limit`` ids (for quick runs). Returns ids in train.csv order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SaltDataError(f"{folder}: data folder not found")
    extract_inner_zips(folder)
    table = read_ids_csv(folder / "train.csv", ["id"])
    if limit is not None:
        table = table.iloc[:limit]
    depth_of = {}
    if (folder / "depths.csv").is_file():
        depths = read_ids_csv(folder / "depths.csv", ["id", "z"])
        depth_of = dict(zip(depths["id"], pd.to_numeric(depths["z"], errors="coerce")))
    n = len(table)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    masks = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), bool)
    for i, sample_id in enumerate(table["id"]):
        for kind, reader, out in (("images", read_image_png, images), ("masks", read_mask_png, masks)):
            path = folder / "train" / kind / f"{sample_id}.png"
            if not path.is_file():
                raise SaltDataError(f"{path}: train.csv lists id {sample_id!r} but its "
                                    f"{kind[:-1]} is missing")
            array = reader(path)
            _check_size(array, path)
            out[i] = array
    ids = table["id"].to_numpy(dtype=str)
    z = np.array([depth_of.get(i, np.nan) for i in ids], dtype=np.float64)
    return SaltData(ids, images, masks, z, source=f"the real TGS data (folder '{folder.name}')", folder=folder)


def pack_salt_data(data: SaltData, path) -> Path:
    """Write ``data`` (ids, images, masks, depths) into one compressed .npz file, for a machine without the folder.

    The file is a copy of the data set: keep it out of the repository
    (``.device/`` is ignored for that).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, ids=data.ids, images=data.images, masks=data.masks, depths=data.depths)
    return path


def load_packed_salt_data(path, limit=None) -> SaltData:
    """Read a file written by :func:`pack_salt_data` back into a SaltData (the first ``limit`` slices)."""
    path = Path(path)
    try:
        arrays = np.load(path)
        ids, images, masks, depths = (arrays[key] for key in ("ids", "images", "masks", "depths"))
    except (OSError, ValueError, KeyError) as error:
        raise SaltDataError(f"{path}: not a packed data file of pack_salt_data ({error})") from None
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or masks.shape != images.shape:
        raise SaltDataError(f"{path}: expected uint8 images and masks of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), "
                            f"got {images.dtype} {images.shape} and {masks.shape}")
    keep = slice(None) if limit is None else slice(limit)
    return SaltData(ids[keep].astype(str), images[keep], masks[keep].astype(bool), depths[keep],
                    source=f"packed labelled data ({len(ids[keep])} slices)")


def load_test_images(folder, ids):
    """Read test slices ``<folder>/test/images/<id>.png`` as (len(ids), 101, 101) uint8."""
    folder = Path(folder)
    out = np.empty((len(ids), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, sample_id in enumerate(ids):
        path = folder / "test" / "images" / f"{sample_id}.png"
        image = read_image_png(path)
        _check_size(image, path)
        out[i] = image
    return out


def list_test_ids(folder) -> list[str]:
    """The ids of ``<folder>/test/images/*.png``, sorted; empty when there is no test set."""
    test_dir = Path(folder) / "test" / "images"
    return sorted(p.stem for p in test_dir.glob("*.png")) if test_dir.is_dir() else []


def safe_extract_zip(zip_path, target) -> Path:
    """Extract ``zip_path`` into ``target``, refusing members that would land outside it.

    Returns ``target``. A member such as ``../x`` or ``/etc/x`` raises
    SaltDataError before anything is written.
    """
    zip_path, target = Path(zip_path), Path(target)
    root = target.resolve()
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as error:
        raise SaltDataError(f"{zip_path}: not a readable zip file ({error})") from None
    with archive:
        for name in archive.namelist():
            destination = (root / name).resolve()
            if destination != root and root not in destination.parents:
                raise SaltDataError(f"{zip_path}: member {name!r} would be extracted outside {target}; refusing the archive")
        target.mkdir(parents=True, exist_ok=True)
        archive.extractall(target)
    return target


def extract_inner_zips(folder) -> None:
    """Extract ``train.zip`` / ``test.zip`` in a Kaggle folder once, into ``train/`` / ``test/``."""
    folder = Path(folder)
    for part in ("train", "test"):
        inner = folder / f"{part}.zip"
        if inner.is_file() and not (folder / part / "images").is_dir():
            safe_extract_zip(inner, folder / part)


def prepare_competition_zip(zip_path, cache_dir) -> Path:
    """Turn the competition zip, as downloaded, into a Kaggle-layout folder.

    The outer zip holds train.csv, depths.csv, train.zip and test.zip; it is
    extracted once into ``cache_dir`` (a marker file records completion) and
    the inner zips after it. Returns the folder.
    """
    zip_path, cache_dir = Path(zip_path), Path(cache_dir)
    folder = cache_dir / zip_path.stem
    marker = folder / ".extracted"
    if not marker.is_file():
        safe_extract_zip(zip_path, folder)
        extract_inner_zips(folder)
        marker.write_text(str(zip_path))
    return folder


@dataclass
class DataSource:
    """Where the data comes from: ``kind`` is 'folder', 'zip', 'kaggle' or 'synthetic'."""

    kind: str
    path: Path | None
    reason: str

    def describe(self) -> str:
        if self.kind == "synthetic":
            return ("Data source: the SYNTHETIC stand-in (generated seismic-like slices, not real data). "
                    + self.reason + " " + REAL_DATA_HOWTO)
        what = {"folder": "a Kaggle-layout folder", "zip": "the competition zip", "kaggle": "a Kaggle download"}
        name = f" '{self.path.name}'" if self.path else ""
        return f"Data source: the real TGS data, {what[self.kind]}{name} ({self.reason})"


REAL_DATA_HOWTO = (
    "To use the real TGS data: create a Kaggle account, accept the rules of the "
    "'TGS Salt Identification Challenge' competition (a 403 error means they are not "
    "accepted yet), create an API token (Kaggle > Settings > API) and give it to this run as "
    "KAGGLE_API_TOKEN: a Colab secret of that name (the key icon; allow this notebook to read it) "
    "or an environment variable. The legacy kaggle.json or KAGGLE_USERNAME + KAGGLE_KEY work too. "
    "Or download the competition zip yourself and set SALT_DATA_DIR to it (or to its folder)."
)


KAGGLE_SECRETS = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")
"""The names kagglehub reads credentials under: the API token first, the legacy pair second."""


def kaggle_secrets_from_colab() -> None:
    """In Colab, copy the Kaggle secrets the notebook may read into this process's environment.

    kagglehub asks Colab only for ``KAGGLE_API_TOKEN`` and gives up when it is
    missing, so secrets named ``KAGGLE_USERNAME`` / ``KAGGLE_KEY`` would never
    be read. Each name in :data:`KAGGLE_SECRETS` that the environment lacks is
    looked up; a secret that is missing or not shared with the notebook is
    skipped. The values stay in this process: nothing is printed or written.
    """
    if not in_colab():
        return
    from google.colab import userdata

    for name in KAGGLE_SECRETS:
        if os.environ.get(name):
            continue
        try:
            value = userdata.get(name)
        except Exception:  # Colab raises when a secret is missing or the notebook may not read it
            continue
        if value and value.strip():
            os.environ[name] = value.strip()


def kaggle_credentials_present() -> bool:
    """Whether kagglehub can find Kaggle credentials (environment, kaggle.json or Colab secrets).

    Only says yes or no: the credentials themselves are never returned or printed.
    """
    kaggle_secrets_from_colab()
    try:
        from kagglehub.config import get_kaggle_credentials

        return get_kaggle_credentials() is not None
    except Exception:
        return False


def resolve_data_source(data_dir=None, download=True) -> DataSource:
    """Decide where the data comes from.

    In order: ``data_dir``; ``$SALT_DATA_DIR``; ``./data/tgs-salt``; a kagglehub
    download when Kaggle credentials exist; else the synthetic stand-in. The
    value ``"synthetic"`` picks the stand-in on purpose. A folder or zip that
    was named but does not exist is an error, not a silent fallback.
    """
    for value, reason in ((data_dir, "named by the data_dir argument: DATA_DIR in the notebooks"),
                          (os.environ.get("SALT_DATA_DIR") or None, "from SALT_DATA_DIR")):
        if value is None:
            continue
        if str(value).lower() == "synthetic":
            return DataSource("synthetic", None, f"Synthetic data was asked for ({reason}).")
        path = Path(value).expanduser()
        if path.is_file() and path.suffix == ".zip":
            return DataSource("zip", path, reason)
        if path.is_dir():
            return DataSource("folder", path, reason)
        raise SaltDataError(f"{path}: data folder not found ({reason}); point it at a Kaggle-layout "
                            f"folder (train.csv, train/images, train/masks) or the competition zip")
    default = Path("data") / "tgs-salt"
    if (default / "train.csv").is_file():
        return DataSource("folder", default, "found at the default place")
    if download and kaggle_credentials_present():
        return DataSource("kaggle", None, "Kaggle credentials found; downloading with kagglehub")
    return DataSource("synthetic", None, "No real data was found (no SALT_DATA_DIR, no ./data/tgs-salt, "
                      "no Kaggle credentials).")


def download_from_kaggle(cache_dir="data") -> Path:
    """Download the competition files with kagglehub and return a Kaggle-layout folder.

    A failure says what to do, by its cause: accept the rules (403), check
    the token (401), or, for anything else (no network, say), check the
    connection or use a zip downloaded by hand or the synthetic stand-in.
    """
    import kagglehub

    try:
        path = Path(kagglehub.competition_download(COMPETITION))
    except Exception as error:
        text = str(error)
        if "403" in text:
            hint = (" The competition rules have not been accepted: open "
                    f"https://www.kaggle.com/c/{COMPETITION}/rules and accept them.")
        elif "401" in text:
            hint = " Kaggle did not accept the credentials: create a new API token and set KAGGLE_API_TOKEN to it."
        else:
            hint = (" Check the internet connection and run again; or download the competition zip from "
                    f"https://www.kaggle.com/c/{COMPETITION}/data and set SALT_DATA_DIR to it; or set "
                    "SALT_DATA_DIR=synthetic to run on the synthetic stand-in.")
        raise SaltDataError(f"Kaggle download of {COMPETITION} failed: {type(error).__name__}.{hint}") from None
    zips = sorted(path.glob("*.zip"))
    if not (path / "train.csv").is_file() and len(zips) == 1:
        return prepare_competition_zip(zips[0], cache_dir)
    extract_inner_zips(path)
    return path


def ricker_wavelet(points, width) -> np.ndarray:
    """A Ricker ('Mexican hat') wavelet of ``points`` samples, peak 1, ``width`` samples wide."""
    t = np.arange(points) - (points - 1) / 2
    a = (t / width) ** 2
    return (1 - 2 * a) * np.exp(-a)


def _smooth_field(rng, shape, sigma):
    from skimage.filters import gaussian

    field = gaussian(rng.standard_normal(shape), sigma=sigma, mode="reflect")
    return (field - field.mean()) / (field.std() + 1e-8)


def synthetic_sample(rng, coverage_target) -> tuple[np.ndarray, np.ndarray]:
    """One seismic-like slice and its salt mask.

    Sediments are a random reflectivity series convolved with a Ricker wavelet,
    folded (smooth vertical shifts) and cut by one fault. Salt is a smooth
    irregular body (a thresholded smooth field that deepens downward) covering
    about ``coverage_target`` of the slice, with a dim chaotic interior and a
    bright boundary. Returns (101, 101) uint8 and (101, 101) bool.
    """
    n = IMAGE_SIZE
    big = n + 60
    reflectivity = rng.standard_normal(big) * (rng.random(big) < 0.35)
    trace = np.convolve(reflectivity, ricker_wavelet(21, rng.uniform(1.5, 3.5)), mode="same")
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float64)
    fold = (rng.uniform(3, 12) * np.sin(2 * np.pi * cols / rng.uniform(60, 250) + rng.uniform(0, 2 * np.pi))
            + rng.uniform(-0.25, 0.25) * cols)
    fault_x = rng.uniform(10, 90) + rng.uniform(-0.6, 0.6) * rows
    fold = fold + np.where(cols > fault_x, rng.uniform(-8, 8), 0.0)
    depth_index = np.clip(rows + fold + 30, 0, big - 1)
    sediments = np.interp(depth_index, np.arange(big), trace)
    sediments /= np.abs(sediments).max() + 1e-8

    mask = np.zeros((n, n), bool)
    if coverage_target >= 1.0:
        mask[:] = True
    elif coverage_target > 0:
        field = _smooth_field(rng, (n, n), sigma=rng.uniform(10, 22))
        field += rng.uniform(1.0, 4.0) * (rows / n - 0.5) * 2  # salt sits deeper
        mask = field > np.quantile(field, 1 - coverage_target)

    image = sediments * rng.uniform(0.7, 1.0)
    if mask.any():
        from skimage.filters import gaussian

        chaos = _smooth_field(rng, (n, n), sigma=rng.uniform(0.7, 2.0)) * rng.uniform(0.1, 0.45)
        image = np.where(mask, chaos, image)
        soft = gaussian(mask.astype(float), sigma=1.2)
        edge = np.hypot(*np.gradient(soft))
        image += rng.choice([-1, 1]) * rng.uniform(0.2, 1.2) * edge / (edge.max() + 1e-8)
    image += rng.normal(0, rng.uniform(0.05, 0.35), (n, n))
    pixels = 128 + image * rng.uniform(35, 60) + rng.uniform(-15, 15)
    return np.clip(pixels, 0, 255).astype(np.uint8), mask


def synthetic_coverages(rng, count) -> np.ndarray:
    """Coverage targets with the real set's mix: about 39% empty, some full, the rest spread from slivers up."""
    kind = rng.random(count)
    spread = rng.uniform(0.003, 0.99, count) ** 1.3
    return np.where(kind < 0.39, 0.0, np.where(kind < 0.42, 1.0, spread))


def make_synthetic_dataset(count=4000, seed=0) -> SaltData:
    """A deterministic synthetic TGS-shaped set: same ``count`` and ``seed``, same arrays.

    Returns SaltData with ids ``syn00000``..., uint8 (count, 101, 101) images,
    bool masks and depths drawn like the real ones (50 to 960 ft).
    """
    rng = np.random.default_rng(seed)
    targets = synthetic_coverages(rng, count)
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    masks = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), bool)
    for i, target in enumerate(targets):
        images[i], masks[i] = synthetic_sample(rng, target)
    ids = np.array([f"syn{i:05d}" for i in range(count)])
    depths = rng.uniform(50, 960, count).round()
    return SaltData(ids, images, masks, depths, source=f"synthetic stand-in ({count} slices, seed {seed})")
