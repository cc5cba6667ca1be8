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
