"""Train the seed-style reference UNet and the series' recipe on the same data for the same budget.

    .venv/bin/python benchmarks/compare_recipes.py --data-dir ../shared/tgs-salt --budget-min 60

A coverage-stratified 20% of the data is held out first and seen by no training and no tuning;
the rest is split 80/20 into train and validation as the series does. Each recipe then trains
in its own process (so its peak memory is its own) for at most ``--budget-min`` minutes of
training, and the script reports for each: training images/s, epochs, best val_loss, the
competition score on its validation split, on the held-out 20% and on ``--eval-dir`` (a
Kaggle-layout labelled folder), the minutes it took to reach the reference's final held-out
score, inference images/s and peak memory. Results go to ``<out>/results.json`` and
``<out>/results.md``.

``--rescore`` scores the recipes already trained in ``--out`` again with the current
post-processing, without training: the earlier scores are kept in each ``<recipe>.json``.

``--set field=value`` (repeatable) changes one field of the series' recipe for this measurement
only (a ``helpers.TrainingConfig`` field, or a lever of ``lever_models.LeverConfig``), to measure a
lever before it becomes the notebooks' default; the changes are recorded in ``series.json`` and
named in the table. ``--set mixed_precision=true``, in earlier records, is ``--set precision=mixed_bfloat16``.

Held-out scores come with a 95% bootstrap interval over the held-out slices (how much the score
would move with another draw of slices as hard as these), and with the reference in the same
folder, the series' gain over it comes with a paired interval (both scored on the same slices).

The recipes, ``reference`` (the seed kernel: 128x128 resized slices, binary cross-entropy, no
augmentation, threshold 0.5) and ``series`` (exactly what 03_train and 04_evaluate run), are
described in ``recipes.py``, where they live with the split and the scoring.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import report  # benchmarks/report.py: the tables
from recipes import RECIPES, parse_overrides, rescore, run_one

import helpers  # noqa: E402  (recipes put the project on the path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="Kaggle-layout folder or zip (default: as helpers finds it)")
    parser.add_argument("--data-npz", default=None,
                        help="labelled data packed by train_full.py --pack (a machine without the folder)")
    parser.add_argument("--budget-min", type=float, default=60, help="training minutes for each recipe")
    parser.add_argument("--epochs", type=int, default=100, help="epoch cap (early stopping usually ends sooner)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N labelled slices (a smoke test: the scores then mean little)")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="shorter epochs (a smoke test)")
    parser.add_argument("--eval-dir", default=None, help="a separate labelled Kaggle-layout folder to score")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated: " + ",".join(RECIPES))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default="runs/benchmark", help="folder for the runs and results")
    parser.add_argument("--rescore", action="store_true",
                        help="score the recipes already trained in --out again with the current post-processing")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a TrainingConfig field of the series' recipe for this measurement "
                             "(repeatable), e.g. --set finetune_share=0.3")
    parser.add_argument("--only", choices=sorted(RECIPES), help=argparse.SUPPRESS)  # one recipe, in this process
    args = parser.parse_args(argv)
    try:
        parse_overrides(args.set)
    except ValueError as error:
        parser.error(str(error))

    out = Path(args.out)
    if args.rescore:
        if not any((out / f"{name}.json").is_file() for name in RECIPES):
            parser.error(f"{out} holds no measured recipe to rescore")
        rescore(args)
        print(report.write_results(out, RECIPES))
        return
    if args.only:
        result = run_one(args.only, args)
        (out / f"{args.only}.json").write_text(json.dumps(result, indent=2))
        return
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        parser.error(f"unknown recipe(s) {sorted(unknown)}; choose from {sorted(RECIPES)}")
    if args.set and "series" not in recipes:
        parser.error("--set changes the series' recipe, which --recipes leaves out")
    if args.eval_dir:
        helpers.read_ids_csv(Path(args.eval_dir) / "train.csv", ["id", "rle_mask"])
    for name in recipes:
        if (out / name).exists():
            parser.error(f"{out / name} exists: choose another --out so no earlier run is overwritten")
    # Recipes measured earlier into the same folder join the table: refuse a mismatch before training.
    earlier = [json.loads(path.read_text()) for path in out.glob("*.json") if path.stem in RECIPES]
    mixed = [r["recipe"] for r in earlier
             if (r["budget_min"], r.get("seed", args.seed), r.get("limit")) != (args.budget_min, args.seed, args.limit)]
    if mixed:
        parser.error(f"{out} holds {mixed} measured with another --budget-min, --seed or --limit; use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    for name in recipes:
        print(f"== {name}: training for at most {args.budget_min:g} min", flush=True)
        command = [sys.executable, __file__, "--only", name] + [a for a in (argv or sys.argv[1:])]
        subprocess.run(command, check=True)
    print(report.write_results(out, RECIPES))


if __name__ == "__main__":
    main()
