"""Peak memory of writing submission.csv: bounded by the chunk, not by the number of test slices.

    .venv/bin/python benchmarks/submission_memory.py --out benchmarks/results/submission-memory-cpu.json

04_evaluate writes one prediction for each of the competition's 18,000 test slices;
``helpers.write_submission`` reads, predicts and writes ``--chunk`` slices at a time, so its
memory must not grow with their number (all 18,000 at once would hold 18000 * 101 * 101 float32
= 700 MB of probabilities alone). Each count of slices runs in a process of its own: a small
UNet (the series' layers, 2 base filters: the memory is the data's, not the weights'), a test
folder of PNGs stored as the real test set stores them, one chunk predicted first (so the
backend's own buffers are allocated), then the whole submission. The record gives each count's
growth of the peak resident memory over that start, and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

COUNTS = (1500, 18000)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(count, chunk) -> dict:
    """Write a submission for ``count`` test slices in this process; its peak memory's growth and time."""
    import helpers
    from support import make_test_folder  # the test set's PNGs, as the tests write them

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ids = make_test_folder(folder, count)
        model = helpers.build_unet(base_filters=2)
        helpers.Postprocessing().predict(model, helpers.load_test_images(folder, ids[:chunk]))  # warm-up
        start = peak_mb()
        begin = time.monotonic()
        rows = helpers.write_submission(model, folder, folder / "submission.csv", chunk=chunk)
        seconds = time.monotonic() - begin
        helpers.check_submission(folder / "submission.csv", ids)
    return {"slices": count, "rows": rows, "chunk": chunk, "peak_growth_mb": round(peak_mb() - start, 1),
            "seconds": round(seconds, 1), "backend": helpers.keras.backend.backend(), "keras": helpers.keras.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk", type=int, default=1000, help="slices per chunk (write_submission's default)")
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)), help="numbers of test slices, comma-separated")
    parser.add_argument("--out", default=None, help="the record (a .json file); without it, print only")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # one count, in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.chunk)))
        return
    runs = []
    for count in map(int, args.counts.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(count), "--chunk", str(args.chunk)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    record = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "backend": runs[0]["backend"], "keras": runs[0]["keras"], "runs": runs}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
