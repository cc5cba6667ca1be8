"""A lever that needs no training: average the two stages' best models' predictions.

    .venv/bin/python benchmarks/average_stages.py --data-dir ../shared/tgs-salt --run runs/three-2028-60min

The series ends with two good models of one run: stage 1's best checkpoint (cross-entropy +
Dice, ``series/best.keras``) and stage 2's (the Lovász hinge, ``series/lovasz/best.keras``).
Averaging more than one good model is one of the issue's levers (snapshot ensembles were
reported at +0.01 on this competition); these two come free with every run. For each weight
``w`` of stage 2 in ``WEIGHTS`` the probabilities ``w * stage 2 + (1 - w) * stage 1`` (with and
without flip TTA) go through the series' post-processing choice on the validation slices;
validation also picks ``w`` (ties: the larger ``w``, the fewer models). ``w = 1`` is the series
as it is: its held-out score must repeat the run's ``series.json`` (exactly on a CPU; a GPU may
round a pixel or two differently), and is checked. Every ``w``
is then scored once on the held-out slices and paired with ``w = 1`` slice by slice.

``--run`` is a ``compare_recipes.py`` folder whose series was trained with ``--recipes series``;
the split comes from its ``series.json``. The record goes to ``<run>/average_stages.json`` (or
``--out``) with each held-out slice's score.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import (check_repeats, final_series_model, load_three_ways, read_series_run,  # noqa: E402
                     score_average, with_and_without_flips)
from report import gain_over_reference, postprocessing_text  # noqa: E402

import helpers  # noqa: E402
import keras  # noqa: E402  (helpers has started it)

WEIGHTS = (1.0, 0.75, 0.5)
"""Stage 2's share of the averaged probabilities; 1.0 is the series unchanged."""


def stage_probabilities(models, images):
    """``{stage: (probs, probs_flipped)}`` for each model in ``models`` ({stage: model}) on uint8 (N, H, W)."""
    return {stage: with_and_without_flips(model, images) for stage, model in models.items()}


def averaged(probs, weight):
    """Stage 2's weight ``weight`` against stage 1's: (probs, probs_flipped) of the average."""
    return tuple(weight * two + (1.0 - weight) * one for one, two in zip(probs[1], probs[2]))


def measure(run, series, val, held_out):
    """Every weight's post-processing chosen on ``val``, its validation and held-out scores; the pick.

    ``series`` is the run's ``series.json``, already read.
    """
    models = {1: helpers.load_model_safely(run / "series" / "best.keras"), 2: final_series_model(run, series)}
    val_probs = stage_probabilities(models, val.images)
    begin = time.monotonic()
    held_probs = stage_probabilities(models, held_out.images)
    seconds = time.monotonic() - begin  # both stages, with and without flips
    rows = []
    for weight in WEIGHTS:
        rows.append({"stage_two_weight": weight,
                     **score_average(averaged(val_probs, weight), averaged(held_probs, weight), val, held_out)})
    check_repeats(rows[0]["held_out_score"], series["held_out_score"], "stage 2 alone", run / "series.json")
    chosen = max(rows, key=lambda row: (row["val_score"], row["stage_two_weight"]))
    return {"run": run.name, "seed": series["seed"], "budget_min": series["budget_min"],
            "backend": keras.backend.backend(), "held_out": len(held_out),
            "series_held_out_score": series["held_out_score"],
            "held_out_coverage": helpers.coverage(held_out.masks).round(4).tolist(),
            "chosen_weight": chosen["stage_two_weight"], "weights": rows,
            "predict_seconds_per_image_both_stages_with_flips": seconds / len(held_out)}


def table(record):
    """One row per weight: validation, held-out, and the paired gain over stage 2 alone."""
    base = record["weights"][0]
    lines = ["| stage 2's weight | post-processing (chosen on validation) | validation score | held-out score "
             "| paired gain over stage 2 alone (95% interval) |", "|---|---|---|---|---|"]
    for row in record["weights"]:
        gain = gain_over_reference(row, base) or "–"  # stage 2 alone: none
        mark = " (chosen)" if row["stage_two_weight"] == record["chosen_weight"] else ""
        lines.append(f"| {row['stage_two_weight']:.2f}{mark} | {postprocessing_text(row['postprocessing'])} "
                     f"| {row['val_score']:.4f} | {row['held_out_score']:.4f} | {gain} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a compare_recipes.py folder holding series.json and series/")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-npz", default=None)
    parser.add_argument("--out", default=None, help="the record (default: <run>/average_stages.json)")
    parser.add_argument("--table", default=None, metavar="RECORD", help="print the table of a record and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if not args.run:
        parser.error("--run (or --table) is required")
    run = Path(args.run)
    series = read_series_run(run)
    _, val, held_out = load_three_ways(args, series["seed"], series.get("limit"))
    record = measure(run, series, val, held_out)
    out = Path(args.out) if args.out else run / "average_stages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(table(record))


if __name__ == "__main__":
    main()
