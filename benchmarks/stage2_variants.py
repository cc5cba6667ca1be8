"""Measure a stage-2 lever: train stage 2 again, with another loss, from a benchmark run's stage 1.

    .venv/bin/python benchmarks/stage2_variants.py --data-dir ../shared/tgs-salt --from runs/ema-60min \\
        --variant symmetric-lovasz --epochs 8 --out runs/stage2-symmetric-lovasz

``--from`` is a ``compare_recipes.py`` output folder with a trained series recipe. Its stage-1 best
checkpoint (``<from>/series/best.keras``) is trained on exactly as ``helpers.train_unet`` trains
stage 2 (Adam at the fine-tuning rate with averaged weights, the series' callbacks, the same
batches from the same seed), with the variant's loss, for ``--epochs`` epochs. The variants:

- ``lovasz``: the series' own stage 2 (``helpers.lovasz_hinge_loss``), the baseline. Its
  val_loss after each epoch repeats the run's ``series/lovasz/history.csv``.
- ``symmetric-lovasz``: the mean of the Lovász hinge of the salt and of the background (truth and
  probabilities flipped). On a slice without salt the plain hinge only pushes the single worst
  pixel (the slice's IoU is 0 as soon as one pixel is wrong); the background term pushes all
  of them.

After every epoch the validation slices of the run's own split are scored with the competition
metric at pixel thresholds 0.3 to 0.7. The held-out slices are not looked at: a lever is chosen
on validation, and the benchmark then measures it on the held-out ones. Results go to
``<out>/scores.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import helpers  # noqa: E402
import recipes  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def symmetric_lovasz_loss(y_true, y_pred):
    """The Lovász hinge of the salt and of the background, averaged: same shapes as helpers.lovasz_hinge_loss."""
    return 0.5 * (helpers.lovasz_hinge_loss(y_true, y_pred) + helpers.lovasz_hinge_loss(1.0 - y_true, 1.0 - y_pred))


VARIANTS = {"lovasz": helpers.lovasz_hinge_loss, "symmetric-lovasz": symmetric_lovasz_loss}


def validation_scores(val, log):
    """A Keras callback appending {epoch, val_loss, score at each threshold} to ``log`` after every epoch."""
    import keras

    class ValidationScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probs = helpers.predict_salt(self.model, val.images)
            row = {"epoch": epoch + 1, "val_loss": float(logs["val_loss"])}
            row.update({f"score@{t}": helpers.competition_score(val.masks, probs > t) for t in THRESHOLDS})
            log.append(row)
            print(json.dumps(row), flush=True)

    return ValidationScore()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="the data the --from run was trained on")
    parser.add_argument("--data-npz", default=None, help="labelled data packed by train_full.py --pack")
    parser.add_argument("--from", dest="source", required=True, help="a compare_recipes.py --out folder")
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="shorter epochs (a smoke test)")
    parser.add_argument("--out", required=True, help="a new folder for this stage 2 and its scores")
    args = parser.parse_args(argv)

    source, out = Path(args.source), Path(args.out)
    if out.exists():
        parser.error(f"{out} exists: choose another --out so no earlier measurement is overwritten")
    measured = recipes.read_series_run(source)
    train, val, _ = recipes.load_three_ways(args, measured["seed"], measured.get("limit"))
    # the run's recipe, with the changes it was measured with (compare_recipes.py --set)
    config = recipes.recipe_config("series", measured["budget_min"], steps_per_epoch=args.steps_per_epoch,
                                   overrides=measured.get("overrides"))
    stage2 = replace(helpers.finetune_config(config), epochs=args.epochs)
    log = []
    helpers.train_stage(stage2, out / "stage2",
                        lambda: helpers.finetune_model(source / "series" / "best.keras", stage2,
                                                       loss=VARIANTS[args.variant]),
                        helpers.network_arrays(train, val), extra_callbacks=[validation_scores(val, log)])
    (out / "scores.json").write_text(json.dumps({"from": str(source), "variant": args.variant, "epochs": log},
                                                indent=2))
    header = ["epoch", "val_loss", *[f"score@{t}" for t in THRESHOLDS]]
    print(f"| {' | '.join(header)} |\n|{' --- |' * len(header)}")
    for row in log:
        print("| " + " | ".join(f"{row[k]:.4f}" if k != "epoch" else str(row[k]) for k in header) + " |")


if __name__ == "__main__":
    main()
