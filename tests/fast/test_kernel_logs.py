"""A kernel killed by a CUDA or cuDNN crash leaves its message only in its native log: the next kernel shows it."""

import subprocess
import sys

import kernel_logs


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_log_of_a_dead_kernel_is_shown_once_and_a_live_or_empty_one_is_not(tmp_path):
    crashed = tmp_path / f"salt-unet-native-{dead_pid()}.log"
    crashed.write_text("I0000 start-up line\n" + "\n".join(f"line {k}" for k in range(30))
                       + "\nF0000 Check failed: CUDNN_STATUS_INTERNAL_ERROR\n")
    empty = tmp_path / f"salt-unet-native-{dead_pid()}.log"
    empty.write_text("")
    mine = tmp_path / f"salt-unet-native-{__import__('os').getpid()}.log"
    mine.write_text("this kernel's own lines")
    report = kernel_logs.report_a_crashed_kernel(tmp_path)
    assert "died" in report and report.rstrip().endswith("F0000 Check failed: CUDNN_STATUS_INTERNAL_ERROR")
    assert "line 16" in report and "line 15" not in report  # its last 15 lines
    assert not crashed.exists() and not empty.exists() and mine.exists()
    assert kernel_logs.report_a_crashed_kernel(tmp_path) == ""  # shown once
