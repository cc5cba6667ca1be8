"""The benchmark's library: the split, the two recipes, training and scoring them, and what the scripts share.

``compare_recipes.py``, ``levers.py``, ``train_full.py``, ``average_stages.py``,
``average_runs.py`` and ``stage2_variants.py`` only parse their arguments and call this module
(and ``report.py`` for intervals and tables, ``lever_models.py`` for the levers).

The split: a coverage-stratified 20% of the data is held out first and seen by no training and
no tuning; the rest is split 80/20 into train and validation as the series does
(:func:`split_three_ways`). The recipes:

- ``reference``: the seed kernel: input resized 101 -> 128, the same 16-filter UNet with Keras'
  default batch-norm momentum (0.99), Adam 1e-3, binary cross-entropy, batch 32, no
  augmentation, threshold 0.5, with the series' plateau / early-stop / best-checkpoint callbacks.
- ``series``: exactly what 03_train and 04_evaluate run: ``helpers.train_unet`` (reflect padding
  to 112, flips, batch-norm momentum 0.9, Adam's averaged weights; stage 1 cross-entropy + Dice,
  stage 2 the Lovász hinge from stage 1's best checkpoint, half the budget each) and
  ``helpers.tune_postprocessing`` (threshold, flip TTA, the empty-slice rule, small components)
  on stage 2's best checkpoint; with ``--set`` changes, the levers of ``lever_models.py``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import helpers  # noqa: E402
import keras  # noqa: E402  (helpers has started it)
import lever_models  # noqa: E402  (registers the levers' layers and losses: their checkpoints load)
from report import bootstrap_interval  # noqa: E402


def parse_overrides(pairs):
    """``["finetune_share=0.3", ...]`` -> ``{"finetune_share": 0.3}``, typed like LeverConfig's defaults.

    A field of :data:`lever_models.LEGACY_FIELDS` (``mixed_precision=true``, in earlier records'
    commands) comes back under today's name (``precision="mixed_bfloat16"``).
    """
    defaults = vars(lever_models.LeverConfig(setting="class", epochs=1))
    defaults.update({name: False for name in lever_models.LEGACY_FIELDS})  # mixed_precision=true: the bf16 lever
    # the setting, epochs, budget and steps come from the script's own options
    settable = sorted(name for name, value in defaults.items()
                      if value is not None and name not in ("setting", "epochs", "notes"))
    overrides = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in settable:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {settable}")
        kind = type(defaults[name])
        try:
            overrides[name] = kind(text) if kind is not bool else {"true": True, "false": False}[text.lower()]
        except (ValueError, KeyError):
            raise ValueError(f"--set {pair!r}: {text!r} is not a {kind.__name__}") from None
    try:
        lever_models.lever_config(helpers.training_config("class"), **overrides)  # each value's range, checked now
    except ValueError as error:
        raise ValueError(f"--set {' '.join(pairs)}: {error}") from None
    return lever_models.current_overrides(overrides)


def conv_gflop_per_image(model, size):
    """Floating-point operations of one forward pass on a size x size image, in GFLOP (convolutions only).

    Each Conv2D costs 2 * H_out * W_out * K_h * K_w * C_in * C_out; a Conv2DTranspose the same
    counted over its input positions. Batch norm, activations and pooling are left out (a few
    percent). A training step costs about three forward passes (forward, and the backward
    pass's two products per layer).
    """
    convs = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    outputs = keras.Model(model.input, [layer.output for layer in convs])(np.zeros((1, size, size, 1), "float32"))
    total = 0
    for layer, out in zip(convs, outputs):
        height, width = out.shape[1:3]
        kh, kw = layer.kernel.shape[:2]
        if isinstance(layer, keras.layers.Conv2DTranspose):  # kernel (kh, kw, out, in), over the input positions
            total += 2 * (height // layer.strides[0]) * (width // layer.strides[1]) * kh * kw * layer.kernel.shape[2] * layer.kernel.shape[3]
        else:
            total += 2 * height * width * kh * kw * layer.kernel.shape[2] * layer.kernel.shape[3]
    return total / 1e9


def split_three_ways(data, seed):
    """Indices of train, validation and held-out: held-out 20% first, then 80/20 of the rest."""
    classes = helpers.coverage_class(helpers.coverage(data.masks))
    rest, held_out = helpers.stratified_split(classes, 0.2, seed=seed)
    train, val = helpers.stratified_split(classes[rest], 0.2, seed=seed + 1)
    return rest[train], rest[val], held_out


def load_labelled(args, limit=None):
    """The labelled data: ``args.data_npz`` (packed by ``train_full.py --pack``) when given, else ``args.data_dir``."""
    if getattr(args, "data_npz", None):
        return helpers.load_packed_salt_data(args.data_npz, limit=limit)
    return helpers.load_salt_data(args.data_dir, limit=limit)


def load_three_ways(args, seed, limit=None):
    """The data's train, validation and held-out SaltData, as :func:`split_three_ways` cuts them."""
    data = load_labelled(args, limit)
    return [data.subset(index) for index in split_three_ways(data, seed)]


def resize_batch(batch, size, order):
    """Resize (N, H, W) arrays to (N, size, size) with scikit-image (order 1: bilinear, 0: nearest)."""
    from skimage.transform import resize

    return np.stack([resize(item, (size, size), order=order, preserve_range=True, anti_aliasing=False)
                     for item in batch])


class ReferenceModel:
    """The seed recipe's prediction path: resize to 128, predict, resize back to 101, threshold 0.5."""

    choice = helpers.Postprocessing()  # threshold 0.5, nothing else

    def __init__(self, model):
        self.model = model

    def probabilities(self, images):
        out = np.empty(images.shape, np.float32)
        for start in range(0, len(images), 64):
            x = resize_batch(images[start:start + 64] / 255.0, 128, order=1)[..., None].astype(np.float32)
            probs = helpers.keras_to_numpy(self.model.predict_on_batch(x))[..., 0]
            out[start:start + 64] = resize_batch(probs, helpers.IMAGE_SIZE, order=1)
        return out

    def masks(self, images):
        return self.probabilities(images) > 0.5


class SeriesModel:
    """The series' prediction path with the post-processing chosen on validation."""

    def __init__(self, model, choice: helpers.Postprocessing):
        self.model, self.choice = model, choice

    @classmethod
    def tuned_on(cls, model, val):
        """Choose threshold, flip TTA, the empty-slice rule and component size on ``val`` as 04_evaluate does."""
        return cls(model, tuned_postprocessing(model, val))

    def masks(self, images):
        return self.choice.predict(self.model, images)


def score_each_epoch(predict_masks, held_out, log):
    """A Keras callback scoring held-out slices (threshold 0.5) after every epoch, for time-to-score.

    Its own scoring time is left out of the training minutes it records. Used in both of the
    series' stages, it counts epochs and minutes from the start of the first (the few seconds
    between the stages count as training).
    """
    class HeldOutScore(keras.callbacks.Callback):
        started = None

        def on_train_begin(self, logs=None):
            if self.started is None:
                self.started, self.scoring = time.monotonic(), 0.0

        def on_epoch_end(self, epoch, logs=None):
            begin = time.monotonic()
            training_minutes = (begin - self.started - self.scoring) / 60
            score = helpers.competition_score(held_out.masks, predict_masks(self.model, held_out.images))
            self.scoring += time.monotonic() - begin
            log.append({"epoch": len(log) + 1, "held_out_score": score, "train_minutes": training_minutes})

    return HeldOutScore()


def train_reference(config, train, val, held_out, run_dir, log):
    """The seed kernel's training: 128x128 resized slices, no flips, one stage, with the series' callbacks."""
    def resized(images, masks):
        x = resize_batch(images / 255.0, 128, order=1)[..., None].astype(np.float32)
        y = (resize_batch(masks.astype(np.float32), 128, order=0)[..., None] > 0.5).astype(np.float32)
        return x, y

    x_train, y_train = resized(train.images, train.masks)
    arrays = {"x": x_train, "y": y_train, "validation": resized(val.images, val.masks)}
    seed_unet = lambda: helpers.compile_unet(  # noqa: E731
        helpers.build_unet(config.base_filters, dropout=config.dropout, bn_momentum=0.99),  # Keras' default momentum
        config.learning_rate, loss="binary_crossentropy", ema_momentum=config.ema_momentum)
    helpers.train_stage(config, run_dir, seed_unet, arrays, flip=False, extra_callbacks=[
        score_each_epoch(lambda m, images: ReferenceModel(m).masks(images), held_out, log)])


def train_series(config, train, val, held_out, run_dir, log):
    """Exactly what 03_train runs (helpers.train_unet), with the levers of ``config`` (--set) if any."""
    lever_models.train_lever_run(config, train, val, run_dir, extra_callbacks=[
        score_each_epoch(lambda m, images: helpers.predict_salt(m, images) > 0.5, held_out, log)])


@dataclass(frozen=True)
class Recipe:
    """How one recipe trains, from which config, how it predicts, and at what input size."""

    config: Callable  # the class setting's TrainingConfig (with --set changes) -> this recipe's
    train: Callable  # (config, train, val, held_out, run_dir, log) -> None
    predictor: Callable  # (model, val) -> an object whose .masks(images) and .choice score it
    input_size: int


RECIPES = {
    "reference": Recipe(config=lambda c: replace(c, ema_momentum=0.0, finetune_epochs=0),  # plain Adam, one stage
                        train=train_reference, predictor=lambda model, val: ReferenceModel(model), input_size=128),
    "series": Recipe(config=lambda c: c, train=train_series, predictor=lambda model, val: SeriesModel.tuned_on(model, val),
                     input_size=helpers.PADDED_SIZE),
}


def recipe_config(name, budget_min, epochs=100, steps_per_epoch=None, overrides=None):
    """The LeverConfig a recipe trains with: the class setting, the budget, the --set changes, the recipe's own.

    ``overrides`` may be a record's, with the field names of its day (:func:`lever_models.current_overrides`).
    """
    config = helpers.training_config("class", epochs=epochs, steps_per_epoch=steps_per_epoch, time_budget_min=budget_min)
    return RECIPES[name].config(lever_models.lever_config(config, **(overrides or {})))


def run_one(recipe, args):
    """Train and measure one recipe in this process; return its result dict."""
    other = helpers.load_tgs_folder(args.eval_dir) if args.eval_dir else None  # a bad folder fails now
    train, val, held_out = load_three_ways(args, args.seed, args.limit)
    run_dir = helpers.ensure_run_dir(Path(args.out) / recipe)
    overrides = parse_overrides(args.set) if recipe == "series" else {}
    config = recipe_config(recipe, args.budget_min, args.epochs, args.steps_per_epoch, overrides)
    log = []
    begin = time.monotonic()
    RECIPES[recipe].train(config, train, val, held_out, run_dir, log)
    wall_minutes = (time.monotonic() - begin) / 60
    history = helpers.training_history(run_dir)
    final_stage = history[history["stage"] == history["stage"].max()]
    result = {
        "recipe": recipe, "budget_min": args.budget_min, "seed": args.seed, "limit": args.limit,
        "overrides": overrides,
        "backend": keras.backend.backend(),
        # images through training per second of epoch time (the validation pass included)
        "train_images_per_s": len(history) * len(train) / max(history["train_seconds"].iloc[-1], 1e-9),
        "epochs": len(history), "stage_epochs": history.groupby("stage").size().tolist(),
        "best_val_loss": float(final_stage["val_loss"].min()),  # of the stage whose checkpoint is scored
        "train_minutes": history["train_seconds"].iloc[-1] / 60, "wall_minutes": wall_minutes,
        "per_epoch": log, "train": len(train), "val": len(val), "held_out": len(held_out),
    }
    result.update(score_run(result, run_dir, val, held_out, other))
    result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def score_run(result, run_dir, val, held_out, other=None):
    """Score a trained recipe's final checkpoint: its score fields for ``result``.

    The series' post-processing is chosen on ``val``; the held-out slices (and ``other``, a
    labelled folder) are then scored once, and inference is timed on the held-out slices.
    """
    recipe = RECIPES[result["recipe"]]
    config = recipe_config(result["recipe"], result["budget_min"], overrides=result.get("overrides"))
    model = helpers.load_model_safely(helpers.final_checkpoint(run_dir, config))
    predictor = recipe.predictor(model, val)
    scores = {"val_score": helpers.competition_score(val.masks, predictor.masks(val.images)),
              "postprocessing": asdict(predictor.choice)}
    scores["forward_gflop"] = conv_gflop_per_image(model, recipe.input_size)
    scores["train_gflop_per_s"] = 3 * scores["forward_gflop"] * result["train_images_per_s"]  # an estimate
    begin = time.monotonic()
    held_pred = predictor.masks(held_out.images)
    scores["inference_images_per_s"] = len(held_out) / (time.monotonic() - begin)
    per_image = helpers.competition_score_per_image(held_out.masks, held_pred)
    scores["held_out_score"] = float(per_image.mean())
    scores["held_out_per_image"] = per_image.round(4).tolist()  # for intervals and paired comparisons
    scores["held_out_coverage"] = helpers.coverage(held_out.masks).round(4).tolist()  # for scores by salt size
    scores["held_out_ci95"] = bootstrap_interval(per_image)
    scores["held_out_pixel_iou"] = helpers.pixel_iou(held_out.masks, held_pred)
    if other is not None:
        scores["eval_dir_score"] = helpers.competition_score(other.masks, predictor.masks(other.images))
    return scores


def rescore(args):
    """Score the recipes already trained in ``--out`` again with today's post-processing; no training.

    Each ``<recipe>.json`` keeps its training figures; its earlier score fields are kept under
    ``"rescored"`` (a list, oldest first), so nothing measured is lost.
    """
    out = Path(args.out)
    other = helpers.load_tgs_folder(args.eval_dir) if args.eval_dir else None
    splits = {}  # recipes measured with the same seed and limit share one load of the data
    for path in sorted(out.glob("*.json")):
        if path.stem not in RECIPES:
            continue
        result = json.loads(path.read_text())
        key = (result["seed"], result.get("limit"))
        if key not in splits:
            splits[key] = load_three_ways(args, *key)
        _, val, held_out = splits[key]
        if len(held_out) != result["held_out"]:
            raise SystemExit(f"{path} was measured on other data ({result['held_out']} held-out slices, "
                             f"not {len(held_out)}); pass the same --data-dir")
        scores = score_run(result, out / result["recipe"], val, held_out, other)
        result.setdefault("rescored", []).append({key: result[key] for key in scores
                                                  if key in result and key != "held_out_per_image"})
        result.update(scores)
        path.write_text(json.dumps(result, indent=2))
        print(f"{result['recipe']}: held-out {result['rescored'][-1]['held_out_score']:.4f} -> "
              f"{result['held_out_score']:.4f} with {scores['postprocessing']}")


def with_and_without_flips(model, images):
    """(probs, probs_flipped): ``model``'s (N, H, W) float32 probabilities on uint8 (N, H, W), without and with flip TTA."""
    return helpers.predict_salt(model, images), helpers.predict_salt(model, images, flip_tta=True)


def tuned_postprocessing(model, val) -> helpers.Postprocessing:
    """04_evaluate's choice on ``val``: predict with and without flips, then ``helpers.tune_postprocessing``."""
    return helpers.tune_postprocessing(val.masks, *with_and_without_flips(model, val.images))[0]


def score_average(val_probs, held_probs, val, held_out):
    """Choose the post-processing of one prediction on ``val`` as 04 does; score it on ``val`` and ``held_out``.

    ``val_probs`` and ``held_probs`` are each (probs, probs_flipped), (N, H, W) float32 in [0, 1].
    Returns the record's fields: the choice, both scores, and each held-out slice's score.
    """
    choice, _, _ = helpers.tune_postprocessing(val.masks, *val_probs)
    flipped = int(choice.flip_tta)  # each pair is (without flips, with flips)
    per_image = helpers.competition_score_per_image(held_out.masks, choice.masks(held_probs[flipped]))
    return {"postprocessing": asdict(choice),
            "val_score": helpers.competition_score(val.masks, choice.masks(val_probs[flipped])),
            "held_out_score": float(per_image.mean()), "held_out_per_image": per_image.round(4).tolist()}


def check_repeats(score, recorded, what, record_path):
    """Stop unless ``what`` scores here (``score``) what its record at ``record_path`` says (``recorded``).

    A CPU repeats a score exactly; a GPU's kernels may round a pixel or two differently from one
    process to the next, so up to 0.01 is only noted.
    """
    drift = score - recorded
    if abs(drift) > 0.01:
        raise SystemExit(f"{what} scores {score:.4f} here and {recorded:.4f} in {record_path}: "
                         "not the same model or data")
    if drift:
        print(f"note: {what} scores {drift:+.4f} against {record_path} (a pixel or two at the threshold)")


def read_series_run(run):
    """The ``series.json`` of ``run``, a compare_recipes.py folder, once it is checked to hold a trained series."""
    run = Path(run)
    for needed in (run / "series.json", run / "series" / "best.keras"):
        if not needed.is_file():
            raise SystemExit(f"{needed} is missing: {run} must be a compare_recipes.py folder with a trained series")
    return json.loads((run / "series.json").read_text())


def final_series_model(run, series):
    """The run's final model (stage 2's best checkpoint), loaded; ``series`` is its ``series.json``."""
    config = recipe_config("series", series["budget_min"], overrides=series.get("overrides"))
    return helpers.load_model_safely(helpers.final_checkpoint(Path(run) / "series", config))
