"""The training step on this CPU, side by side: Keras backends, precision, batch size, threads.

Every row trains the series' UNet (``helpers.new_unet`` under the row's dtype policy, Adam with
the averaged weights, cross-entropy + Dice) on random 112x112 batches, in a process of its own
(a Keras backend is chosen once per process), one row after another in one run, so they share
the machine's state. A row's images/s is the best of ``--rounds`` turns of ``--batches``
batches, after a warm-up of three (tracing, compiling, the first allocations). Its training
GFLOP/s is three forward passes' convolutions per image (``recipes.conv_gflop_per_image``)
times images/s, shown as a share of the machine's measured peak for its precision: the best
of a square matrix multiply (2048 x 2048, float32 and bfloat16) on each backend.

Run it alone on the machine (it measures time), with the environment that has all three
backends (``make .venv-backends/.installed``)::

    .venv-backends/bin/python benchmarks/speed_table.py --out benchmarks/results/speed-table-cpu.json

``--table RECORD`` prints the table of a record again without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROWS = [
    # (backend, precision, batch size, threads: "default" | "intra2-inter1" | "jit")
    ("tensorflow", "float32", 32, "default"),
    ("tensorflow", "mixed_bfloat16", 32, "default"),
    ("tensorflow", "float32", 16, "default"),
    ("tensorflow", "float32", 64, "default"),
    ("tensorflow", "mixed_bfloat16", 16, "default"),
    ("tensorflow", "mixed_bfloat16", 64, "default"),
    ("tensorflow", "float32", 32, "intra2-inter1"),
    ("tensorflow", "float32", 32, "jit"),
    ("jax", "float32", 32, "default"),
    ("jax", "mixed_bfloat16", 32, "default"),
    ("torch", "float32", 32, "default"),
    ("torch", "mixed_bfloat16", 32, "default"),
]
"""The rows of the table, measured in this order."""

THREADS = {
    "default": "each backend's own thread pools",
    "intra2-inter1": "TensorFlow: 2 threads inside an operation, 1 operation at a time",
    "jit": "TensorFlow: the step compiled with XLA (jit_compile=True)",
}

MATMUL_SIZE = 2048


def matmul_gflop_per_s(backend, dtype, size=MATMUL_SIZE, repeats=10):
    """Best GFLOP/s of a size x size matrix product in ``dtype`` on ``backend`` (this process's own)."""
    import numpy as np
    rng = np.random.default_rng(0)
    a_np, b_np = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    if backend == "tensorflow":
        import tensorflow as tf
        a, b = tf.cast(a_np, dtype), tf.cast(b_np, dtype)
        run = lambda: tf.linalg.matmul(a, b).numpy()  # noqa: E731
    elif backend == "jax":
        import jax
        import jax.numpy as jnp
        a, b = jnp.asarray(a_np, dtype), jnp.asarray(b_np, dtype)
        product = jax.jit(jnp.matmul)
        run = lambda: product(a, b).block_until_ready()  # noqa: E731
    else:
        import torch
        a = torch.from_numpy(a_np).to(getattr(torch, dtype))
        b = torch.from_numpy(b_np).to(getattr(torch, dtype))
        run = lambda: torch.mm(a, b)  # noqa: E731
    run()
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - begin)
    return 2 * size ** 3 / best / 1e9


def probe(row, batches, rounds):
    """One row, in this process: images/s of the series' training step, and the backend's matmul peaks."""
    backend, precision, batch_size, threads = row
    if backend == "tensorflow" and threads == "intra2-inter1":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np

    import helpers
    import keras
    from recipes import conv_gflop_per_image

    assert keras.config.backend() == backend, (keras.config.backend(), backend)
    config = helpers.training_config("class", precision=precision)
    keras.utils.set_random_seed(0)
    model = helpers.new_unet(config)
    if threads == "jit":
        model.jit_compile = True  # on a CPU, TensorFlow's "auto" is False (on a GPU, True)
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, helpers.PADDED_SIZE, helpers.PADDED_SIZE, 1), dtype=np.float32)
    y = (rng.random(x.shape) < 0.3).astype(np.float32)
    for _ in range(3):
        model.train_on_batch(x, y)
    turns = []
    for _ in range(rounds):
        begin = time.perf_counter()
        for _ in range(batches):
            model.train_on_batch(x, y)
        turns.append(batches * batch_size / (time.perf_counter() - begin))
    gflop = conv_gflop_per_image(model, helpers.PADDED_SIZE)
    return {"images_per_s": round(max(turns), 1), "each_round": [round(v, 1) for v in turns],
            "forward_gflop": round(gflop, 3), "train_gflop_per_s": round(3 * gflop * max(turns), 1),
            "matmul_gflop_per_s": {dtype: round(matmul_gflop_per_s(backend, dtype), 1)
                                   for dtype in ("float32", "bfloat16")},
            "versions": {"keras": keras.__version__, backend: backend_version(backend)}}


def backend_version(backend):
    module = __import__(backend)
    return module.__version__


def cpu_flags():
    """The CPU's model name and whether it has AVX-512 bfloat16 / AMX instructions (Linux only)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor(), "avx512_bf16": None, "amx_bf16": None}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"model": model, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "cores": os.cpu_count()}


def measure(args):
    rows = []
    for row in ROWS:
        env = dict(os.environ, KERAS_BACKEND=row[0], TF_CPP_MIN_LOG_LEVEL="2")
        command = [sys.executable, __file__, "--probe", json.dumps(row), "--batches", str(args.batches),
                   "--rounds", str(args.rounds)]
        begin = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"row {row} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(backend=row[0], precision=row[1], batch_size=row[2], threads=row[3],
                      wall_s=round(time.perf_counter() - begin, 1))
        rows.append(result)
        print(f"{row}: {result['images_per_s']} images/s", flush=True)
    peaks = {dtype: max(r["matmul_gflop_per_s"][dtype] for r in rows) for dtype in ("float32", "bfloat16")}
    record = {"what": "the series' training step on this CPU, one process per row, one run",
              "command": ".venv-backends/bin/python benchmarks/speed_table.py " + " ".join(args.argv),
              "cpu": cpu_flags(), "batches": args.batches, "rounds": args.rounds,
              "matmul_size": MATMUL_SIZE, "peak_gflop_per_s": peaks, "threads": THREADS, "rows": rows,
              "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(table(record))


def table(record):
    """The record as a markdown table: one row per measurement, shares of the matching peak."""
    peaks = record["peak_gflop_per_s"]
    series = next(r for r in record["rows"] if (r["backend"], r["precision"], r["batch_size"], r["threads"])
                  == ("tensorflow", "float32", 32, "default"))
    lines = [f"Matrix-multiply peak ({record['matmul_size']}²): float32 {peaks['float32']:.0f} GFLOP/s, "
             f"bfloat16 {peaks['bfloat16']:.0f} GFLOP/s; {record['cpu']['model']}.", "",
             "| backend | precision | batch | threads | images/s | vs. TensorFlow float32 32 | training GFLOP/s "
             "| share of the peak |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in record["rows"]:
        peak = peaks["bfloat16" if "bfloat16" in r["precision"] else "float32"]
        lines.append(f"| {r['backend']} | {r['precision']} | {r['batch_size']} | {r['threads']} | "
                     f"{r['images_per_s']:.1f} | {r['images_per_s'] / series['images_per_s']:.2f}x | "
                     f"{r['train_gflop_per_s']:.0f} | {r['train_gflop_per_s'] / peak:.0%} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="where the record goes (json)")
    parser.add_argument("--batches", type=int, default=8, help="batches per timed turn")
    parser.add_argument("--rounds", type=int, default=3, help="timed turns per row (the best counts)")
    parser.add_argument("--table", help="print the table of this record and stop")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.probe:
        print(json.dumps(probe(tuple(json.loads(args.probe)), args.batches, args.rounds)))
    elif args.table:
        print(table(json.loads(Path(args.table).read_text())))
    elif args.out:
        measure(args)
    else:
        parser.error("give --out (measure) or --table (print a record)")


if __name__ == "__main__":
    main()
