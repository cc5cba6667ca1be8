"""A ceiling probe: average the final models of several runs trained on the same split.

    .venv/bin/python benchmarks/average_runs.py --data-dir ../shared/tgs-salt \
        --runs runs/series-2026-60min runs/bf16-2026-60min runs/head-2026-60min

Averaging the two stages of one run does not pay (``average_stages.py``): stage 2 starts from
stage 1's checkpoint and errs where it does. Models trained apart (another training seed, another
lever) may err apart. Each ``--runs`` folder is a ``compare_recipes.py`` folder whose series was
trained on the same split (``--seed``) and data; its model is its final checkpoint (stage 2's
best). Each run alone, and every combination of two or more runs (the mean of their
probabilities, with and without flip TTA), gets its post-processing chosen on the validation
slices as 04 does and is scored once on the held-out slices. Each run alone must repeat the score
in its ``series.json``. A combination is paired slice by slice with the first run alone and with
the mean of its members' scores alone (what averaging adds to the models it averages).

n runs cost n training budgets, so a combination is not a recipe that fits the benchmark's
budget: it says how far averaging can go. The record goes to ``--out`` with each held-out slice's
score; ``--table RECORD`` prints a record's table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import (check_repeats, final_series_model, load_three_ways, read_series_run,  # noqa: E402
                     score_average, with_and_without_flips)
from report import gain_over_reference, paired_gain_text, postprocessing_text  # noqa: E402

import helpers  # noqa: E402
import keras  # noqa: E402  (helpers has started it)


def read_runs(folders):
    """``{run name: series.json}`` for the ``--runs`` folders; one split and data for all, or a SystemExit naming the odd one."""
    records = {}
    for folder in map(Path, folders):
        series = read_series_run(folder)
        if folder.name in records:
            raise SystemExit(f"{folder}: two runs are named {folder.name!r}; give each run its own folder name")
        records[folder.name] = dict(series, folder=str(folder))
    first_name, first = next(iter(records.items()))
    for name, record in records.items():
        if (record["seed"], record.get("limit")) != (first["seed"], first.get("limit")):
            raise SystemExit(f"{record['folder']}: split --seed {record['seed']} (limit {record.get('limit')}), but "
                             f"{first_name} used --seed {first['seed']} (limit {first.get('limit')}): "
                             "only runs on the same held-out slices can be averaged")
    return records


def run_probabilities(records, val, held_out):
    """``{run name: (val (probs, probs_flipped), held-out (probs, probs_flipped))}`` of each run's final model."""
    probs = {}
    for name, record in records.items():
        model = final_series_model(record["folder"], record)
        probs[name] = with_and_without_flips(model, val.images), with_and_without_flips(model, held_out.images)
    return probs


def mean_probabilities(pairs):
    """The mean of several (probs, probs_flipped) pairs, as one pair."""
    return tuple(np.mean([pair[k] for pair in pairs], axis=0) for k in (0, 1))


def measure(records, val, held_out):
    """Each run alone and every combination of two or more: post-processing, validation and held-out scores."""
    probs = run_probabilities(records, val, held_out)
    names = list(records)
    rows = []
    for size in range(1, len(names) + 1):
        for members in itertools.combinations(names, size):
            row = score_average(mean_probabilities([probs[m][0] for m in members]),
                                mean_probabilities([probs[m][1] for m in members]), val, held_out)
            rows.append({"members": list(members), **row})
            if size == 1:
                record = records[members[0]]
                check_repeats(row["held_out_score"], record["held_out_score"], members[0],
                              Path(record["folder"]) / "series.json")
    return {"seed": records[names[0]]["seed"], "backend": keras.backend.backend(), "held_out": len(held_out),
            "runs": [{"name": name, "overrides": record.get("overrides", {}), "budget_min": record["budget_min"],
                      "stage_epochs": record.get("stage_epochs"), "held_out_score": record["held_out_score"]}
                     for name, record in records.items()],
            "held_out_coverage": helpers.coverage(held_out.masks).round(4).tolist(), "combinations": rows}


def table(record):
    """One row per run or combination: validation, held-out, paired gains over the first run and over its members."""
    alone = {row["members"][0]: row for row in record["combinations"] if len(row["members"]) == 1}
    first = alone[record["runs"][0]["name"]]
    lines = ["| models averaged | post-processing (chosen on validation) | validation score | held-out score "
             f"| paired gain over {first['members'][0]} alone (95% interval) "
             "| paired gain over its models alone, on average (95% interval) |", "|---|---|---|---|---|---|"]
    for row in record["combinations"]:
        over_first, over_members = gain_over_reference(row, first) or "–", "–"  # the first run's own row: none
        if len(row["members"]) > 1:
            members = np.mean([alone[m]["held_out_per_image"] for m in row["members"]], axis=0)
            over_members = paired_gain_text(row["held_out_score"] - float(members.mean()),
                                            row["held_out_per_image"], members)
        lines.append(f"| {' + '.join(row['members'])} | {postprocessing_text(row['postprocessing'])} "
                     f"| {row['val_score']:.4f} | {row['held_out_score']:.4f} | {over_first} | {over_members} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=[], help="compare_recipes.py folders with a trained series, one split")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-npz", default=None)
    parser.add_argument("--out", default=None, help="the record (a .json file)")
    parser.add_argument("--table", default=None, metavar="RECORD", help="print the table of a record and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if len(args.runs) < 2 or not args.out:
        parser.error("give at least two --runs and --out (or --table RECORD)")
    records = read_runs(args.runs)
    first = next(iter(records.values()))
    _, val, held_out = load_three_ways(args, first["seed"], first.get("limit"))
    record = measure(records, val, held_out)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(table(record))


if __name__ == "__main__":
    main()
