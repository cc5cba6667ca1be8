"""Keeping a run folder safe: whole files only, damage named, one training at a time, the right data.

``helpers`` uses these and re-exports them, so the notebooks only import ``helpers``; no
notebook teaches them. What each guards against:

- a crash or a full disk in the middle of a save (:func:`save_model_atomically`): the file that
  was there before stays whole, and no half-written file is left behind;
- a file cut off by a full disk or a cut Drive sync (:func:`damaged`): named, with the way on;
- two trainings writing one folder at once, from two browser tabs or two ``make run``
  (:class:`RunFolderLock`): the second refuses, and a lock left by a killed run expires;
- a model scored on other data than it was trained on (:func:`check_trained_on`);
- Google Drive's trash (:func:`snapshot_every_min`): every resume snapshot replaced on Drive
  goes to its trash and counts against the quota for 30 days, so on Drive a snapshot is taken
  every few minutes of training rather than after every epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

from data_sources import SaltDataError, colab_drive
from kernel_logs import process_alive

DRIVE_SNAPSHOT_EVERY_MIN = 10.0
"""On Google Drive, the resume snapshot is replaced at most this often (minutes of training)."""


def atomic_write_text(path, text):
    """Write ``text`` to a temporary file beside ``path``, then rename it into place: never half a file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)


def save_model_atomically(model, path, before_rename=None) -> Path:
    """Save a .keras model to a temporary file, then rename it into place (``before_rename()`` runs between).

    A crash during the save leaves the file that was there before intact. A
    full disk leaves no half-written file behind: the error names the file
    and about how much room it needs.
    """
    path = Path(path)
    temporary = path.with_name(path.stem + ".partial.keras")
    try:
        model.save(temporary)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        needed = path.stat().st_size if path.is_file() else model.count_params() * 16  # weights, Adam's 2 moments, average
        raise OSError(f"{path} could not be written ({error.strerror or error}): it needs about "
                      f"{needed / 1e6:.0f} MB free in {path.parent}. Free some space and run again; training "
                      f"resumes from the last epoch saved.") from None
    if before_rename:
        before_rename()
    os.replace(temporary, path)
    return path


def damaged(path, why) -> str:
    """The message for a damaged run file: what is wrong, and the way on (a resume file: start the stage over)."""
    path = Path(path)
    if path.parent.name == "resume":
        return f"{path} is damaged ({why}); delete the folder {path.parent} to start training over (best.keras is kept)."
    return f"{path} is damaged ({why}); run 03_train.ipynb again into a new SALT_RUN_DIR, or restore it from a copy."


def check_trained_on(run_dir, data, record=False) -> None:
    """Refuse a run folder whose model was trained on other data than ``data`` (with ``record``: note ``data``).

    03_train records what it trains on in ``trained_on.json`` (the data's
    source, its number of slices, a fingerprint of their ids); 03 run again
    and 04 compare it with the data loaded now, so a model trained on the
    synthetic stand-in is never scored on real slices unnoticed. A folder
    from before that record gets a warning.
    """
    path = Path(run_dir) / "trained_on.json"
    fingerprint = hashlib.sha256("\n".join(sorted(map(str, data.ids))).encode()).hexdigest()[:16]
    now = {"source": data.source, "slices": len(data), "ids_sha256": fingerprint}
    if path.is_file():
        then = json.loads(path.read_text())
        if (then["slices"], then["ids_sha256"]) != (now["slices"], now["ids_sha256"]):
            raise SaltDataError(f"{run_dir} holds a model trained on {then['source']} ({then['slices']} slices), but "
                                f"this run loaded {data.source} ({len(data)} slices). Set SALT_RUN_DIR to a new folder "
                                f"for this data (or delete {run_dir} to train it again).")
        return
    if (Path(run_dir) / "best.keras").is_file():
        print(f"Warning: {run_dir} holds a model that does not record its data (it was trained before the series "
              f"did): make sure it was trained on {data.source}.")
    if record:
        atomic_write_text(path, json.dumps(now))


def on_google_drive(path) -> bool:
    """Whether ``path`` lies on Colab's Google Drive mount (``SALT_COLAB_DRIVE``, /content/drive by default)."""
    return Path(path).resolve().is_relative_to(colab_drive().resolve())


def snapshot_every_min(run_dir) -> float:
    """How many minutes of training between two resume snapshots in ``run_dir``: 0 (every epoch) off Drive.

    ``SALT_SNAPSHOT_EVERY_MIN`` overrides it. On Drive every replaced
    snapshot (about 31 MB) stays in the trash for 30 days, so a snapshot
    after each of a GPU run's ~90 epochs would leave about 3 GB there; every
    10 minutes leaves a few, and a cut-off run retrains at most 10 minutes.
    """
    value = os.environ.get("SALT_SNAPSHOT_EVERY_MIN")
    if value is not None:
        try:
            minutes = float(value)
        except ValueError:
            minutes = -1.0
        if minutes < 0:
            raise ValueError(f"SALT_SNAPSHOT_EVERY_MIN={value!r} must be a number of minutes, 0 or more")
        return minutes
    return DRIVE_SNAPSHOT_EVERY_MIN if on_google_drive(run_dir) else 0.0


class RunFolderLock:
    """One training at a time in a folder: ``training.lock``, kept fresh by a heartbeat while it trains.

    :meth:`acquire` creates the lock file (it fails if the file exists) with
    who holds it: the machine, the process and a token of its own. The
    holder calls :meth:`beat` after every epoch, which rewrites the file with
    how long a silence means it is gone (``stale_after_s``: three of its
    longest epochs, 5 minutes at least; 15 minutes before its first epoch
    ends, which may include compiling). Another run finding the file refuses
    with a message, unless the lock is stale: its holder is a process of this
    machine that has ended, or it has been silent longer than it said (a run
    killed on another machine, such as a recycled Colab runtime writing to the
    same Drive, or a kernel stopped mid-epoch). The same process may take its
    own lock again (a cell run again after an error). :meth:`release` deletes
    the file if it is still ours.
    """

    NAME = "training.lock"
    FIRST_EPOCH_S = 900.0

    def __init__(self, folder):
        self.path = Path(folder) / self.NAME
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}

    def holder(self) -> tuple[dict | None, float]:
        """The lock's record (None if unreadable: being written) and the seconds since its last beat."""
        age = time.time() - self.path.stat().st_mtime
        try:
            return json.loads(self.path.read_text()), age
        except (OSError, ValueError):
            return None, age

    def stale_because(self, held, age) -> str | None:
        """Why a lock found in the folder may be taken over, or None if it is alive."""
        if held and held.get("host") == self.owner["host"]:
            if held.get("pid") == self.owner["pid"]:
                return "it is this process's own"
            if not process_alive(held.get("pid")):
                return f"its process {held.get('pid')} has ended"
        if age > float((held or {}).get("stale_after_s", self.FIRST_EPOCH_S)):
            return f"it has been silent for {age / 60:.0f} min"
        return None

    def acquire(self):
        for _ in range(3):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    held, age = self.holder()
                except FileNotFoundError:  # released in between
                    continue
                why = self.stale_because(held, age)
                if why is None:
                    who = f"process {held['pid']} on {held['host']}, " if held else ""
                    wait = float((held or {}).get("stale_after_s", self.FIRST_EPOCH_S))
                    raise RuntimeError(
                        f"{self.path.parent} is being trained by another run ({who}last heard of {age:.0f} s ago). "
                        f"Two runs in one folder would overwrite each other's checkpoints: wait for it to finish or "
                        f"stop it, or set SALT_RUN_DIR to another folder. If that run was killed, its lock "
                        f"({self.path}) expires {max(wait - age, 0) / 60:.0f} min from now.") from None
                if why != "it is this process's own":
                    print(f"Taking over {self.path.name} from an earlier run: {why}.")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(handle, "w") as file:
                json.dump(self._record(self.FIRST_EPOCH_S), file)
            return self
        raise RuntimeError(f"{self.path}: could not take the lock (another run keeps taking it)")

    def _record(self, stale_after_s):
        return {**self.owner, "beat": time.strftime("%Y-%m-%d %H:%M:%S"), "stale_after_s": round(stale_after_s)}

    def beat(self, longest_epoch_s):
        """Say this run is alive, and that a silence of three ``longest_epoch_s`` (5 min at least) means it is not."""
        try:
            self.path.write_text(json.dumps(self._record(max(300.0, 3 * longest_epoch_s))))
        except OSError:
            pass

    def release(self):
        try:
            held, _ = self.holder()
        except FileNotFoundError:
            return
        if held and held.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
