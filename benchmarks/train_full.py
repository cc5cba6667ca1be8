"""Run what 01, 03 and 04 run, as one script: the split, the two training stages, validation.

    .venv/bin/python benchmarks/train_full.py --data-dir ../shared/tgs-salt --setting full --out runs/full-script

It is the series without the notebooks, for a machine that has no Jupyter (a lent GPU machine,
say): 01's coverage-stratified split (the setting's seed), ``helpers.train_unet`` with the
setting's recipe, and 04's choice of post-processing on validation. It writes
``<out>/train_full.json``: the machine, the backend, each stage's epochs, minutes and images/s,
the best val_loss, and the validation score at threshold 0.5 and post-processed.

``--pack FILE.npz`` writes the labelled data it loaded into one compressed file and stops; the
file is read back with ``--data-npz`` on a machine that cannot see the data folder. The packed
file is a copy of the data set: keep it out of the repository (the folder ``.device/`` is
ignored for that).

``--precision`` is the notebooks' ``SALT_PRECISION``: ``auto`` (the default) trains in
``mixed_float16`` on a GPU and in float32 otherwise, as 03_train does. The H200 record of
2026-11 (``results/gpu-h200-jax-full.json``) was trained before that choice existed, in float32:
``--precision float32`` repeats it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import helpers  # noqa: E402
import keras  # noqa: E402  (helpers has started it)
from recipes import load_labelled, with_and_without_flips  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="Kaggle-layout folder or zip (default: as helpers finds it)")
    parser.add_argument("--data-npz", default=None, help="labelled data packed by --pack")
    parser.add_argument("--pack", default=None, metavar="FILE.npz", help="pack the loaded data into FILE and stop")
    parser.add_argument("--setting", default="full", choices=sorted(helpers.SETTINGS))
    parser.add_argument("--epochs", type=int, default=None, help="cap each stage's epochs")
    parser.add_argument("--limit", type=int, default=None, help="only the first N labelled slices")
    parser.add_argument("--precision", default="auto", help="auto, " + ", ".join(helpers.PRECISIONS))
    parser.add_argument("--out", default="runs/full-script")
    args = parser.parse_args(argv)

    data = load_labelled(args, args.limit)
    if args.pack:
        print(f"packed {len(data)} labelled slices into {helpers.pack_salt_data(data, args.pack)}")
        return

    gpu = helpers.find_gpu()
    config = helpers.training_config(args.setting, epochs=args.epochs, gpu=gpu, precision=args.precision)
    out = helpers.ensure_run_dir(args.out)
    train_index, val_index = helpers.split_for_run(out, data, seed=config.seed)  # notebook 1's split
    train, val = data.subset(train_index), data.subset(val_index)
    begin = time.monotonic()
    history = helpers.train_unet(config, train, val, out)
    wall_min = (time.monotonic() - begin) / 60

    model = helpers.load_model_safely(helpers.final_checkpoint(out, config))
    probs, probs_tta = with_and_without_flips(model, val.images)
    choice, _, _ = helpers.tune_postprocessing(val.masks, probs, probs_tta)
    final = choice.masks(probs_tta if choice.flip_tta else probs)
    stages = []
    for stage, part in history.groupby("stage"):
        stages.append({"stage": int(stage), "epochs": len(part),
                       "best_val_loss": float(part["val_loss"].min()),
                       "best_epoch": int(part.loc[part["val_loss"].idxmin(), "epoch"])})
    stage_ends = history.groupby("stage")["train_seconds"].max()  # counted from the start of stage 1
    seconds_by_stage = stage_ends.diff().fillna(stage_ends)
    per_epoch = min(len(train), (config.steps_per_epoch or len(train)) * config.batch_size)
    for row, seconds in zip(stages, seconds_by_stage):  # seconds of epochs, the validation pass included
        row["train_minutes"] = round(float(seconds) / 60, 2)
        row["train_images_per_s"] = round(row["epochs"] * per_epoch / max(float(seconds), 1e-9), 1)
    result = {
        "setting": args.setting, "machine": gpu or f"CPU ({platform.processor() or platform.machine()})",
        "backend": keras.backend.backend(), "keras": keras.__version__, "precision": config.precision,
        "data": data.source,
        "train": len(train), "val": len(val), "stages": stages,
        "train_minutes": round(float(history["train_seconds"].iloc[-1]) / 60, 2), "wall_minutes": round(wall_min, 2),
        "val_score_at_0.5": round(helpers.competition_score(val.masks, probs > 0.5), 4),
        "val_score_postprocessed": round(helpers.competition_score(val.masks, final), 4),
        "postprocessing": asdict(choice),
    }
    (out / "train_full.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
