"""TensorBoard logging for ``train --tensorboard`` (``TrainConfig.tensorboard``).

At every evaluation the training loop hands the new metrics row to ``log_eval``, which
writes its numbers as scalars into an event file in the run folder, so

    tensorboard --logdir runs

shows every run's curves side by side. The writer comes from
``torch.utils.tensorboard``, which needs the ``tensorboard`` package: an optional
extra (``pip install 'charrnn-cli[tensorboard]'``); ``require()`` says so in one line.
"""

from __future__ import annotations

import atexit
import math
from pathlib import Path
from typing import Any

from charrnn.errors import ConfigError

# metrics.csv column -> TensorBoard tag
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_bpc": "val_bits_per_char",
        "lr": "lr", "chars_per_s": "chars_per_s", "epoch": "epoch"}

_writers: dict[Path, Any] = {}


def require() -> type:
    """The ``SummaryWriter`` class, or a one-line error saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install "
                          "'charrnn-cli[tensorboard]' (or drop --tensorboard)") from None
    return SummaryWriter


def log_eval(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Write one metrics row (``step`` plus the ``TAGS`` columns) to the run's events."""
    run_dir = Path(run_dir)
    writer = _writers.get(run_dir)
    if writer is None:
        writer = _writers[run_dir] = require()(log_dir=str(run_dir))
    step = int(row["step"])
    for column, tag in TAGS.items():
        value = row.get(column)
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(tag, value, step)
    writer.flush()


@atexit.register
def close_all() -> None:
    """Close every open event file (also called at exit)."""
    while _writers:
        _, writer = _writers.popitem()
        writer.close()
