"""The series in Colab, simulated: each notebook in a runtime of its own, the run folder on "Drive".

Colab itself cannot run here. What it does to the series is imitated instead:

- each notebook runs in its own kernel, started in its own empty working folder (Colab's
  ``/content``), with ``tests/colab/colab_standin`` on its path, so ``google.colab`` is imported at
  start and ``drive.mount`` / ``userdata.get`` behave as Colab's do (see its README);
- the setup cell clones the project from a local ``file://`` repository of this working tree
  (``SALT_REPO``), as it clones GitHub in Colab;
- "Google Drive" is one folder that outlives every runtime.

This runs in ``make test-colab`` (with Colab's package versions); ``make test`` skips it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from support import COLAB_STANDIN as STANDIN, ROOT

pytestmark = pytest.mark.skipif(os.environ.get("SALT_COLAB_SIMULATION") != "1",
                                reason="the Colab simulation runs in `make test-colab` (its own venv)")


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A local repository of this working tree, a Drive folder, and a way to run a notebook in a new runtime."""
    base = tmp_path_factory.mktemp("colab")
    origin = base / "origin" / "salt-unet"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (origin / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, origin / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + step, cwd=origin, check=True)
    drive = base / "drive"
    runtimes = []

    def start(notebook, secrets=None, content=None, **env):
        """Start ``notebook`` in a new runtime; return (process, executed notebook's path).

        The runtime starts in an empty working folder, or in ``content`` (a restarted runtime).
        """
        if content is None:
            content = base / f"runtime-{len(runtimes)}" / "content"
            content.mkdir(parents=True)
        runtimes.append(content)
        source = notebook if isinstance(notebook, Path) else ROOT / notebook
        out = content.parent / f"executed-{len(runtimes)}.ipynb"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SALT_") and k != "PYTHONPATH"}
        environ.update(PYTHONPATH=str(STANDIN), SALT_REPO=f"file://{origin}", SALT_COLAB_DRIVE=str(content / "drive"),
                       COLAB_STANDIN_DRIVE=str(drive), COLAB_STANDIN_SECRETS=json.dumps(secrets or {}),
                       COLAB_STANDIN_DOWNLOADS=str(content.parent / "downloads"),
                       SALT_DATA_DIR="synthetic", SALT_SETTING="quick", PYTHONUNBUFFERED="1")
        environ.update(env)
        environ = {k: v for k, v in environ.items() if v is not None}  # None: unset
        process = subprocess.Popen([sys.executable, "-m", "papermill", "--no-progress-bar", "--kernel", "python3",
                                    "--cwd", str(content), str(source), str(out)],
                                   env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        return process, out

    def run(notebook, secrets=None, expect_failure=False, content=None, **env):
        for attempt in range(2):
            process, out = start(notebook, secrets, content, **env)
            log = process.communicate(timeout=900)[0].decode(errors="replace")
            # a kernel can fail to start when another process takes one of the ports it was given
            # between their choice and its bind; that is the machine, not the notebook: start once more
            if "Kernel died before replying to kernel_info" not in log:
                break
        if expect_failure:
            assert process.returncode != 0, log[-3000:]
        else:
            assert process.returncode == 0, log[-3000:]
        return out, log

    return {"run": run, "start": start, "drive": drive, "base": base}


def text_of(executed):
    """Everything a notebook printed, as one string."""
    notebook = nbformat.read(executed, as_version=4)
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") if "text" in output else
                         "\n".join([output.get("evalue", "")] + output.get("traceback", [])))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def run_folder(colab):
    return colab["drive"] / "MyDrive" / "salt-unet" / "runs" / "quick"


def test_setup_cell_runs_twice_and_after_a_restart(colab, tmp_path):
    """The setup cell twice in one kernel, then again in a new kernel in the same /content (a restart)."""
    first = nbformat.read(ROOT / "01_explore_data.ipynb", as_version=4)
    setup = first.cells[2]
    assert "helpers.check_environment()" in setup.source
    twice = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup.source) for _ in range(2)],
                                     metadata=first.metadata)
    path = tmp_path / "setup_twice.ipynb"
    nbformat.write(twice, path)
    out, _ = colab["run"](path)
    content = out.parent / "content"  # this runtime's /content
    assert (content / "salt-unet" / "helpers.py").is_file()
    # Restart runtime: a new kernel starts in the same /content, where the clone already is;
    # a second clone would fail (the repository named now does not exist)
    colab["run"](path, content=content, SALT_REPO="file:///nowhere/a-second-clone-would-fail")


def test_a_failed_clone_shows_gits_own_words(colab, tmp_path):
    """Colab hides a command's terminal output: the setup cell prints it when the command fails."""
    first = nbformat.read(ROOT / "01_explore_data.ipynb", as_version=4)
    path = tmp_path / "setup_only.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(first.cells[2].source)],
                                            metadata=first.metadata), path)
    out, log = colab["run"](path, expect_failure=True, SALT_REPO="file:///nowhere/no-such-repository")
    printed = text_of(out)
    assert "fatal:" in printed and "no-such-repository" in printed, printed[-2000:]
    assert "git clone --depth=1 file:///nowhere/no-such-repository salt-unet` failed (exit 128)" in printed


def test_four_runtimes_share_the_run_folder_on_drive_and_training_resumes(colab):
    out1, _ = colab["run"]("01_explore_data.ipynb")
    assert (run_folder(colab) / "split.csv").is_file()
    assert "Mounted at" in text_of(out1)
    out2, _ = colab["run"]("02_build_unet.ipynb")
    assert "made it again" not in text_of(out2)  # it read notebook 1's split from Drive

    # 03 is cut off mid-run (the runtime disconnects) after its first finished epoch (on Drive a
    # snapshot is taken every 10 minutes; here after every epoch, to cut it off between two) ...
    process, _ = colab["start"]("03_train.ipynb", SALT_SNAPSHOT_EVERY_MIN="0")
    state = run_folder(colab) / "resume" / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "03 ended before it could be cut off"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = json.loads(state.read_text())
    assert not done["finished"]

    # ... and run again in a new runtime, with nothing on its disk: it resumes from Drive
    out3, _ = colab["run"]("03_train.ipynb", SALT_SNAPSHOT_EVERY_MIN="0")
    assert f"Resuming from the end of epoch {done['epochs_done']}" in text_of(out3)
    history = (run_folder(colab) / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # header + the quick setting's three stage-1 epochs, none twice

    out4, _ = colab["run"]("04_evaluate.ipynb")
    metrics = json.loads((run_folder(colab) / "metrics.json").read_text())
    assert 0.0 <= metrics["competition_score"] <= 1.0
    assert "No test images" in text_of(out4)
    downloaded = sorted(p.name for p in (out4.parent / "downloads").iterdir())
    assert downloaded == ["best.keras", "metrics.json"], downloaded  # stage 2's model; no submission here


def test_without_drive_a_notebook_says_what_to_run_and_where_it_looked(colab):
    out, log = colab["run"]("04_evaluate.ipynb", expect_failure=True, SALT_USE_DRIVE="0")
    assert "run 03_train.ipynb first" in log
    assert "runs/quick" in log


def test_colab_secrets_reach_kagglehub(colab):
    """Secrets named KAGGLE_USERNAME / KAGGLE_KEY (the legacy pair) are found, and never printed."""
    key = "c0lab5ecretk3y0123456789abcdef"
    path = colab["base"] / "secrets.ipynb"
    first = nbformat.read(ROOT / "01_explore_data.ipynb", as_version=4)
    check = nbformat.v4.new_code_cell("print('kaggle source:', helpers.resolve_data_source().kind)")
    setup = nbformat.v4.new_code_cell(first.cells[2].source)
    nbformat.write(nbformat.v4.new_notebook(cells=[setup, check], metadata=first.metadata), path)
    out, log = colab["run"](path, secrets={"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": key}, SALT_DATA_DIR="")
    assert "kaggle source: kaggle" in text_of(out)
    assert key not in log and key not in out.read_text()


def test_the_competition_is_downloaded_once_across_four_runtimes(colab, tmp_path):
    """kagglehub caches a competition inside one runtime only: the first notebook packs it onto Drive."""
    calls = tmp_path / "kaggle-calls.jsonl"
    env = dict(SALT_DATA_DIR=None, SALT_RUN_DIR="runs/quick-kaggle", COLAB_STANDIN_KAGGLE_LOG=str(calls))  # on Drive
    secrets = {"KAGGLE_API_TOKEN": "KGAT_0123456789abcdef0123456789abcdef"}
    outputs = [colab["run"](notebook, secrets=secrets, **env)[0] for notebook in
               ("01_explore_data.ipynb", "02_build_unet.ipynb", "03_train.ipynb", "04_evaluate.ipynb")]
    assert len(calls.read_text().splitlines()) == 1, calls.read_text()
    assert "Packed a copy for the other notebooks on Drive" in text_of(outputs[0])
    for later in outputs[1:]:
        assert "the packed copy 'tgs-salt.npz' (downloaded from Kaggle once by an earlier notebook" in text_of(later)
    assert "wrote and checked submission.csv in the run folder: 40 rows" in text_of(outputs[3])  # test images packed too
    assert "submission.csv" in {p.name for p in (outputs[3].parent / "downloads").iterdir()}
    colab["run"]("01_explore_data.ipynb", secrets=secrets, **env)  # a rerun downloads nothing
    assert len(calls.read_text().splitlines()) == 1
