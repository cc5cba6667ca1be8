"""Where the slices come from: the plumbing no notebook teaches, re-exported by ``helpers``.

The notebooks call these through ``helpers`` (``helpers.load_salt_data`` picks the source and
reads it); they live here so that ``helpers.py`` holds what the notebooks teach. In order:
the labelled set's container (:class:`SaltData`), reading the Kaggle files (PNGs, CSVs), the
test slices, zips, the packed one-file copy of a data set, choosing a source, Kaggle
credentials and the download, and the synthetic stand-in. numpy, pandas and scikit-image
only: no Keras.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SIZE = 101
"""Height and width of every TGS slice, in pixels."""

COMPETITION = "tgs-salt-identification-challenge"


class SaltDataError(ValueError):
    """Bad input data: the message names the file, row or value at fault."""


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


def in_colab() -> bool:
    """Whether this kernel is a Google Colab runtime (Colab imports ``google.colab`` at start)."""
    return "google.colab" in sys.modules


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


def pack_salt_data(data: SaltData, path, test_folder=None) -> Path:
    """Write ``data`` (ids, images, masks, depths) into one compressed .npz file, for a machine without the folder.

    With ``test_folder`` (a Kaggle-layout folder), its ``test/images`` go in
    too (``test_ids``, ``test_images``), so a submission can be made from the
    file alone. The file is a copy of the data set: keep it out of the
    repository (``.device/`` is ignored for that). It is written under a
    temporary name and renamed when whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    test_ids = list_test_ids(test_folder) if test_folder else []
    test = dict(test_ids=np.array(test_ids, dtype=str),
                test_images=load_test_images(test_folder, test_ids)) if test_ids else {}
    temporary = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(temporary, ids=data.ids, images=data.images, masks=data.masks, depths=data.depths, **test)
    os.replace(temporary, path)
    return path


def load_packed_salt_data(path, limit=None) -> SaltData:
    """Read a file written by :func:`pack_salt_data` back into a SaltData (the first ``limit`` slices).

    Its ``folder`` is the file itself, where :func:`list_test_ids` and
    :func:`load_test_images` find the test images when it holds them.
    """
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
                    source=f"packed labelled data ({len(ids[keep])} slices)", folder=path)


def load_test_images(folder, ids):
    """Read test slices ``<folder>/test/images/<id>.png`` (or a packed file's) as (len(ids), 101, 101) uint8."""
    folder = Path(folder)
    if folder.suffix == ".npz":
        where, images = _packed_test_images(folder.resolve(), folder.stat().st_mtime_ns)
        return images[[where[sample_id] for sample_id in ids]]
    out = np.empty((len(ids), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, sample_id in enumerate(ids):
        path = folder / "test" / "images" / f"{sample_id}.png"
        image = read_image_png(path)
        _check_size(image, path)
        out[i] = image
    return out


@functools.lru_cache(maxsize=1)
def _packed_test_images(path, mtime_ns):
    """A packed file's test images, decompressed once (a submission reads them 1,000 at a time)."""
    with np.load(path) as arrays:
        return {sample_id: k for k, sample_id in enumerate(arrays["test_ids"].astype(str))}, arrays["test_images"]


def list_test_ids(folder) -> list[str]:
    """The ids of ``<folder>/test/images/*.png`` (or a packed file's), sorted; empty when there is no test set."""
    folder = Path(folder)
    if folder.suffix == ".npz":
        with np.load(folder) as arrays:
            return sorted(arrays["test_ids"].astype(str)) if "test_ids" in arrays.files else []
    test_dir = folder / "test" / "images"
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
    """Where the data comes from: ``kind`` is 'folder', 'zip', 'packed', 'kaggle' or 'synthetic'."""

    kind: str
    path: Path | None
    reason: str

    def describe(self) -> str:
        if self.kind == "synthetic":
            return ("Data source: the SYNTHETIC stand-in (generated seismic-like slices, not real data). "
                    + self.reason + " " + REAL_DATA_HOWTO)
        what = {"folder": "a Kaggle-layout folder", "zip": "the competition zip", "kaggle": "a Kaggle download",
                "packed": "the packed copy"}
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


def colab_drive() -> Path:
    """Where Colab mounts Google Drive: ``SALT_COLAB_DRIVE`` (a test points it elsewhere), else /content/drive."""
    return Path(os.environ.get("SALT_COLAB_DRIVE", "/content/drive"))


def drive_data_copy() -> Path | None:
    """Where a Colab runtime keeps its packed copy of the downloaded data on Drive; None off Colab or Drive.

    Colab gives each notebook a runtime of its own, and kagglehub's cache
    lives in the runtime, so without this every notebook would download the
    whole competition again. The first notebook that downloads packs the
    labelled slices and the test images here (:func:`pack_salt_data`, about
    200 MB); the others read it.
    """
    my_drive = colab_drive() / "MyDrive"
    if not (in_colab() and my_drive.is_dir()):
        return None
    return my_drive / "salt-unet" / "data" / "tgs-salt.npz"


def resolve_data_source(data_dir=None, download=True) -> DataSource:
    """Decide where the data comes from.

    In order: ``data_dir``; ``$SALT_DATA_DIR``; ``./data/tgs-salt``; in
    Colab, the copy an earlier notebook left on Drive (:func:`drive_data_copy`);
    a kagglehub download when Kaggle credentials exist; else the synthetic stand-in. The
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
        if path.is_file() and path.suffix == ".npz":
            return DataSource("packed", path, reason)
        if path.is_dir():
            return DataSource("folder", path, reason)
        raise SaltDataError(f"{path}: data folder not found ({reason}); point it at a Kaggle-layout "
                            f"folder (train.csv, train/images, train/masks), the competition zip or a "
                            f"file of `make pack`")
    default = Path("data") / "tgs-salt"
    if (default / "train.csv").is_file():
        return DataSource("folder", default, "found at the default place")
    copy = drive_data_copy()
    if copy is not None and copy.is_file():
        return DataSource("packed", copy, "downloaded from Kaggle once by an earlier notebook and kept on Drive")
    if download and kaggle_credentials_present():
        return DataSource("kaggle", None, "Kaggle credentials found; downloading with kagglehub")
    return DataSource("synthetic", None, "No real data was found (no SALT_DATA_DIR, no ./data/tgs-salt, "
                      "no Kaggle credentials).")


def download_from_kaggle(cache_dir="data") -> Path:
    """Download the competition files with kagglehub and return a Kaggle-layout folder.

    A failure keeps kagglehub's own words and adds what to do, by its cause
    (:func:`kaggle_failure_hint`).
    """
    import kagglehub

    try:
        path = Path(kagglehub.competition_download(COMPETITION))
    except Exception as error:
        said = redact_secrets(" ".join(str(error).split()))[:600] or "no message"
        raise SaltDataError(f"Kaggle download of {COMPETITION} failed: {type(error).__name__}: {said}\n"
                            f"{kaggle_failure_hint(error)}") from None
    zips = sorted(path.glob("*.zip"))
    if not (path / "train.csv").is_file() and len(zips) == 1:
        return prepare_competition_zip(zips[0], cache_dir)
    extract_inner_zips(path)
    return path


def redact_secrets(text) -> str:
    """``text`` with anything that may be a credential replaced by ``***``.

    The Kaggle keys in the environment, a ``key=``/``token=``/``Authorization:``
    value, and any run of 24 or more letters and digits (an API token's shape).
    """
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_KEY"):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"(?i)\b(key|token|api_token|password|authorization)([=:]\s*)(bearer\s+)?[^\s&,;'\"]+",
                  r"\1\2***", text)
    return re.sub(r"[A-Za-z0-9_\-]{24,}", "***", text)


def kaggle_failure_hint(error) -> str:
    """What to do about a failed Kaggle download, from the error's HTTP status or kind."""
    text = str(error)
    manual = (f"download the competition zip from https://www.kaggle.com/c/{COMPETITION}/data and set "
              "SALT_DATA_DIR to it, or set SALT_DATA_DIR=synthetic to run on the synthetic stand-in")
    if isinstance(error, OSError) and error.errno == 28:
        return f"The disk is full: free about 1 GB where kagglehub caches (KAGGLEHUB_CACHE), or {manual}."
    for code, hint in (("403", f"The competition rules have not been accepted: open "
                               f"https://www.kaggle.com/c/{COMPETITION}/rules, accept them and run again."),
                       ("401", "Kaggle did not accept the credentials: create a new API token and set "
                               "KAGGLE_API_TOKEN to it."),
                       ("404", f"Kaggle does not find the competition {COMPETITION} for this account."),
                       ("429", "Kaggle is limiting requests: wait a few minutes and run again.")):
        if code in text:
            return hint
    if any(f" {code}" in text or text.startswith(code) for code in ("500", "502", "503", "504")):
        return f"Kaggle's servers failed: run again in a while, or {manual}."
    return f"Check the internet connection and run again; or {manual}."


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
