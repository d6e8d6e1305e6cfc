"""``--size auto``: the model this machine can train best in the time a run is given.

A time budget buys a number of characters read: the steps this machine takes in it
(timed, in the precision and with the threads the run will train with) times the
characters of a step. A small model given many stops improving long before its budget
ends; a large one given few has not started learning. So the rule: of the candidate
shapes, take the one with the most parameters that still reads ``MIN_CHARS_PER_PARAM``
characters per parameter in the budget, or that reads its text ``MANY_PASSES`` times
and ``FEWEST_CHARS_PER_PARAM`` per parameter; when none does, the smallest. Then
dropout grows with the passes over the text the chosen model will make, and with its
parameters per character of the text, since a model that reads its text many times,
or has room to store it, memorises it. How the numbers were chosen is the comment
above them.

Everything the rule does not choose (batch and window, learning rate and schedule) is
the ``RECIPE`` below, which the sweep used for every row. Settings a user gives always
win: a given hidden size, depth or dropout narrows the candidates or fixes the value.
This module does not import torch: the caller supplies the timings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from charrnn.config import BIG_COUNT, ModelConfig, check_model
from charrnn.errors import ConfigError
from charrnn.reports import SizeChoice

# (layers, hidden size), cheapest first; the timed order decides in the end.
CANDIDATES = [(1, 128), (1, 192), (1, 256), (1, 320), (1, 384), (1, 448), (1, 512),
              (1, 640), (1, 768), (1, 1024), (2, 768), (2, 1024), (2, 1536)]
WIDTHS = sorted({h for _, h in CANDIDATES})     # for a depth the user fixed
DEPTHS = (1, 2)                                 # for a width the user fixed
# The rest of the run, as the sweep trained every row: short windows carried as streams,
# a high peak rate decayed in a straight line to zero, one validation at the end.
RECIPE = {"seq_length": 32, "batch_size": 32, "batching": "stream", "lr": 8e-3,
          "decay": "linear", "min_lr_ratio": 0.0, "warmup_steps": 100,
          "eval_every": BIG_COUNT}
SHAPE_KEYS = ("hidden_size", "num_layers", "dropout")

# How the numbers were chosen (BENCHMARKS.md, "Sizing for the budget"): a sweep of 8
# fixed shapes at 60 and 120 s, on two corpora (tiny-shakespeare, Python source code)
# and two speeds of processor. Fitted through each setting's three best shapes, the loss
# is lowest at about 4 characters per parameter on tiny-shakespeare and about 8 on the
# code; shapes reading 2.3 or fewer came 0.007 to 0.03 behind the best, and so did the
# smallest shapes reading 13 or more. Consecutive candidates differ about twofold in
# what they read per parameter, so the threshold 4 picks one reading between 4 and 8.
# One wide layer beat two narrower ones of the same cost (1x384 against 2x256) in four
# settings of six, and in the other two the smallest one-layer shape was at least as
# good as both, so the candidates are one layer up to widths a few minutes of a 2-core
# machine cannot use, then two layers.
#
# At ten minutes on tiny-shakespeare the text, not the time, runs short (the 600 s
# rows): with one thread the best shapes read 2 to 4 characters per parameter and the
# 1 MB text 5 to 7 times; with two, 1x1024 with dropout 0.25 read 0.95 per parameter and
# the text 4.3 times and came within 0.01 of the fixed 10-minute preset (2x512: 1.5 per
# parameter, 4.9 passes), where the 4-per-parameter rule's 1x640 and 1x768 read the text
# 9 to 15 times and came 0.02 to 0.03 behind; every shape that read it 15 times or more
# came 0.05 or more behind. So a shape that reads the text MANY_PASSES times is trained
# enough at FEWEST_CHARS_PER_PARAM per parameter (a floor that keeps a short text read
# hundreds of times from choosing the largest shape). Dropout: 0.25 beat 0.15 by 0.012
# for 1x640 at 6.6 passes (1.8 parameters per character of the text); no dropout beat
# 0.1 for 1x384 at two minutes (3.8 passes, 0.7 per character). So it is 0.06 for each
# pass beyond three, or 0.25 from 1.5 parameters per character down to none at 0.75,
# whichever is more, at most 0.25 (``dropout_for``). A later 600 s sweep of 8 shapes on
# the slow kind (float32, one thread) agrees: 1x640, 1x768 and 1x1024 with dropout 0.25,
# reading the text 2 to 5 times, ended within 0.004 of each other, shapes reading it 9
# times or more 0.02 to 0.08 behind, and the rule's 1x768 within 0.002 of the best.
MIN_CHARS_PER_PARAM = 4.0
MANY_PASSES = 4.0
FEWEST_CHARS_PER_PARAM = 0.8
# Step time of a real training step (data, clipping, optimiser, bookkeeping) over the
# timed forward and backward of the probe.
STEP_OVERHEAD = 1.15
PROBE_SHARE = 0.03       # of the budget, at most, spent timing candidates
DRIFT = 1.5              # the first candidate timed again this much off: time them again


def dropout_for(passes: float, params_per_char: float) -> float:
    """Dropout for a model that will read its training text ``passes`` times and has
    ``params_per_char`` parameters per character of it: 0.06 for each pass beyond three,
    or 0.25 times how far it is from 0.75 to 1.5 parameters per character, whichever
    is more; at most 0.25."""
    by_passes = 0.06 * (passes - 3.0)
    by_room = 0.25 * (params_per_char - 0.75) / 0.75
    return round(min(0.25, max(0.0, by_passes, by_room)), 2)


@dataclass
class Timed:
    """One candidate's timing and what it predicts for the budget."""
    layers: int
    hidden: int
    step_s: float
    params: int
    steps: int = 0
    passes: float = 0.0
    chars_per_param: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.layers}x{self.hidden}"

    @property
    def enough(self) -> bool:
        """Whether the budget trains this shape enough: it reads
        ``MIN_CHARS_PER_PARAM`` per parameter, or its text ``MANY_PASSES`` times and
        ``FEWEST_CHARS_PER_PARAM`` per parameter."""
        return (self.chars_per_param >= MIN_CHARS_PER_PARAM
                or (self.passes >= MANY_PASSES
                    and self.chars_per_param >= FEWEST_CHARS_PER_PARAM))


@dataclass
class Sizing:
    """The shape ``choose`` found, the candidates it timed, and why."""
    model: ModelConfig
    chosen: Timed
    timed: list[Timed]
    seconds: float            # of training the prediction counted on
    dropout_chosen: bool = True

    def reason(self) -> str:
        c = self.chosen
        others = ", ".join(f"{t.name} {t.step_s * 1e3:.0f} ms" for t in self.timed)
        dropout = (f"dropout {self.model.dropout:g} for that many passes and "
                   f"{c.passes / c.chars_per_param:.2g} parameters per character of the text"
                   if self.dropout_chosen
                   else f"dropout {self.model.dropout:g} as given")
        why = (f"the largest model with {MIN_CHARS_PER_PARAM:g} or more"
               if c.chars_per_param >= MIN_CHARS_PER_PARAM else
               f"the largest model that reads the text {MANY_PASSES:g} times or more "
               f"and {FEWEST_CHARS_PER_PARAM:g} characters per parameter"
               if c.enough else
               f"none reads {MIN_CHARS_PER_PARAM:g}, so the smallest")
        return (f"{c.name}: about {c.steps:,} steps, {c.passes:.1f} passes over the text, "
                f"{c.chars_per_param:.1f} characters per parameter in {self.seconds:.0f} s "
                f"({why}; {dropout}); step times: {others}")

    def to_dict(self) -> SizeChoice:
        return {"chosen": self.chosen.name, "steps": self.chosen.steps,
                "passes": round(self.chosen.passes, 2),
                "chars_per_param": round(self.chosen.chars_per_param, 2),
                "seconds": round(self.seconds, 1),
                "timed": {t.name: round(t.step_s, 5) for t in self.timed}}


def candidates(given: ModelConfig, free: set[str]) -> list[ModelConfig]:
    """The shapes to time, smallest first: ``CANDIDATES`` when width and depth are both
    free; every width at a depth the user fixed; depth 1 and 2 at a width the user
    fixed; the given shape when both are fixed. Shapes that other given settings rule
    out (a ``proj_size`` as wide as the layer, tied weights of another width) are left
    out; when none is left, a one-line ``ConfigError`` says why."""
    if {"num_layers", "hidden_size"} <= free:
        pairs = CANDIDATES
    elif "hidden_size" in free:
        pairs = [(given.num_layers, h) for h in WIDTHS]
    elif "num_layers" in free:
        pairs = [(n, given.hidden_size) for n in DEPTHS]
    else:
        pairs = [(given.num_layers, given.hidden_size)]
    shapes, refusal = [], None
    for layers, hidden in pairs:
        shape = replace(given, num_layers=layers, hidden_size=hidden)
        try:
            check_model(shape)
        except ConfigError as e:
            refusal = refusal or e
            continue
        shapes.append(shape)
    if not shapes:
        raise ConfigError(f"--size auto found no candidate shape that the other settings "
                          f"allow; give --hidden-size too, or change what this says: {refusal}")
    return shapes


def choose(given: ModelConfig, free: set[str], time_step: Callable[[ModelConfig], float],
           count: Callable[[ModelConfig], int], *, seconds: float, chars_per_step: int,
           train_chars: int, eval_steps: float) -> Sizing:
    """The shape for a budget of ``seconds`` of training.

    ``time_step(config)`` times one training step of a model (seconds), ``count(config)``
    counts its parameters. Candidates are timed smallest first until one is not trained
    enough (``Timed.enough``; the larger ones only read less) or the timing itself has
    spent ``PROBE_SHARE`` of the budget. Then the first is timed again: when the two
    times differ by ``DRIFT`` or more, the machine's speed moved while it was timing
    (another process starting, say), and all of them are timed once more, each
    keeping its faster time. ``eval_steps``: the final validation, in training steps'
    worth of time (about a third of a step per window it scores)."""
    shapes = candidates(given, free)
    timed = _time(shapes, time_step, count, seconds, chars_per_step, train_chars,
                  eval_steps)
    again = max(time_step(shapes[0]), 1e-6)
    if max(again / timed[0].step_s, timed[0].step_s / again) >= DRIFT:
        first = {(t.layers, t.hidden): t.step_s for t in timed}
        timed = _time(shapes, lambda c: min(time_step(c), first.get(
            (c.num_layers, c.hidden_size), float("inf"))), count, seconds,
            chars_per_step, train_chars, eval_steps)
    enough = [t for t in timed if t.enough]
    chosen = (max(enough, key=lambda t: t.params) if enough
              else min(timed, key=lambda t: t.params))
    dropout = (given.dropout if "dropout" not in free else
               dropout_for(chosen.passes, chosen.passes / chosen.chars_per_param))
    model = replace(given, num_layers=chosen.layers, hidden_size=chosen.hidden,
                    dropout=dropout)
    return Sizing(model, chosen, timed, seconds, dropout_chosen="dropout" in free)


def _time(shapes: list[ModelConfig], time_step: Callable[[ModelConfig], float],
          count: Callable[[ModelConfig], int], seconds: float, chars_per_step: int,
          train_chars: int, eval_steps: float) -> list[Timed]:
    """The shapes timed smallest first, with what each predicts for the budget, up to
    the first the budget does not train enough (see ``choose``)."""
    timed: list[Timed] = []
    spent = 0.0
    for config in shapes:
        step_s = max(time_step(config), 1e-6)
        spent += 5 * step_s       # what timing it cost: 2 to warm up, 3 timed (fitting)
        t = Timed(config.num_layers, config.hidden_size, step_s, count(config))
        t.steps = max(1, int((seconds - spent) / (STEP_OVERHEAD * step_s) - eval_steps))
        t.passes = t.steps * chars_per_step / max(1, train_chars)
        t.chars_per_param = t.steps * chars_per_step / t.params
        timed.append(t)
        if not t.enough or spent > PROBE_SHARE * seconds:
            break
    return timed
