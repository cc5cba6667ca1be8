"""One training at a time in a run folder, and a run on Google Drive that leaves little in Drive's trash.

Two runs started on one folder (03 open in two tabs, or a second ``make run``) would both train
and overwrite each other's files: the second refuses. A lock left by a run that was killed does
not block the next one: on this machine its process has ended; from another machine (two Colab
runtimes on one Drive) its heartbeat goes stale.
"""

import json
import os
import subprocess
import sys
import time

import pytest

import helpers
import run_files
from support import ROOT


def small_fit(run_dir, epochs=2, **config):
    config = helpers.TrainingConfig(setting="test", epochs=epochs, base_filters=2, batch_size=4, **config)
    data = helpers.make_synthetic_dataset(8, seed=0)
    x, y = helpers.to_network_input(data.images), helpers.to_network_target(data.masks)
    model = helpers.compile_unet(helpers.build_unet(base_filters=2, depth=2), ema_momentum=config.ema_momentum)
    model.fit(x, y, validation_data=(x, y), epochs=epochs, batch_size=4, verbose=0,
              callbacks=helpers.make_callbacks(config, run_dir))


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
import run_files
lock = run_files.RunFolderLock({folder!r}).acquire()
print("held", flush=True)
while True:
    lock.beat(longest_epoch_s=1.0)
    time.sleep(0.1)
"""


def test_a_second_run_in_the_folder_refuses_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), folder=str(tmp_path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"is being trained by another run \(process {holder.pid} on .*"
                                               r"set SALT_RUN_DIR to another folder"):
            small_fit(tmp_path)
        assert not (tmp_path / "history.csv").exists()  # the second run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    small_fit(tmp_path)  # its process has ended: the lock is taken over
    assert f"its process {holder.pid} has ended" in capsys.readouterr().out
    assert not (tmp_path / "training.lock").exists()  # released when training ended
    assert list(helpers.training_history(tmp_path)["epoch"]) == [1, 2]


def write_lock(folder, age_s, host="another-colab-runtime"):
    path = folder / run_files.RunFolderLock.NAME
    path.write_text(json.dumps({"host": host, "pid": 4242, "token": "theirs", "stale_after_s": 300}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_lock_from_another_machine_counts_until_it_has_been_silent_longer_than_it_said(tmp_path, capsys):
    write_lock(tmp_path, age_s=200)  # it said: silent for 5 minutes (three epochs of 100 s) means gone
    with pytest.raises(RuntimeError, match=r"process 4242 on another-colab-runtime, last heard of 200 s ago.*"
                                           r"expires 2 min from now"):
        run_files.RunFolderLock(tmp_path).acquire()
    write_lock(tmp_path, age_s=400)
    lock = run_files.RunFolderLock(tmp_path).acquire()
    assert "it has been silent for 7 min" in capsys.readouterr().out
    assert json.loads(lock.path.read_text())["token"] == lock.owner["token"]
    lock.beat(longest_epoch_s=200.0)  # a slow machine: three of its epochs
    assert json.loads(lock.path.read_text())["stale_after_s"] == 600
    lock.release()
    assert not lock.path.exists()


def test_the_same_process_takes_its_own_lock_again_and_never_releases_anothers(tmp_path):
    first = run_files.RunFolderLock(tmp_path).acquire()  # a cell that raised and never released it
    second = run_files.RunFolderLock(tmp_path).acquire()
    first.release()  # not first's any more: kept
    assert json.loads(second.path.read_text())["token"] == second.owner["token"]
    second.release()
    assert not second.path.exists()


def test_on_drive_a_snapshot_is_taken_every_few_minutes_not_every_epoch(tmp_path, monkeypatch):
    drive = tmp_path / "drive"
    monkeypatch.setenv("SALT_COLAB_DRIVE", str(drive))
    monkeypatch.delenv("SALT_SNAPSHOT_EVERY_MIN", raising=False)
    assert run_files.snapshot_every_min(drive / "MyDrive" / "salt-unet" / "runs" / "full") == 10
    assert run_files.snapshot_every_min(tmp_path / "runs" / "full") == 0
    saved = []
    real = helpers.save_model_atomically
    monkeypatch.setattr(helpers, "save_model_atomically",
                        lambda model, path, *a: saved.append(path.name) or real(model, path, *a))
    run_dir = drive / "MyDrive" / "run"
    run_dir.mkdir(parents=True)
    small_fit(run_dir, epochs=3)
    resume = [name for name in saved if name.startswith("epoch-")]
    assert resume == ["epoch-0003.keras"]  # the last epoch only: well within the first 10 minutes
    state = helpers.load_run_state(run_dir)
    assert state["finished"] and state["epochs_done"] == 3 and (run_dir / "resume" / state["snapshot"]).is_file()
    saved.clear()
    monkeypatch.setenv("SALT_SNAPSHOT_EVERY_MIN", "0")
    small_fit(tmp_path / "every-epoch", epochs=3)
    assert [name for name in saved if name.startswith("epoch-")] == ["epoch-0001.keras", "epoch-0002.keras",
                                                                     "epoch-0003.keras"]


def test_a_wrong_snapshot_interval_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("SALT_SNAPSHOT_EVERY_MIN", "often")
    with pytest.raises(ValueError, match="SALT_SNAPSHOT_EVERY_MIN='often' must be a number of minutes"):
        run_files.snapshot_every_min(tmp_path)
