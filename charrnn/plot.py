"""Loss curves from runs' ``metrics.csv``: train and val loss against steps and seconds.

    charrnn plot runs/a runs/b -o loss.png

One figure, two panels side by side (loss against optimiser steps, and against wall
time), every run in its own colour: validation loss as a solid line with a dot per
evaluation, the mean training loss since the previous evaluation dashed. matplotlib is
an optional extra (``pip install 'charrnn-cli[plot]'``), imported only when a plot is drawn,
and drawn without pyplot (no window, no global state).
"""

from __future__ import annotations

import math
from pathlib import Path

from charrnn.errors import CharRNNError
from charrnn.files import atomic_write, check_output

WIDTH, HEIGHT, DPI = 1200, 500, 100   # default image size in pixels, and pixels per inch
MAX_SIDE = 10_000                     # pixels: a larger image is a mistake, not a plot
FORMATS = ("png", "svg", "pdf")


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CharRNNError("plotting needs matplotlib, which is not installed: "
                           "pip install 'charrnn-cli[plot]'") from None
    return Figure


def plot_runs(runs: list[tuple[str, list[dict[str, float]]]], out: str | Path, *,
              width: int = WIDTH, height: int = HEIGHT, dpi: int = DPI,
              title: str | None = None) -> Path:
    """Draw ``runs`` (label, metrics rows) into the image file ``out`` (.png, .svg or
    .pdf), ``width`` x ``height`` pixels; the file is written whole or not at all."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise CharRNNError(f"cannot tell the image format of {out}; end the name with "
                           f"{', '.join('.' + f for f in FORMATS)}")
    if not (100 <= width <= MAX_SIDE and 100 <= height <= MAX_SIDE):
        raise CharRNNError(f"the image must be at least 100x100 pixels and at most "
                           f"{MAX_SIDE}x{MAX_SIDE}, got {width}x{height}")
    check_output(out, "--output")
    if not runs:
        raise CharRNNError("nothing to plot: give at least one run folder")
    for label, rows in runs:
        if not rows:
            raise CharRNNError(f"{label} has no evaluations yet (its metrics.csv has no rows); "
                               "plot it after its first evaluation")
    Figure = _figure_class()
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    longest = max(max(r.get("elapsed_s", math.nan) for r in rows) for _, rows in runs)
    minutes = math.isfinite(longest) and longest > 300
    for index, (label, rows) in enumerate(runs):
        color = f"C{index % 10}"
        steps = [r["step"] for r in rows]
        times = [r.get("elapsed_s", math.nan) / (60.0 if minutes else 1.0) for r in rows]
        val = [r["val_loss"] for r in rows]
        train = [r.get("train_loss", math.nan) for r in rows]
        for ax, xs in ((by_step, steps), (by_time, times)):
            ax.plot(xs, val, color=color, marker="o", markersize=3, label=label)
            ax.plot(xs, train, color=color, linestyle="--", alpha=0.7)
    by_step.set_xlabel("step")
    by_time.set_xlabel("minutes" if minutes else "seconds")
    by_step.set_ylabel("loss (nats/char)")
    for ax in (by_step, by_time):
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
    by_time.legend(fontsize="small", loc="upper right")
    fig.suptitle(title or "validation (solid) and training (dashed) loss")
    return _save(fig, out, fmt, dpi)


def _save(fig, out: Path, fmt: str, dpi: int) -> Path:
    with atomic_write(out, fix="choose another file with --output") as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return out
