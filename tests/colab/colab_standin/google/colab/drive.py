"""``drive.mount`` as Colab's behaves for the series: Drive appears at the mount point and outlives the runtime."""

import os
from pathlib import Path


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    point = Path(mountpoint)
    if point.is_symlink() and not force_remount:
        print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, "
              f"call drive.mount(\"{mountpoint}\", force_remount=True).")
        return
    drive = Path(os.environ["COLAB_STANDIN_DRIVE"])
    (drive / "MyDrive").mkdir(parents=True, exist_ok=True)
    point.parent.mkdir(parents=True, exist_ok=True)
    if point.is_symlink():
        point.unlink()
    point.symlink_to(drive, target_is_directory=True)
    print(f"Mounted at {mountpoint}")
