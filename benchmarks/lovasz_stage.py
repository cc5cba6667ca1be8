"""Measure a lever: a Lovász-hinge fine-tuning stage after the series' cross-entropy + Dice training.

    .venv/bin/python benchmarks/compare_recipes.py --data-dir ../shared/tgs-salt --recipes series \\
        --budget-min 45 --out runs/lovasz-45+15
    .venv/bin/python benchmarks/lovasz_stage.py --data-dir ../shared/tgs-salt \\
        --from runs/lovasz-45+15 --budget-min 15

The first command trains the series' recipe for 45 minutes and scores it; this script then takes
its best checkpoint and trains on for ``--budget-min`` minutes with the Lovász hinge (Berman et
al., 2018: a convex surrogate of the per-image IoU loss) at a lower learning rate, with the
series' own callbacks (plateau, early stop with best weights, best-only checkpoint, time budget).
It re-derives the same three-way split from the same ``--seed`` as ``compare_recipes.py`` (the
held-out 20% stays unseen), chooses the post-processing on validation as 04_evaluate does, and
writes ``<from>/lovasz.json`` and a markdown row comparing the two stages on the held-out slices.

This is an experiment, not the series' recipe: the loss lives here until a measurement says the
series should adopt it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_recipes as bench  # noqa: E402  (also puts the project root on sys.path)
import helpers  # noqa: E402


def lovasz_hinge_loss(y_true, y_pred):
    """Per-image Lovász hinge: float32 (B, H, W, 1) truth in {0, 1} and probabilities -> scalar >= 0.

    The probabilities are turned back into logits (clipped to about +-16). Each
    pixel's hinge error ``max(0, 1 - logit * sign)`` is weighted by how much it
    adds to the image's Jaccard loss when the errors are taken largest first;
    an image's loss is the Lovász extension of 1 - IoU at its error vector.
    """
    from keras import ops

    eps = 1e-7
    probs = ops.clip(y_pred, eps, 1.0 - eps)
    logits = ops.reshape(ops.log(probs) - ops.log(1.0 - probs), (ops.shape(y_pred)[0], -1))
    labels = ops.reshape(ops.cast(y_true, logits.dtype), ops.shape(logits))
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    order = ops.flip(ops.argsort(errors, axis=1), axis=1)  # largest error first
    errors_sorted = ops.take_along_axis(errors, order, axis=1)
    labels_sorted = ops.take_along_axis(labels, order, axis=1)
    salt = ops.sum(labels_sorted, axis=1, keepdims=True)
    intersection = salt - ops.cumsum(labels_sorted, axis=1)
    union = salt + ops.cumsum(1.0 - labels_sorted, axis=1)
    jaccard = 1.0 - intersection / union
    weights = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=1)
    return ops.mean(ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(weights), axis=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True,
                        help="a compare_recipes.py --out folder holding series/best.keras and series.json")
    parser.add_argument("--data-dir", default=None, help="the same data the first stage trained on")
    parser.add_argument("--budget-min", type=float, default=15, help="training minutes of the Lovász stage")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="shorter epochs (a smoke test)")
    args = parser.parse_args(argv)

    import keras

    source = Path(args.source)
    checkpoint = source / "series" / "best.keras"
    for needed in (source / "series.json", checkpoint):
        if not needed.is_file():
            parser.error(f"{needed} is missing: run compare_recipes.py --recipes series --out {source} first")
    first = json.loads((source / "series.json").read_text())
    run_dir = source / "lovasz"
    if run_dir.exists():
        parser.error(f"{run_dir} exists: this stage was already run from {source}; nothing is overwritten")
    run_dir = helpers.ensure_run_dir(run_dir)

    train, val, held_out = bench.load_three_ways(args.data_dir, first["seed"], first.get("limit"))
    if len(train) != first["train"] or len(held_out) != first["held_out"]:
        raise SystemExit(f"{source} was measured on other data ({first['train']} train / {first['held_out']} "
                         f"held-out slices, not {len(train)} / {len(held_out)}); pass the same --data-dir")

    config = helpers.training_config("class", epochs=args.epochs, steps_per_epoch=args.steps_per_epoch)
    config.time_budget_min, config.learning_rate = args.budget_min, args.learning_rate
    keras.utils.set_random_seed(config.seed)
    model = helpers.load_model_safely(checkpoint)
    helpers.compile_unet(model, config.learning_rate, loss=lovasz_hinge_loss)
    feed = helpers.make_train_feed(helpers.to_network_input(train.images), helpers.to_network_target(train.masks),
                                   config.batch_size, seed=config.seed + 1, steps_per_epoch=config.steps_per_epoch)
    log = []
    callbacks = helpers.with_extra_callbacks(helpers.make_callbacks(config, run_dir), [
        bench.score_each_epoch(lambda m, images: helpers.predict_salt(m, images) > 0.5, held_out, log)])
    begin = time.monotonic()
    model.fit(feed, validation_data=(helpers.to_network_input(val.images), helpers.to_network_target(val.masks)),
              epochs=config.epochs, verbose=2, callbacks=callbacks)
    wall_minutes = (time.monotonic() - begin) / 60
    history = json.loads((run_dir / "resume" / "state.json").read_text())["history"]

    # EarlyStopping has put the best weights back; these are the weights best.keras holds.
    predictor = bench.SeriesModel.tuned_on(model, val)
    choice = predictor.choice
    held_pred = predictor.masks(held_out.images)
    result = {
        "stage": "lovasz", "from": str(source), "first_stage_budget_min": first["budget_min"],
        "first_stage_held_out_score": first["held_out_score"], "budget_min": args.budget_min,
        "learning_rate": args.learning_rate, "seed": first["seed"], "epochs": len(history),
        "train_minutes": history[-1]["train_seconds"] / 60, "wall_minutes": wall_minutes,
        "best_val_loss": min(h["val_loss"] for h in history),
        "val_score": helpers.competition_score(val.masks, predictor.masks(val.images)),
        "held_out_score": helpers.competition_score(held_out.masks, held_pred),
        "held_out_pixel_iou": helpers.pixel_iou(held_out.masks, held_pred),
        "postprocessing": choice, "per_epoch": log,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    (source / "lovasz.json").write_text(json.dumps(result, indent=2))
    table = ("| stages | training minutes | epochs | held-out score | held-out pixel IoU | post-processing |\n"
             "|---|---|---|---|---|---|\n"
             f"| series only | {first['train_minutes']:.1f} | {first['epochs']} | {first['held_out_score']:.4f} "
             f"| {first['held_out_pixel_iou']:.4f} | {first['postprocessing']} |\n"
             f"| + Lovász stage | {first['train_minutes'] + result['train_minutes']:.1f} | "
             f"{first['epochs']} + {result['epochs']} | {result['held_out_score']:.4f} "
             f"| {result['held_out_pixel_iou']:.4f} | {choice} |\n")
    (source / "lovasz.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
