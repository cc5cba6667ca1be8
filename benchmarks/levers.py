"""Screen levers on the series' recipe cheaply: their speed on this CPU, their score at the epochs that speed buys.

A lever is a change to the series' recipe (a field of ``lever_models.LeverConfig``; the table
``LEVERS`` below). Judged fairly, a
lever that slows the training step must pay for the epochs it costs, so the screen has two parts:

1. ``speed``, on the project's 2-core CPU, alone: each lever's training images/s (batch 32,
   112x112, random data, after a warm-up), measured in turns so the machine's drift hits them
   alike, and its forward GFLOP (the convolutions counted from the model)::

       .venv/bin/python benchmarks/levers.py speed --out benchmarks/results/lever-speed-cpu.json

2. ``screen``, anywhere (a lent GPU is quickest): every lever trains the benchmark's first split
   (``compare_recipes.py --only series``, held-out slices untouched) for the epochs its CPU speed
   would fit in the benchmark's 60 minutes: ``--epochs-per-stage`` (28: what the series' stage 1
   reached there in three runs on the 2-core CPU) times its speed relative to the series, stage 2
   getting ``finetune_share`` of the total (``--stage-one-only``: stage 1 alone, the cheaper screen). All levers run at once, one process each::

       python benchmarks/levers.py screen --data-npz .device/tgs-labelled.npz \\
           --speed benchmarks/results/lever-speed-cpu.json --out /tmp/screen

   Without ``--speed`` every lever gets the same caps; ``--epochs-per-stage 100`` lets early
   stopping end both stages (a ceiling probe: what the recipe reaches with no time limit).

3. ``table``: each lever's held-out score against the series' on the same slices, with a paired
   95% bootstrap interval, and (given the data, or recorded) its scores on empty slices, slices
   under 10% salt and the rest, from the folder of ``<lever>.json`` the screen wrote::

       .venv/bin/python benchmarks/levers.py table benchmarks/results/screen-stage1-h200-jax --data-dir ../shared/tgs-salt

   Given one folder per split (each with its own series), it then pools them: each lever's gain
   on every split, and its paired gain over all their held-out slices together.
   ``--against RECORD`` (one folder) adds a column pairing every lever with another run on the
   same split, such as the series' own 60-minute CPU run.

The screen ranks levers; it does not replace the benchmark: the lever that wins it is confirmed
on three splits at 60 minutes of CPU time with ``compare_recipes.py --set``.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import helpers  # noqa: E402
import keras  # noqa: E402  (helpers has started it)
import lever_models  # noqa: E402
from recipes import conv_gflop_per_image, load_labelled, split_three_ways  # noqa: E402
from report import gain_over_reference, paired_gain_text, postprocessing_text  # noqa: E402

LEVERS = {
    "series": ({}, "today's recipe, as the notebooks run it"),
    "series-seed43": ({"seed": 43}, "today's recipe with another training seed: the screen's noise"),
    "residual": ({"block": "residual"}, "residual blocks (a shortcut around every block)"),
    "scse": ({"scse": True}, "spatial and channel squeeze-excitation after every expanding block"),
    "hypercolumn": ({"hypercolumn": True}, "the head sees every expanding level, upsampled: thin bodies"),
    "shift8": ({"shift_pixels": 8}, "translation augmentation, up to 8 pixels each way"),
    "focal-dice": ({"stage_one_loss": "focal_dice"}, "stage 1 focal + Dice: hard pixels count more"),
    "size-weighted": ({"stage_one_loss": "sized_bce_dice"}, "stage 1's cross-entropy weighs small bodies' salt up to 5x"),
    "lovasz-0.7": ({"finetune_share": 0.7}, "the Lovász stage gets 70% of the budget, not 50%"),
    "bf16": ({"precision": "mixed_bfloat16"}, "bfloat16 layers: quicker steps, more epochs"),
    "empty-head": ({"empty_head": True}, "a head that judges the whole slice, salt or none, for the pixels"),
    "wide": ({"base_filters": 32}, "twice the filters in every block: four times the convolutions"),
    "upscale2": ({"upscale": 2}, "every level at twice the resolution (the slice enlarged 2x): thin bodies keep their pixels"),
    "upscale2-narrow": ({"upscale": 2, "base_filters": 8}, "twice the resolution, half the filters: about the series' convolutions"),
}
"""Lever name -> (LeverConfig changes, what it is for). Records from before ``precision`` say
``mixed_precision: true`` for bf16 (:func:`lever_models.current_overrides` reads them)."""


MODEL_FIELDS = {"base_filters", "block", "scse", "hypercolumn", "precision", "empty_head", "upscale"}
"""The LeverConfig fields that change the training step's cost; other levers train at the series' speed."""


def lever_config(name, **changes):
    """The class setting's LeverConfig with the lever's changes."""
    return lever_models.lever_config(helpers.training_config("class", **changes), **LEVERS[name][0])


def set_flags(overrides):
    """``{"block": "residual"}`` -> ``["--set", "block=residual"]`` for compare_recipes.py."""
    flags = []
    for field, value in overrides.items():
        flags += ["--set", f"{field}={str(value).lower() if isinstance(value, bool) else value}"]
    return flags


def measure_speed(names, batches=12, rounds=3, batch_size=32):
    """Training images/s of each lever's UNet on random data, best of ``rounds`` turns; and its GFLOP."""
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, helpers.PADDED_SIZE, helpers.PADDED_SIZE, 1), dtype=np.float32)
    y = (rng.random(x.shape) < 0.3).astype(np.float32)
    models = {}
    for name in names:
        keras.utils.set_random_seed(0)
        models[name] = lever_models.new_lever_unet(lever_config(name))
        for _ in range(3):  # warm-up: tracing and the first allocations
            models[name].train_on_batch(x, y)
    speeds = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            begin = time.perf_counter()
            for _ in range(batches):
                models[name].train_on_batch(x, y)
            speeds[name].append(batches * batch_size / (time.perf_counter() - begin))
    rows = {}
    for name in names:
        gflop = conv_gflop_per_image(models[name], helpers.PADDED_SIZE)
        best = max(speeds[name])
        rows[name] = {"images_per_s": round(best, 1), "each_round": [round(v, 1) for v in speeds[name]],
                      "forward_gflop": round(gflop, 3), "train_gflop_per_s": round(3 * gflop * best, 1),
                      "params": models[name].count_params()}
    return rows


def screen_epochs(name, speed, epochs_per_stage, stage_one_only=False):
    """(stage 1, stage 2) epochs the lever gets: the series' epochs scaled by its relative speed and split by share.

    ``speed`` maps lever names to ``{"images_per_s": ...}``; a lever that changes none of
    :data:`MODEL_FIELDS` (another seed, a loss, augmentation) runs at the series' speed, since its
    step is the same model's; one that changes the model must be in ``speed`` (a ValueError says
    so). None gives every lever the series' epochs. ``stage_one_only``: stage 1's scaled epochs
    and no stage 2.
    """
    ratio = 1.0
    if speed and set(LEVERS[name][0]) & MODEL_FIELDS:
        if name not in speed:
            raise ValueError(f"{name} changes the model, but the speed record has no '{name}' row: "
                             f"measure it with `levers.py speed --levers series,{name}`")
        ratio = speed[name]["images_per_s"] / speed["series"]["images_per_s"]
    if stage_one_only:
        if "finetune_share" in LEVERS[name][0]:
            raise ValueError(f"{name} changes stage 2's share, which a stage-1 screen does not train")
        return max(1, round(epochs_per_stage * ratio)), 0
    share = lever_config(name).finetune_share
    total = 2 * epochs_per_stage * ratio
    return max(1, round(total * (1 - share))), max(1, round(total * share))


def screen(args):
    speed = json.loads(Path(args.speed).read_text())["levers"] if args.speed else None
    if speed is not None and "series" not in speed:
        raise SystemExit(f"{args.speed}: no 'series' row to measure the levers' speed against")
    for name in args.levers.split(","):
        try:
            screen_epochs(name, speed, args.epochs_per_stage, args.stage_one_only)
        except ValueError as error:
            raise SystemExit(f"--levers: {error}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for name in args.levers.split(","):
        first, second = screen_epochs(name, speed, args.epochs_per_stage, args.stage_one_only)
        overrides = dict(LEVERS[name][0], finetune_epochs=second)
        command = [sys.executable, str(ROOT / "benchmarks" / "compare_recipes.py"), "--only", "series",
                   "--seed", str(args.seed), "--budget-min", "600", "--epochs", str(first),
                   "--out", str(out / name), *set_flags(overrides)]
        if args.data_npz or args.data_dir:  # neither: compare_recipes finds the data as helpers does
            command += ["--data-npz", args.data_npz] if args.data_npz else ["--data-dir", args.data_dir]
        if args.limit:  # a smoke test
            command += ["--limit", str(args.limit), "--steps-per-epoch", "2"]
        print(f"{name}: {first} + {second} epochs", flush=True)
        log = open(out / f"{name}.log", "w")
        jobs[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    for name, (job, log) in jobs.items():
        job.wait()
        log.close()
        result = out / name / "series.json"
        if result.is_file():
            record = json.loads(result.read_text())
            record["lever"] = name
            (out / f"{name}.json").write_text(json.dumps(record))
            print(f"{name}: held-out {record['held_out_score']:.4f}", flush=True)
        else:
            print(f"{name}: failed (exit {job.returncode}); see {out / name}.log", flush=True)


SIZES = (("empty", lambda c: c == 0), ("under 10% salt", lambda c: (c > 0) & (c < 0.1)),
         ("10% salt or more", lambda c: c >= 0.1))
"""The held-out slices by how much salt they hold: where the issue says the points go."""


def held_out_coverage(result, data=None):
    """Each held-out slice's salt fraction: recorded in the result, or cut again from ``data`` with its seed."""
    if "held_out_coverage" in result:
        return np.asarray(result["held_out_coverage"])
    if data is None:
        return None
    held_out = split_three_ways(data, result["seed"])[2]
    if len(held_out) != result["held_out"]:
        raise SystemExit(f"the data gives {len(held_out)} held-out slices, the result {result['held_out']}: "
                         "pass the data it was measured on")
    return helpers.coverage(data.masks[held_out])


def load_records(folder, series=None):
    """``{lever: record}`` from a folder of ``<lever>.json``, with the series' record (its own, or ``series``)."""
    folder = Path(folder)
    results = {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))
               if path.stem in LEVERS}
    if series is not None:
        if "series" in results:
            raise SystemExit(f"{folder} holds a series.json and --series names another: pass one of them")
        results["series"] = json.loads(Path(series).read_text())
    if "series" not in results:
        raise SystemExit(f"{folder}: no series.json to pair the levers with (or name one with --series)")
    return results


def read_other_run(path, base, folder):
    """The record at ``path`` (an ``--against`` run), checked to hold the same held-out slices as ``base``."""
    other = json.loads(Path(path).read_text())
    if other.get("seed") != base.get("seed") or other.get("held_out") != base.get("held_out"):
        raise SystemExit(f"--against {path}: split --seed {other.get('seed')} ({other.get('held_out')} held-out "
                         f"slices), but {folder} holds --seed {base.get('seed')} ({base.get('held_out')}): "
                         "pair runs on the same split")
    if "held_out_coverage" in other and "held_out_coverage" in base \
            and other["held_out_coverage"] != base["held_out_coverage"]:
        raise SystemExit(f"--against {path}: the same --seed, but other held-out slices than {folder}'s "
                         "(was it cut from other data?)")
    return other


def table(folder, data=None, series=None, against=None):
    """The screen's table: one row per lever, paired against the series on the same held-out slices.

    The series' record is ``folder/series.json``, or the file ``series`` names (a baseline
    measured on its own, for levers run one at a time with ``compare_recipes.py --set``).

    With the held-out slices' coverage (recorded, or from ``data``), it also scores the empty
    slices, those with under 10% salt and the rest, each lever's mean on each.

    ``against`` names one more run's record on the same split (a 60-minute CPU run, say): a last
    column pairs every lever, the series too, with it.
    """
    results = load_records(folder, series)
    base = results["series"]
    other = read_other_run(against, base, folder) if against else None
    coverage = held_out_coverage(base, data)
    by_size = coverage is not None
    lines = ["| lever | what it changes | epochs | held-out score | paired gain over the series (95% interval) "
             + "".join(f"| {label} ({int(pick(coverage).sum())}) " for label, pick in SIZES if by_size)
             + "| validation score | post-processing |"
             + (f" paired gain over the --against run, {other['held_out_score']:.4f} (95% interval) |" if other else ""),
             "|" + "---|" * (7 + 3 * by_size + bool(other))]
    for name in LEVERS:
        if name not in results:
            continue
        r = results[name]
        gain = gain_over_reference(r, base) or "–"  # the series' own row: none
        per_image = np.asarray(r["held_out_per_image"])
        sizes = "".join(f"| {per_image[pick(coverage)].mean():.3f} " for _, pick in SIZES if by_size)
        over_other = f" {gain_over_reference(r, other)} |" if other else ""
        lines.append(f"| {name} | {LEVERS[name][1]} | {' + '.join(map(str, r['stage_epochs']))} "
                     f"| {r['held_out_score']:.4f} | {gain} {sizes}| {r['val_score']:.4f} "
                     f"| {postprocessing_text(r['postprocessing'])} |{over_other}")
    return "\n".join(lines) + "\n"


def pooled_table(folders, data=None, series=None):
    """Levers screened on several splits (one folder each): every held-out slice of all of them, paired.

    One row per lever present in every folder: its gain over the series on each split, then its
    mean and its paired 95% bootstrap interval over all the splits' held-out slices together,
    and its mean by salt size over them. ``series`` (optional) names each folder's series record,
    in the folders' order, as :func:`table`'s ``series`` does for one.
    """
    splits = [load_records(folder, each) for folder, each in zip(folders, series or [None] * len(folders))]
    names = [name for name in LEVERS if all(name in records for records in splits)]
    coverage = [held_out_coverage(records["series"], data) for records in splits]
    by_size = all(c is not None for c in coverage)
    coverage = np.concatenate(coverage) if by_size else None
    lines = [f"| lever | gain on each split ({', '.join(str(r['series']['seed']) for r in splits)}) "
             f"| held-out score, {len(splits)} splits | paired gain, {len(splits)} splits (95% interval) "
             + "".join(f"| {label} ({int(pick(coverage).sum())}) " for label, pick in SIZES if by_size) + "|",
             "|" + "---|" * (4 + 3 * by_size)]
    base = np.concatenate([records["series"]["held_out_per_image"] for records in splits])
    for name in names:
        scores = np.concatenate([records[name]["held_out_per_image"] for records in splits])
        each, gain = "–", "–"
        if name != "series":
            each = ", ".join(f"{records[name]['held_out_score'] - records['series']['held_out_score']:+.4f}"
                             for records in splits)
            gain = paired_gain_text(scores.mean() - base.mean(), scores, base)
        sizes = "".join(f"| {scores[pick(coverage)].mean():.3f} " for _, pick in SIZES if by_size)
        lines.append(f"| {name} | {each} | {scores.mean():.4f} | {gain} {sizes}|")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed", help="CPU images/s and GFLOP of every lever (run it alone)")
    speed.add_argument("--levers", default=",".join(name for name in LEVERS if name != "series-seed43"),
                       help="the same model's levers (shift8, focal-dice, lovasz-0.7) show the probe's noise")
    speed.add_argument("--batches", type=int, default=12)
    speed.add_argument("--rounds", type=int, default=3)
    speed.add_argument("--out", required=True)
    run = commands.add_parser("screen", help="train every lever on one split, at once")
    run.add_argument("--data-dir", default=None)
    run.add_argument("--data-npz", default=None)
    run.add_argument("--speed", default=None, help="the JSON `speed` wrote (without it: the same epochs for all)")
    run.add_argument("--epochs-per-stage", type=int, default=28)
    run.add_argument("--seed", type=int, default=2026)
    run.add_argument("--levers", default=",".join(LEVERS))
    run.add_argument("--stage-one-only", action="store_true",
                     help="stage 1 alone (its share of the epochs), no Lovász stage: the cheaper screen")
    run.add_argument("--limit", type=int, default=None, help="a smoke test: N slices, epochs of 2 batches")
    run.add_argument("--out", required=True)
    show = commands.add_parser("table", help="the screen's paired table")
    show.add_argument("folder", nargs="+", help="one folder per split; with several, a pooled table follows")
    show.add_argument("--data-dir", default=None, help="the data measured on, for scores by salt size")
    show.add_argument("--data-npz", default=None)
    show.add_argument("--series", action="append", default=None,
                      help="the series record to pair with (default: FOLDER/series.json); one per folder, in order")
    show.add_argument("--against", default=None,
                      help="one more run's record on the same split (one folder only): a last column pairs each lever with it")
    args = parser.parse_args(argv)

    if args.command in ("speed", "screen"):
        unknown = set(args.levers.split(",")) - set(LEVERS)
        if unknown:
            parser.error(f"unknown lever(s) {sorted(unknown)}; choose from {sorted(LEVERS)}")
    if args.command == "speed":
        names = args.levers.split(",")
        rows = measure_speed(names, args.batches, args.rounds)
        record = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  "backend": keras.backend.backend(), "keras": keras.__version__,
                  "batch": 32, "input": helpers.PADDED_SIZE, "levers": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2))
        for name, row in rows.items():
            print(f"{name:>14}: {row['images_per_s']:6.1f} images/s ({row['images_per_s'] / rows['series']['images_per_s'] if 'series' in rows else 1:.2f}x)  "
                  f"{row['forward_gflop']:.3f} GFLOP  {row['train_gflop_per_s']:.0f} GFLOP/s  {row['params']:,} weights")
    elif args.command == "screen":
        if "series" not in args.levers.split(","):
            parser.error("the screen pairs every lever with 'series': keep it in --levers")
        screen(args)
        print(table(args.out))
    else:
        data = load_labelled(args) if args.data_npz or args.data_dir else None
        if args.series and len(args.series) != len(args.folder):
            parser.error(f"{len(args.series)} --series for {len(args.folder)} folder(s): give one per folder, or none")
        if args.against and len(args.folder) != 1:
            parser.error("--against pairs with one split's run: give one folder")
        series = args.series or [None] * len(args.folder)
        for folder, each in zip(args.folder, series):
            print(table(folder, data, each, args.against))
        if len(args.folder) > 1:
            print(pooled_table(args.folder, data, args.series))


if __name__ == "__main__":
    main()
