"""The budget of a run: ``--max-steps``, ``--epochs`` and ``--max-time`` as one progress
number (``Budget``), and what a time budget keeps free so that the run ends within it,
the final validation and saves included (``Reserve``, first measured by ``probe``).

The clock a time budget counts starts with the process (``charrnn.cli.runtime.STARTED``,
handed to ``train`` as ``start_time``), so start-up counts too; ``Run.progress`` adds
the reserve to the time spent, and a budget found to hold one step gets it.
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from charrnn import config as cfg
from charrnn.errors import ConfigError
from charrnn.fitting import forward_backward, synced, timed
from charrnn.scoring import Stopped


class Budget:
    """``--max-steps``, ``--epochs`` and ``--max-time`` as one number: the progress of
    the run from 0 to 1, the largest fraction of any of them used up."""

    def __init__(self, c: cfg.TrainConfig, steps_per_epoch: float) -> None:
        self.steps, self.epochs, self.seconds = c.budget_steps(), c.epochs, c.max_time
        limits = [self.steps] if self.steps else []
        if self.epochs:
            limits.append(math.ceil(self.epochs * steps_per_epoch))
        self.total_steps = min(limits) if limits else None  # None: a time budget only

    def progress(self, step: int, epoch: float, seconds: float) -> float:
        fractions = [step / self.steps if self.steps else 0.0,
                     epoch / self.epochs if self.epochs else 0.0]
        if self.seconds:
            fractions.append(seconds / self.seconds)
        return max(fractions)

    def __str__(self) -> str:
        parts = [f"{self.steps} steps" if self.steps else "",
                 f"{self.epochs:g} epochs" if self.epochs else "",
                 f"{self.seconds:g}s" if self.seconds else ""]
        return " or ".join(p for p in parts if p)


class Reserve:
    """The seconds a time budget keeps free: for the next step, and for the final
    evaluation (a validation pass and the saves of best.pt and last.pt). Measured on
    the warm model before the first step, then corrected as real steps and passes are
    timed, so that a run ends within its budget on a busy machine too: when the steps
    have become slower than they were when the pass was timed (another job took a
    core), the pass is expected to be that much slower too."""
    MARGIN = 1.25   # on the first estimate of a pass; 1.1 on a timed one

    def __init__(self, step: float, score: float, save: float) -> None:
        self.steps: deque[float] = deque([step], maxlen=8)   # the latest steps' seconds
        self.score, self.save = self.MARGIN * score, save
        self.step_then = step          # the step time when ``score`` was measured

    def evaluated(self, score: float, save: float) -> None:
        """A real pass took ``score`` seconds and each checkpoint ``save``."""
        self.score, self.save = 1.1 * score, save
        self.step_then = statistics.median(self.steps)

    def seconds(self) -> float:
        slower = max(1.0, statistics.median(self.steps) / max(self.step_then, 1e-6))
        return max(self.steps) + slower * self.score + 2 * self.save

    def check_fits(self, budget: float, before: float, elapsed: float) -> None:
        """A budget that earlier sessions have not spent, but that cannot hold this
        session's start-up, one step and the final evaluation, is refused before
        training (one that earlier sessions spent has nothing to train)."""
        need = self.seconds()
        if before < budget < elapsed + need:
            raise ConfigError(
                f"--max-time {budget:g} leaves no time to train: {elapsed:.1f}s are spent "
                f"(start-up and earlier sessions), one step takes about {max(self.steps):.2f}s "
                f"and the final validation about {self.score + 2 * self.save:.1f}s; give "
                f"--max-time {math.ceil(elapsed + need)} or more, or score fewer validation "
                "characters with --val-max-chars")


def probe(model: torch.nn.Module, device: torch.device, dtype: str, *, rows: int,
          seq_length: int, vocab_size: int, validate: Callable[..., Any], val_chars: int,
          checkpoint: Callable[[], dict[str, Any]]) -> tuple[float, float, float]:
    """Seconds of a training step, a validation pass and a checkpoint save, timed on the
    warm model without changing the weights, the batches or the random numbers: a
    step's forward and backward on random ids (rows x seq_length + 1) twice, the second
    timed; the first chunks of a pass (``validate(on_chunk, stop)``, scoring
    ``val_chars`` in all); ``checkpoint()`` written to memory. What a time budget keeps
    free."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        window = torch.randint(vocab_size, (rows, seq_length + 1), device=device)
        forward_backward(model, window, device, dtype)
        step = timed(lambda: forward_backward(model, window, device, dtype), device)
        model.zero_grad(set_to_none=True)
    marks, counts = [synced(device)], []

    def chunk(scored: int) -> None:
        marks.append(synced(device))
        counts.append(scored)
    try:
        validate(chunk, stop=lambda: len(marks) > 2)
        score = marks[-1] - marks[0]                      # the whole pass, it was short
    except Stopped:   # the first chunk (with the streams' context), then at the second's rate
        score = marks[1] - marks[0] + (val_chars - counts[0]) * (
            marks[2] - marks[1]) / counts[1]
    start = time.time()
    torch.save(checkpoint(), io.BytesIO())
    return 1.2 * step, score, 2 * (time.time() - start) + 0.05
