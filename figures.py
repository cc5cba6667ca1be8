"""Figures the notebooks draw with code that no notebook teaches: the UNet's diagram, the salt outline, the live training view.

``helpers`` re-exports them (and the two outline colours), so the notebooks only import ``helpers``. Colours are from the
Okabe-Ito palette, which readers with the common kinds of colour blindness can tell apart.
"""

from __future__ import annotations

import io
import time

import keras
import numpy as np
import pandas as pd

SALT_TRUE = "#E69F00"  # orange: the true salt boundary
SALT_PREDICTED = "#56B4E9"  # sky blue: the predicted one
"""The two outline colours every figure of the series uses (Okabe-Ito)."""


# 02_build_unet, *The head*
def plot_unet(model, input_size=112, ax=None):
    """Draw the UNet's U from the model itself: each level's block as a box labelled H×W×filters.

    ``model``: a UNet with the layer names of ``helpers.build_unet``; the filters
    are read from its layers, the sizes follow from ``input_size`` (halved at
    every level down). Down the left side the contracting
    path, the bottleneck at the bottom, up the right side the expanding
    path; dashed arrows are the skip connections. Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    depth = sum(1 for layer in model.layers if layer.name.endswith("_pool"))
    ax = ax or plt.subplots(figsize=(10, 5))[1]

    def box(name, level, x, y, label):
        size, channels = input_size // 2 ** level, model.get_layer(name).output.shape[-1]
        ax.add_patch(plt.Rectangle((x - 0.4, y - 0.3), 0.8, 0.6, facecolor="tab:orange", alpha=0.35,
                                   edgecolor="black"))
        ax.text(x, y + 0.05, label, ha="center", fontsize=9, weight="bold")
        ax.text(x, y - 0.18, f"{size}×{size}×{channels}", ha="center", fontsize=8)

    for level in range(depth):
        y = depth - level
        box(f"down{level + 1}_relu2", level, level, y, f"down {level + 1}")
        box(f"up{level + 1}_relu2", level, 2 * depth - level, y, f"up {level + 1}")
        ax.annotate("", xy=(2 * depth - level - 0.42, y), xytext=(level + 0.42, y),
                    arrowprops=dict(arrowstyle="->", linestyle="--", color="tab:blue"))
        ax.annotate("", xy=(level + 0.75, y - 0.7), xytext=(level + 0.2, y - 0.32),
                    arrowprops=dict(arrowstyle="->", color="gray"))
        ax.annotate("", xy=(2 * depth - level - 0.2, y - 0.32), xytext=(2 * depth - level - 0.75, y - 0.7),
                    arrowprops=dict(arrowstyle="->", color="gray"))
    box("bottleneck_relu2", depth, depth, 0, "bottleneck")
    ax.text(depth, depth + 0.15, "skip connections (concatenated)", ha="center", color="tab:blue", fontsize=9)
    ax.text(0.6, 0.4, "max pool\n(halves H, W)", fontsize=8, color="gray")
    ax.text(2 * depth - 1.4, 0.4, "transposed conv\n(doubles H, W)", fontsize=8, color="gray")
    ax.set(xlim=(-0.7, 2 * depth + 0.7), ylim=(-0.6, depth + 0.5))
    ax.axis("off")
    return ax


# 01_explore_data, *What salt looks like* (and the figures after it)
def draw_salt(ax, mask, colour=SALT_TRUE):
    """Shade a (H, W) bool mask's salt lightly on ``ax`` and outline its boundary, both in ``colour``.

    The shading says which side of the line is salt; a mask that is all salt or empty has no line.
    """
    from matplotlib.colors import ListedColormap

    mask = np.asarray(mask, bool)
    ax.imshow(np.ma.masked_where(~mask, np.ones(mask.shape)), cmap=ListedColormap([colour]), alpha=0.3, vmin=0, vmax=1)
    if mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=colour, linewidths=1.5)


def _notebook_display():
    """IPython's ``display`` when running in a notebook kernel (JupyterLab, Colab, papermill), else None."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    shell = get_ipython()
    return display if shell is not None and hasattr(shell, "kernel") else None


# 03_train, *The view* (stage 1's callbacks, and stage 2's)
class TrainingView(keras.callbacks.Callback):
    """A figure redrawn after every epoch: the losses, the learning rate and one validation slice's prediction.

    ``image``: one (H, W) uint8 validation slice; ``mask``: its (H, W) bool truth; ``predict``:
    ``predict(model, images)`` -> probabilities (``helpers.predict_salt``). The learning rate is read
    from the epoch's logs, where ReduceLROnPlateau puts it: the view must come after it in the list
    (``helpers.make_callbacks`` puts extra callbacks there). In a notebook (JupyterLab, Colab, a
    ``make run`` through papermill) the figure replaces itself, so a saved notebook keeps the last
    one; outside a notebook nothing is drawn. When training ends it prints a short table of the
    epochs (the first, every few, each learning-rate cut, the best, the last) and what the view
    cost. It predicts one slice in inference mode and draws with matplotlib: it changes no weight
    and draws no random number. ``seconds`` holds each redraw's duration, ``epoch_seconds`` each
    epoch's (training and validation, without the redraw).
    """

    def __init__(self, image, mask, predict, title="Training", table_rows=8):
        super().__init__()
        self.image, self.mask, self.predict, self.title = np.asarray(image), np.asarray(mask), predict, title
        self.table_rows = table_rows
        self.rows, self.seconds, self.epoch_seconds = [], [], []
        self._display, self._handle = _notebook_display(), None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        begun = time.perf_counter()
        self.epoch_seconds.append(begun - self._started)
        logs = logs or {}
        self.rows.append({"epoch": epoch + 1, "loss": logs.get("loss", np.nan), "val_loss": logs.get("val_loss", np.nan),
                          "learning_rate": float(logs.get("learning_rate", np.nan)),
                          "minutes": sum(self.epoch_seconds) / 60})
        if self._display is not None:
            from IPython.display import Image

            picture = Image(data=self.draw(), format="png")
            if self._handle is None:
                self._handle = self._display(picture, display_id=True)
            else:
                self._handle.update(picture)
        self.seconds.append(time.perf_counter() - begun)

    def draw(self) -> bytes:
        """The view as PNG bytes: losses, learning rate, the slice with its truth, the predicted probability."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        table = pd.DataFrame(self.rows)
        probability = self.predict(self.model, self.image[None])[0]
        fig = Figure(figsize=(15, 3.3))
        loss_ax, rate_ax, slice_ax, prob_ax = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1.4, 1.1, 1, 1.2]})
        loss_ax.plot(table["epoch"], table["loss"], marker=".", color="#0072B2", label="training (raw weights)")
        loss_ax.plot(table["epoch"], table["val_loss"], marker=".", color="#D55E00", label="validation")
        loss_ax.set(title=f"{self.title}: loss", xlabel="epoch")
        loss_ax.legend(fontsize=8)
        rate_ax.plot(table["epoch"], table["learning_rate"], marker=".", color="gray")
        rate_ax.set(title="learning rate", xlabel="epoch", yscale="log")
        for ax in (loss_ax, rate_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax, picture, name in ((slice_ax, self.image, "validation slice"), (prob_ax, probability, "")):
            shown = ax.imshow(picture, cmap="gray" if ax is slice_ax else "viridis", vmin=0,
                              vmax=255 if ax is slice_ax else 1)
            if self.mask.any() and not self.mask.all():
                ax.contour(self.mask, levels=[0.5], colors=SALT_TRUE, linewidths=1.2)
            ax.set_title(name or f"salt probability, epoch {int(table['epoch'].iloc[-1])}", fontsize=10)
            ax.axis("off")
        fig.colorbar(shown, ax=prob_ax, fraction=0.046, pad=0.04)
        slice_ax.text(0.5, -0.08, "orange line: the true salt boundary", transform=slice_ax.transAxes,
                      ha="center", va="top", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=72)
        return buffer.getvalue()

    def summary(self) -> pd.DataFrame:
        """The short table: the first epoch, every few, each learning-rate cut, the best and the last."""
        table = pd.DataFrame(self.rows)
        if table.empty:
            return table
        cut = table["learning_rate"].shift(-1) < table["learning_rate"] * 0.999
        step = max(1, int(np.ceil(len(table) / self.table_rows)))
        best = table["val_loss"].idxmin() if table["val_loss"].notna().any() else None  # None: every epoch diverged
        keep = (table.index % step == 0) | cut | (table.index == best) | (table.index == len(table) - 1)
        shown = table[keep].copy()
        shown["note"] = np.where(shown.index == best, "best val_loss", "")
        shown.loc[cut[keep], "note"] = (shown["note"] + " rate cut next").str.strip()
        return shown.round({"loss": 4, "val_loss": 4, "minutes": 1})

    def on_train_end(self, logs=None):
        if not self.rows:
            return
        print(f"{self.title}, epochs of this stage (the first, every few, each learning-rate cut, the best, the last):")
        print(self.summary().to_string(index=False, formatters={"learning_rate": "{:.0e}".format}))
        print(self.cost())

    def cost(self) -> str:
        """What the view cost: its mean redraw time against the mean epoch."""
        if self._display is None:
            return "The view drew nothing (no notebook)."
        draw, epoch = np.mean(self.seconds), np.mean(self.epoch_seconds)
        return (f"The view: {draw:.2f} s per redraw (at most {max(self.seconds):.2f} s), {draw / epoch:.1%} of a "
                f"{epoch:.0f}-second epoch")
