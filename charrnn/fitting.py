"""Fitting a run to the machine before its first step: the CPU thread count
(``charrnn.threads``) and, with ``--size auto``, the model's shape (``charrnn.sizing``),
both from timed training steps. The timing changes no weights of the run and no random
numbers it will draw."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charrnn import sizing, threads
from charrnn.config import ModelConfig, TrainConfig
from charrnn.device import autocast
from charrnn.model import CharRNN, parameter_count


@dataclass
class Fit:
    model_config: ModelConfig          # the shape chosen, or the one given
    threads: threads.Choice
    sizing: sizing.Sizing | None       # what --size auto timed and chose
    tuner: threads.Tuner | None        # re-checks the count as the run goes


def fit(model_config: ModelConfig, c: TrainConfig, *, vocab_size: int, device: torch.device,
        dtype: str, rows: int, free: frozenset[str], choose_size: bool, seconds: float,
        train_chars: int, val_chars: int) -> Fit:
    """The thread count by timing a short step with each (unless one is fixed); with
    ``choose_size``, the shape by timing candidates with that count, for ``seconds`` of
    budget left, and then the count again for the model chosen. ``rows``: of a batch,
    this process's."""
    def work(config: ModelConfig, short: bool = False) -> Callable[[], None]:
        """A step of the model, or of an 8-character window (``short``): enough to rank
        thread counts, and cheap when one of them is many times slower."""
        model = CharRNN(vocab_size, config).to(device)
        x = window[:, :9] if short else window
        return lambda: forward_backward(model, x, device, dtype)

    def time_step(config: ModelConfig) -> float:
        """The fastest of three steps after two to warm up (a new shape's first calls
        build its kernels: one warm-up left the times of one shape 2x apart)."""
        step = work(config)
        step()
        step()
        return min(timed(step, device) for _ in range(3))

    chosen = None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        window = torch.randint(vocab_size, (rows, c.seq_length + 1), device=device)
        if choose_size:   # the threads for a middling candidate, then for the one chosen
            shapes = sizing.candidates(model_config, set(free))
            first = shapes[len(shapes) // 2]
        else:
            first = model_config
        count = threads.pick(c.threads, device.type, work(first, short=True))
        if choose_size:
            chosen = sizing.choose(
                model_config, set(free), time_step,
                lambda m: parameter_count(vocab_size, m), seconds=seconds,
                train_chars=train_chars, chars_per_step=c.seq_length * c.batch_size,
                eval_steps=val_chars / (c.seq_length * c.batch_size) / 3)
            model_config = chosen.model
            if count.how == "probe":
                count = threads.choose(work(model_config, short=True))
    return Fit(model_config, count, chosen,
               threads.Tuner(count) if count.how == "probe" else None)


def synced(device: torch.device) -> float:
    """The time, once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


def timed(work: Callable[[], object], device: torch.device) -> float:
    start = synced(device)
    work()
    return synced(device) - start


def forward_backward(model: CharRNN, window: torch.Tensor, device: torch.device,
                     dtype: str) -> None:
    """A training step's forward and backward on ``window`` (B, T + 1), for timing: the
    gradients it leaves are the caller's to drop."""
    with autocast(device, dtype):
        logits, _ = model(window[:, :-1])                                   # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten())
    loss.backward()
