"""The levers the benchmark measures on the series' recipe: other blocks, losses, heads, augmentations.

A lever is a change to the recipe that ``benchmarks/levers.py`` and ``compare_recipes.py --set``
measure before it could become the notebooks' default. None of them is the series' default
today (``benchmarks/README.md`` says what each one scored), so they live here and not in
``helpers.py``, which holds what the notebooks teach. Everything is built on the series' public
functions: :class:`LeverConfig` is ``helpers.TrainingConfig`` with the lever fields,
:func:`train_lever_run` is ``helpers.train_unet`` with this module's model, stage-2 model and
feed. The layers and losses a lever's checkpoint carries are registered with Keras here
(package ``salt_unet``, the names they were saved under), so importing this module is what
lets such a checkpoint load.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import helpers  # noqa: E402  (starts Keras quietly)
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402


def residual_block(x, filters, name, bn_momentum=0.9):
    """A lever (``block="residual"``): :func:`conv_block` with a shortcut, as in ResNet.

    3x3 convolution, batch norm, ReLU, 3x3 convolution, batch norm, then the
    input is added back (through a 1x1 convolution when the number of
    channels changes) before the last ReLU. The block learns a correction to
    its input, which keeps gradients flowing through deep stacks.
    """

    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal",
                                 name=f"{name}_shortcut")(x)
        shortcut = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_shortcut_bn")(shortcut)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(y)


def scse_block(x, name, reduction=2):
    """A lever (``scse=True``): spatial and channel squeeze-and-excitation (Roy et al., 2018).

    (B, H, W, C) -> the same shape. The channel branch averages each channel
    over the image and learns a weight in (0, 1) per channel; the spatial
    branch learns a weight in (0, 1) per pixel with a 1x1 convolution. The
    block returns the input reweighted each way, summed.
    """

    channels = x.shape[-1]
    squeeze = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_cse_squeeze")(x)
    squeeze = layers.Dense(max(channels // reduction, 1), activation="relu", name=f"{name}_cse_dense1")(squeeze)
    squeeze = layers.Dense(channels, activation="sigmoid", name=f"{name}_cse_dense2")(squeeze)
    by_channel = layers.Multiply(name=f"{name}_cse")([x, squeeze])
    where = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_sse_conv")(x)
    by_pixel = layers.Multiply(name=f"{name}_sse")([x, where])
    return layers.Add(name=f"{name}_scse")([by_channel, by_pixel])


@keras.saving.register_keras_serializable(package="salt_unet")
class SpreadOverImage(layers.Layer):
    """[(B, 1, 1, C) values, (B, H, W, any) image] -> (B, H, W, C): each value repeated at every pixel."""

    def call(self, inputs):
        values, image = inputs
        return values * ops.ones_like(image[..., :1], dtype=values.dtype)


def empty_slice_head(bottleneck, decoded, name="empty_head"):
    """A lever (``empty_head=True``): a head that judges the whole slice, salt or none, for the pixels.

    bottleneck: (B, h, w, C) the UNet's deepest features; decoded: (B, H, W, F)
    the last expanding block's output. The bottleneck is averaged over the
    slice into a summary of F values (global average pooling, a ReLU dense
    layer); one sigmoid unit reads the chance in (0, 1) that the slice holds
    any salt. The summary is spread over every pixel and concatenated to
    ``decoded``, so the pixel head sees what the whole slice looks like
    (salt texture without a boundary in view, or nothing at all). Returns
    ``(features for the pixel head (B, H, W, 2F), chance (B, 1, 1, 1) float32)``.
    """

    summary = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(bottleneck)
    summary = layers.Dense(decoded.shape[-1], activation="relu", name=f"{name}_dense")(summary)
    chance = layers.Dense(1, activation="sigmoid", dtype="float32", name="has_salt")(summary)
    spread = SpreadOverImage(name=f"{name}_spread")([summary, decoded])
    return layers.Concatenate(name=f"{name}_fuse")([decoded, spread]), chance


@keras.saving.register_keras_serializable(package="salt_unet")
def focal_dice_loss(y_true, y_pred, gamma=2.0):
    """A lever (``stage_one_loss="focal_dice"``): focal cross-entropy plus :func:`helpers.soft_dice_loss`.

    float32 tensors (B, H, W, 1) in [0, 1] -> scalar >= 0. Focal loss (Lin et
    al., 2017) multiplies each pixel's cross-entropy by ``(1 - p_t) ** gamma``,
    ``p_t`` being the probability given to the pixel's true class: the many
    pixels the model already gets right count for little, the hard ones (the
    edges and small bodies) for more.
    """

    y_true = ops.cast(y_true, y_pred.dtype)
    probs = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    p_true = y_true * probs + (1.0 - y_true) * (1.0 - probs)
    focal = ops.mean(-((1.0 - p_true) ** gamma) * ops.log(p_true))
    return focal + helpers.soft_dice_loss(y_true, y_pred)


SMALL_BODY_FRACTION = 0.1
"""Salt covering less of the padded slice than this counts as a small body (the issue's "under 10% salt")."""

SMALL_BODY_MAX_WEIGHT = 5.0
"""The most a small body's salt pixel weighs in :func:`size_weighted_bce_dice_loss` (reached at 0.4% salt)."""


def small_body_weights(y_true):
    """Each salt pixel's weight for :func:`size_weighted_bce_dice_loss`: (B, H, W, 1) masks -> float32 (B, H, W, 1).

    In a slice whose salt covers a fraction ``f`` of it, each salt pixel
    weighs ``sqrt(SMALL_BODY_FRACTION / f)``, between 1 and
    ``SMALL_BODY_MAX_WEIGHT``: 1 from 10% salt up, about 3.2 at 1%, 5 at
    0.4% (some 50 pixels of 112x112) and below. Pixels without salt weigh 1.
    """
    y_true = ops.cast(y_true, "float32")
    fraction = ops.mean(y_true, axis=(1, 2, 3), keepdims=True)
    weight = ops.sqrt(SMALL_BODY_FRACTION / ops.maximum(fraction, 1e-6))
    weight = ops.clip(weight, 1.0, SMALL_BODY_MAX_WEIGHT)
    return 1.0 + (weight - 1.0) * y_true


@keras.saving.register_keras_serializable(package="salt_unet")
def size_weighted_bce_dice_loss(y_true, y_pred):
    """A lever (``stage_one_loss="sized_bce_dice"``): cross-entropy that weighs small bodies' salt more, plus Dice.

    float32 tensors (B, H, W, 1) in [0, 1] -> scalar >= 0. In plain
    cross-entropy every pixel counts the same, so a body of 50 pixels is
    0.4% of a slice's loss and the network can miss it cheaply. Here each
    pixel's cross-entropy is multiplied by :func:`small_body_weights` (a
    salt pixel of a slice with under 10% salt weighs up to 5 times more);
    the per-image :func:`helpers.soft_dice_loss` is added unchanged.
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    weights = ops.cast(small_body_weights(y_true), y_pred.dtype)
    bce = ops.mean(weights * ops.binary_crossentropy(y_true, y_pred))
    return bce + helpers.soft_dice_loss(y_true, y_pred)


STAGE_ONE_LOSSES = {"bce_dice": helpers.bce_dice_loss, "focal_dice": focal_dice_loss,
                    "sized_bce_dice": size_weighted_bce_dice_loss}
"""Stage 1's loss by ``LeverConfig.stage_one_loss``."""


EMPTY_HEAD_WEIGHT = 0.1
"""How much the empty-slice head's own cross-entropy counts against the pixels' loss."""


def _pixel_and_slice_loss(pixel_loss):
    """``pixel_loss`` plus the empty-slice head's cross-entropy, registered as ``<name>_with_empty_head``."""

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        has_salt = ops.max(ops.reshape(y_true, (ops.shape(y_true)[0], -1)), axis=1)
        chance = ops.clip(ops.cast(y_pred[:, 0, 0, 1], "float32"), 1e-7, 1.0 - 1e-7)
        image_loss = ops.mean(ops.binary_crossentropy(has_salt, chance))
        return pixel_loss(y_true, y_pred[..., :1]) + EMPTY_HEAD_WEIGHT * image_loss

    loss.__name__ = loss.__qualname__ = f"{pixel_loss.__name__}_with_empty_head"
    return keras.saving.register_keras_serializable(package="salt_unet", name=loss.__name__)(loss)


EMPTY_HEAD_LOSSES = {pixel_loss: _pixel_and_slice_loss(pixel_loss)
                     for pixel_loss in (*STAGE_ONE_LOSSES.values(), helpers.lovasz_hinge_loss)}
"""Each of the series' losses -> its version for the empty-slice head, registered at import so a
checkpoint with the head reloads in a new process."""


def with_empty_head(pixel_loss):
    """The loss of a UNet with the empty-slice head: ``pixel_loss`` on channel 0, plus the head's cross-entropy.

    ``pixel_loss`` is one of the series' losses (stage 1's or the Lovász
    hinge; :data:`EMPTY_HEAD_LOSSES`). For (B, H, W, 1) masks and
    (B, H, W, 2) outputs the result is ``pixel_loss`` of the masks and
    channel 0, plus ``EMPTY_HEAD_WEIGHT`` times the binary cross-entropy
    between "the mask holds salt" and channel 1 (read at one pixel: it is the
    same at all). A loss that has the head already is returned as it is.
    """
    if pixel_loss in EMPTY_HEAD_LOSSES.values():
        return pixel_loss
    if pixel_loss not in EMPTY_HEAD_LOSSES:
        raise ValueError(f"the empty-slice head trains with one of the series' losses "
                         f"({', '.join(f.__name__ for f in EMPTY_HEAD_LOSSES)}), not {pixel_loss!r}")
    return EMPTY_HEAD_LOSSES[pixel_loss]


@keras.saving.register_keras_serializable(package="salt_unet")
def salt_accuracy(y_true, y_pred):
    """Pixel accuracy of channel 0 at threshold 0.5: (B, H, W, 1) masks, (B, H, W, 1 or 2) outputs -> (B,)."""
    right = ops.equal(ops.cast(y_true, "float32"), ops.cast(y_pred[..., :1] > 0.5, "float32"))
    return ops.mean(ops.cast(right, "float32"), axis=(1, 2, 3))


LEVER_RULES = {
    "block": (lambda value: value in BLOCKS, "'plain' or 'residual'"),
    "upscale": (lambda value: value in (1, 2, 4), "1, 2 or 4"),
    "shift_pixels": (lambda value: isinstance(value, int) and 0 <= value <= 16, "0 to 16"),
    "stage_one_loss": (lambda value: value in STAGE_ONE_LOSSES, "one of " + ", ".join(sorted(STAGE_ONE_LOSSES))),
}
"""The one rule for each lever value that has a range: field -> (check, what it allows)."""


def lever_errors(**values) -> list[str]:
    """``["upscale=3 (1, 2 or 4)", ...]`` for the ``values`` that break :data:`LEVER_RULES`; empty when all hold."""
    return [f"{name}={value!r} ({LEVER_RULES[name][1]})" for name, value in values.items()
            if not LEVER_RULES[name][0](value)]


def check_levers(**values) -> None:
    """Raise a ValueError naming every value in ``values`` that breaks :data:`LEVER_RULES`."""
    wrong = lever_errors(**values)
    if wrong:
        raise ValueError("lever value out of range: " + ", ".join(wrong))


LEGACY_FIELDS = {"mixed_precision": lambda on: {"precision": "mixed_bfloat16" if on else "float32"}}
"""Lever fields of earlier records -> today's: ``mixed_precision=true`` (the bf16 lever) is ``precision=mixed_bfloat16``."""


def current_overrides(overrides) -> dict:
    """A record's (or ``--set``'s) field changes with :data:`LEGACY_FIELDS` renamed to today's fields."""
    current = {}
    for name, value in (overrides or {}).items():
        current.update(LEGACY_FIELDS[name](value) if name in LEGACY_FIELDS else {name: value})
    return current


@dataclass
class LeverConfig(helpers.TrainingConfig):
    """``helpers.TrainingConfig`` with the levers; their defaults are the recipe the notebooks teach.

    ``block`` ("plain" or "residual") and ``scse`` / ``hypercolumn`` /
    ``empty_head`` / ``upscale`` go to :func:`build_lever_unet`;
    ``stage_one_loss`` (a key of :data:`STAGE_ONE_LOSSES`) is stage 1's loss;
    ``shift_pixels`` shifts each training slice by up to that many pixels
    (:class:`ShiftedFeed`). The bf16 lever is the series' own
    ``precision="mixed_bfloat16"``. Each value's range is :data:`LEVER_RULES`.
    """

    block: str = "plain"
    scse: bool = False
    hypercolumn: bool = False
    stage_one_loss: str = "bce_dice"
    shift_pixels: int = 0
    empty_head: bool = False
    upscale: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_levers(**{name: getattr(self, name) for name in LEVER_RULES})


LEVER_FIELDS = tuple(f.name for f in fields(LeverConfig) if f.name not in {g.name for g in fields(helpers.TrainingConfig)})
"""The fields :class:`LeverConfig` adds to the series' TrainingConfig."""


def lever_config(config: helpers.TrainingConfig, **changes) -> LeverConfig:
    """``config`` (a series TrainingConfig) as a LeverConfig, with ``changes`` (legacy names allowed) applied."""
    base = {f.name: getattr(config, f.name) for f in fields(config)}
    return LeverConfig(**{**base, **current_overrides(changes)})


def build_lever_unet(base_filters=16, depth=4, dropout=0.05, bn_momentum=0.9, name="unet",
                     block="plain", scse=False, hypercolumn=False, empty_head=False, upscale=1):
    """:func:`helpers.build_unet` with the levers the benchmark measures; the defaults build the series' UNet.

    The same layers and names as the series' UNet, so a lever's checkpoint
    goes through the series' prediction and scoring unchanged. The levers:
    ``block="residual"`` uses :func:`residual_block` for every block;
    ``scse=True`` puts a :func:`scse_block` after every expanding block;
    ``hypercolumn=True`` feeds the head every expanding level's output,
    upsampled to full size and concatenated, not only the last one;
    ``empty_head=True`` adds :func:`empty_slice_head` and a second output
    channel, (None, None, 2): channel 0 the salt probabilities, channel 1 the
    slice's chance of holding salt, the same at every pixel (its loss:
    :func:`with_empty_head`); ``upscale=2`` (or 4) enlarges the slice
    bilinearly before the first block and averages the probabilities back to
    the input's size after the head, so every level works at that many times
    the resolution with the same weights.
    """

    check_levers(block=block, upscale=upscale)
    found = {"up": []}  # the bottleneck's and each expanding block's output, as the UNet is built

    def lever_block(x, filters, name, bn_momentum):
        if name == "down1" and upscale > 1:
            x = layers.UpSampling2D(upscale, interpolation="bilinear", name="upscale")(x)
        x = BLOCKS[block](x, filters, name, bn_momentum=bn_momentum)
        if scse and name.startswith("up"):
            x = scse_block(x, name=name)
        if name.startswith("up"):
            found["up"].append(x)
        elif name == "bottleneck":
            found["bottleneck"] = x
        return x

    unet = helpers.build_unet(base_filters, depth, dropout, bn_momentum, name, block=lever_block)
    if not (hypercolumn or empty_head or upscale > 1):
        return unet
    x = found["up"][-1]  # the last expanding block: what the series' head reads
    if hypercolumn:  # every coarser expanding level, upsampled to full size, beside it
        columns = [layers.UpSampling2D(2 ** level, interpolation="bilinear", name=f"up{level + 1}_to_full")(up)
                   for level, up in zip(reversed(range(depth)), found["up"]) if level]
        x = layers.Concatenate(name="hypercolumn")([x, *reversed(columns)])
    if empty_head:
        x, chance = empty_slice_head(found["bottleneck"], x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="salt")(x)
    if upscale > 1:
        outputs = layers.AveragePooling2D(upscale, dtype="float32", name="salt_to_input_size")(outputs)
    if empty_head:
        spread = SpreadOverImage(dtype="float32", name="has_salt_spread")([chance, outputs])
        outputs = layers.Concatenate(dtype="float32", name="salt_and_has_salt")([outputs, spread])
    return keras.Model(unet.input, outputs, name=name)


BLOCKS = {"plain": helpers.conv_block, "residual": residual_block}
"""The block of every level, by ``LeverConfig.block``."""


def compile_lever_unet(model, learning_rate, loss, ema_momentum):
    """:func:`helpers.compile_unet`; a UNet with the empty-slice head (two channels) gets :func:`with_empty_head`'s loss."""
    if model.output.shape[-1] == 2:  # the pixels' accuracy, not the chance's
        accuracy = keras.metrics.MeanMetricWrapper(salt_accuracy, name="accuracy")
        return helpers.compile_unet(model, learning_rate, with_empty_head(loss), ema_momentum, metrics=[accuracy])
    return helpers.compile_unet(model, learning_rate, loss, ema_momentum)


def new_lever_unet(config: LeverConfig):
    """Stage 1's starting model for ``config``: :func:`build_lever_unet` under ``config.precision``, compiled.

    With the defaults it is :func:`helpers.new_unet`'s model, weight for weight.
    """
    with helpers.dtype_policy(config.precision):
        model = build_lever_unet(config.base_filters, dropout=config.dropout, block=config.block, scse=config.scse,
                                 hypercolumn=config.hypercolumn, empty_head=config.empty_head, upscale=config.upscale)
    return compile_lever_unet(model, config.learning_rate, STAGE_ONE_LOSSES[config.stage_one_loss], config.ema_momentum)


def finetune_lever_model(checkpoint, config: LeverConfig):
    """Stage 2's starting model: :func:`helpers.finetune_model`, with the empty-slice head's loss when it has one."""
    model = helpers.load_model_safely(checkpoint)
    return compile_lever_unet(model, config.learning_rate, helpers.lovasz_hinge_loss, config.ema_momentum)


def lever_feed(config: LeverConfig):
    """The training feed for ``config``: :class:`ShiftedFeed` with ``shift_pixels`` > 0, else the series' own."""
    return partial(ShiftedFeed, shift_pixels=config.shift_pixels) if config.shift_pixels else helpers.TrainFeed


def train_lever_run(config: LeverConfig, train, val, run_dir, verbose=2, extra_callbacks=()):
    """``helpers.train_unet`` with the levers of ``config``: both stages, resumable, into ``run_dir``."""
    return helpers.train_unet(config, train, val, run_dir, verbose, extra_callbacks, new_model=new_lever_unet,
                              finetune=finetune_lever_model, new_feed=lever_feed(config))


def shift_batch(batch, shifts) -> np.ndarray:
    """Move each (H, W, C) item of ``batch`` by its (down, right) pixels in ``shifts``, reflecting at the edges."""
    reach = int(np.abs(shifts).max()) if len(shifts) else 0
    if not reach:
        return batch
    height, width = batch.shape[1:3]
    padded = np.pad(batch, [(0, 0), (reach, reach), (reach, reach), (0, 0)], mode="reflect")
    return np.stack([padded[k, reach - down:reach - down + height, reach - right:reach - right + width]
                     for k, (down, right) in enumerate(shifts)])


class ShiftedFeed(helpers.TrainFeed):
    """A lever (``shift_pixels`` > 0): the series' feed, each image and its mask also moved by up to that many pixels.

    Up or down and left or right, reflecting at the edges; the shifts of epoch e are drawn after
    the order and the flips from the same generator, so a resumed run sees the same batches.
    """

    def __init__(self, *args, shift_pixels=0, **kwargs):
        self.shift_pixels = shift_pixels
        super().__init__(*args, **kwargs)

    def _draw(self):
        super()._draw()
        reach = self.shift_pixels
        self.shifts = self.rng.integers(-reach, reach + 1, size=(len(self.x), 2)) if reach else None

    def __getitem__(self, index):
        xb, yb = super().__getitem__(index)
        if self.shifts is None:
            return xb, yb
        shifts = self.shifts[self.rows(index)]
        return shift_batch(xb, shifts), shift_batch(yb, shifts)
