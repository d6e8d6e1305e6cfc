"""The optimiser and the learning-rate schedule that training steps with."""

from __future__ import annotations

import math

import torch

from charrnn.config import TrainConfig
from charrnn.model import CharRNN

# Settings that shape the learning-rate schedule: a resume that changes one of them
# starts the decay afresh from where the run stands, instead of jumping along the old one.
SCHEDULE_SETTINGS = ("lr", "decay", "min_lr_ratio", "warmup_steps", "max_steps", "epochs",
                     "max_time")


def make_optimizer(model: CharRNN, c: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weight matrices only, never on biases or the embedding table."""
    embedding = model.embedding.weight
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not embedding]
    other = [p for p in model.parameters() if p.dim() < 2 or p is embedding]
    groups = [{"params": decay, "weight_decay": c.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    # The fused kernels update every tensor in one pass (about 4% of a CPU step saved
    # on a 1x384 LSTM, BENCHMARKS.md); same algorithm, same state dict.
    if c.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=c.lr, fused=True)
    if c.optimizer == "adam":  # L2 penalty in the gradient, as torch's Adam does it
        return torch.optim.Adam(groups, lr=c.lr, fused=True)
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=0.9)
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=c.lr)
    return torch.optim.Adagrad(groups, lr=c.lr)


def lr_at(step: int, progress: float, c: TrainConfig, start: float = 0.0,
          start_lr: float | None = None) -> float:
    """The learning rate of step ``step`` (0-based) at ``progress`` (0 -> 1) of the budget.

    Linear warmup over the first ``warmup_steps`` steps, reaching ``lr``; then a cosine
    (or a straight line) from ``start_lr`` (default ``lr``) down to ``lr * min_lr_ratio``,
    spread over the budget left after ``start``, the progress at which the decay began
    (the end of warmup; or where a resume with a new budget took the run up)."""
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    span = 1.0 - start
    done = min(max((progress - start) / span, 0.0), 1.0) if span > 0 else 1.0
    left = 0.5 * (1.0 + math.cos(math.pi * done)) if c.decay == "cosine" else 1.0 - done
    floor = c.lr * c.min_lr_ratio
    return floor + ((c.lr if start_lr is None else start_lr) - floor) * left
