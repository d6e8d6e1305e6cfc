"""How many threads torch computes with on the CPU: chosen for the load the machine has.

torch starts with one intra-op thread per core. On a quiet machine two threads train a
2x256 LSTM about 1.6 times as fast as one; beside one busy process on a 2-core machine
they train it 4 to 100 times slower than one thread would, because every parallel
region waits for the thread the busy process has pushed off its core. So the count is
measured, not assumed:

- ``choose`` times the work itself (a training step, a chunk of a validation pass, a
  sampling step) with each candidate count, in alternating rounds, and keeps the
  fastest; fewer threads win a near tie.
- ``Tuner`` re-checks during a long run from the real steps' times: now and then it
  trains a few steps with another count and keeps that one if its steps are faster;
  a trial step far slower than the current steps ends the trial at once. When the
  current count's steps slow down (another job started), the next trial comes sooner.

``--threads N`` (config ``train.threads``) fixes the count, and so does the
``OMP_NUM_THREADS`` environment variable when no count is given. On a GPU the count
does not matter and is left as it is.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

NEAR_TIE = 1.03   # a count with more threads must be at least 3% faster to be chosen
DROP = 3.0        # a count this many times slower than the best so far is not timed again
FIRST_DROP = 9.0  # the same for a count's first call, which also starts its threads
MOST = 4096


def available() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def candidates(cpus: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the CPUs this process may use, and that number itself."""
    cpus = cpus or available()
    counts, n = [], 1
    while n < cpus:
        counts.append(n)
        n *= 2
    return counts + [cpus]


@dataclass
class Choice:
    """The thread count a command computes with, and why."""
    threads: int
    how: str                                   # "probe", "--threads" or "OMP_NUM_THREADS"
    timings: dict[int, float] = field(default_factory=dict)   # count -> seconds of the work

    def describe(self) -> str:
        if self.how != "probe":
            return f"{self.threads} ({self.how})"
        each = ", ".join(f"{n}: {s * 1e3:.1f} ms" for n, s in sorted(self.timings.items()))
        return f"{self.threads} (per call, timed: {each})"


def fixed(requested: int) -> Choice | None:
    """The count a user fixed: ``requested`` > 0, else OMP_NUM_THREADS (its first
    number: "2,1" gives nested levels, the outer one is ours), at most ``MOST``; None:
    choose. A value that is not a positive number fixes nothing, as for OpenMP."""
    if requested > 0:
        return Choice(min(requested, MOST), "--threads")
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if re.fullmatch(r"[0-9]+", first) and int(first) > 0:
        return Choice(min(int(first), MOST), "OMP_NUM_THREADS")
    return None


def pick(requested: int, device_type: str, work: Callable[[], object], **kw) -> Choice:
    """The count to compute ``work`` with: the one fixed (``fixed``), torch's own on a
    GPU, else the fastest by ``choose``; it is set before returning."""
    chosen = fixed(requested)
    if chosen is not None:
        set_threads(chosen.threads)
        return chosen
    if device_type != "cpu":
        import torch

        return Choice(torch.get_num_threads(), "its default on a GPU run")
    return choose(work, **kw)


def current() -> int:
    import torch

    return torch.get_num_threads()


def set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def choose(work: Callable[[], object], counts: list[int] | None = None, *, rounds: int = 3,
           limit_s: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> Choice:
    """Time ``work`` with each thread count and set the fastest by the median.

    Each count has one untimed call first (its threads start, the caches fill), then
    ``rounds`` alternating rounds time one call each, fewer once ``limit_s`` is spent.
    A count whose call takes ``DROP`` times the best so far (``FIRST_DROP`` for the
    untimed call) is dropped at once: beside a busy process, more threads can be tens
    of times slower, and one call shows it.
    A count with more threads has to be ``NEAR_TIE`` faster to be chosen."""
    counts = counts or candidates()
    times: dict[int, list[float]] = {n: [] for n in counts}
    dropped: set[int] = set()
    start = clock()

    def timed(n: int) -> float:
        set_threads(n)
        t = clock()
        work()
        return clock() - t

    def best() -> float:
        return min((min(ts) for ts in times.values() if ts), default=float("inf"))

    for r in range(rounds):
        for n in counts if r % 2 == 0 else counts[::-1]:
            if n in dropped:
                continue
            if not times[n] and (first := timed(n)) > FIRST_DROP * best():  # untimed call
                times[n].append(first)
                dropped.add(n)
                continue
            seconds = timed(n)
            times[n].append(seconds)
            if seconds > DROP * best():
                dropped.add(n)
        if clock() - start > limit_s:
            break
    timings = {n: statistics.median(ts) for n, ts in times.items() if ts}
    chosen = min(timings)
    for n in sorted(timings):
        if timings[n] * NEAR_TIE < timings[chosen]:
            chosen = n
    set_threads(chosen)
    return Choice(chosen, "probe", timings)


class Tuner:
    """Re-checks the thread count from the times of real steps (see the module doc).

    ``step_done(seconds)`` after each step; it sets a new count itself when one wins.
    The first trial comes ``FIRST`` seconds in; each trial that loses doubles the wait
    before the next (up to ``LONGEST``); a win, or steps grown ``SLOWER`` times slower
    than when the count was chosen, brings the next trial forward."""
    FIRST, LONGEST = 10.0, 160.0
    TRIAL_STEPS = 4      # timed steps with the other count (after one to warm up)
    SLOWER = 1.3
    ABORT = 2.0          # a trial step this many times the current median ends the trial
                         # (twice that for the first, which grows the thread pool)

    def __init__(self, choice: Choice, counts: list[int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts = counts or candidates()
        self.current, self.clock = choice.threads, clock
        self.recent: deque[float] = deque(maxlen=9)     # steps with the current count
        self.reference: float | None = None            # their median when it was chosen
        self.wait = self.FIRST
        self.next_trial = clock() + self.wait
        self.trial: tuple[int, list[float]] | None = None
        self.switches = 0
        self.trials = 0

    def _others(self) -> list[int]:
        i = self.counts.index(self.current) if self.current in self.counts else 0
        return [self.counts[j] for j in (i - 1, i + 1) if 0 <= j < len(self.counts)]

    def step_done(self, seconds: float, may_try: bool = True) -> None:
        """A step with the current count took ``seconds``. ``may_try``: False near the
        end of a time budget, where a slow trial step could overrun it."""
        if self.trial is not None:
            self._trial_step(seconds)
            return
        self.recent.append(seconds)
        if len(self.recent) < 5:
            return
        median = statistics.median(self.recent)
        if self.reference is None:
            self.reference = median
        elif median > self.SLOWER * self.reference:    # the load changed: look again soon
            self.reference, self.wait = median, self.FIRST
            self.next_trial = min(self.next_trial, self.clock())
        others = self._others()
        if others and may_try and self.clock() >= self.next_trial:
            self.trials += 1
            other = others[self.trials % len(others)]
            self.trial = (other, [])
            set_threads(other)

    def _trial_step(self, seconds: float) -> None:
        other, times = self.trial
        times.append(seconds)
        baseline = statistics.median(self.recent)
        if seconds > self.ABORT * baseline * (2 if len(times) == 1 else 1):
            self._end_trial(won=False)
        elif len(times) > self.TRIAL_STEPS:      # the first step warmed the pool up
            self._end_trial(won=statistics.median(times[1:]) * NEAR_TIE < baseline)

    def settle(self) -> None:
        """End a trial without a verdict (before a validation pass or a sample, which
        must not run with a count that may be the slow one)."""
        if self.trial is not None:
            self.trial = None
            set_threads(self.current)
            self.next_trial = self.clock() + self.wait

    def _end_trial(self, won: bool) -> None:
        other, times = self.trial
        self.trial = None
        if won:
            self.current, self.switches = other, self.switches + 1
            self.recent = deque(times[1:], maxlen=self.recent.maxlen)
            self.reference, self.wait = None, self.FIRST
        else:
            set_threads(self.current)
            self.wait = min(2 * self.wait, self.LONGEST)
        self.next_trial = self.clock() + self.wait
