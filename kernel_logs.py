"""What compiled libraries print below Python, kept out of the notebooks' outputs (imported by ``helpers``).

TensorFlow writes start-up lines (absl, oneDNN, CUDA probes) straight to the process's stderr,
where ``TF_CPP_MIN_LOG_LEVEL`` does not reach all of them; a notebook would show them in its
cells. ``helpers`` silences them while it imports Keras and, in a Jupyter kernel, sends the rest
to a log file. No notebook teaches this: it is plumbing, kept beside ``helpers.py``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


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
"""In a notebook kernel, the file that compiled libraries' log lines go to (see :func:`divert_native_logs_in_a_notebook`)."""


def divert_native_logs_in_a_notebook():
    """In a Jupyter kernel, send what compiled libraries write to the process's stderr to a file.

    TensorFlow logs through absl, below Python, and ``TF_CPP_MIN_LOG_LEVEL``
    does not stop those lines: a notebook would show them in its cells'
    outputs (start-up notes, CUDA probes, data-pipeline notes). Python's own
    warnings and errors do not pass there in a kernel, so they still show.
    The file is :data:`NATIVE_LOG`, in the temporary folder; a kernel that
    exits normally deletes it. A CUDA or cuDNN crash kills the kernel before
    Python can say anything, so its message is only in that file: the next
    kernel shows its last lines (:func:`report_a_crashed_kernel`). Outside a
    kernel nothing changes.
    """
    global NATIVE_LOG
    if "ipykernel" not in sys.modules or NATIVE_LOG is not None:
        return
    import atexit
    import tempfile

    folder = Path(tempfile.gettempdir())
    report = report_a_crashed_kernel(folder)
    if report:
        print(report)
    NATIVE_LOG = folder / f"salt-unet-native-{os.getpid()}.log"
    handle = os.open(NATIVE_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(handle, 2)
    os.close(handle)
    atexit.register(NATIVE_LOG.unlink, missing_ok=True)


def report_a_crashed_kernel(folder, lines=15) -> str:
    """The last ``lines`` of the native log a kernel of the series left in ``folder`` when it died, or "".

    A kernel that exits normally deletes its log; a log whose process has
    ended is a kernel that crashed or was killed. Each such log is reported
    (when it holds anything) and deleted, so it is shown once.
    """
    reports = []
    for log in sorted(Path(folder).glob("salt-unet-native-*.log"), key=lambda p: p.stat().st_mtime):
        pid = log.stem.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
        log.unlink(missing_ok=True)
        if tail:
            reports.append(f"An earlier kernel of this series (process {pid}) died; the last lines its compiled "
                           f"libraries wrote (a CUDA or cuDNN error shows here):\n" + "\n".join(tail))
    return "\n\n".join(reports)


def process_alive(pid) -> bool:
    """Whether a process ``pid`` runs on this machine (someone else's counts); False for a bad pid."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
