"""Time budgets (--max-time): what a run reserves, that it ends within its budget on a
machine of any speed, that one too short is refused before training, and what a busy
neighbour changes.

Whether a budget holds is checked on the run's own clock: ``charrnn.train`` reads the
time through its module's ``time``, which these tests replace with an imagined machine
where the real work takes no time and a step, a validation pass and a save cost what the
test says. The run measures those costs as it would on a real machine, so the checks are
exact and hold however busy the machine running the suite is. The whole command's wall
time beside other work is a benchmark's figure (``benchmarks/budget.py``), not a test's."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch.nn.functional as F

from charrnn import budget, fitting
from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint
from charrnn.errors import ConfigError
from charrnn.train import train

from helpers import child_env, tiny_configs


class ImaginedMachine:
    """The clock ``charrnn.train``, ``charrnn.budget`` and ``charrnn.fitting`` read.
    Each forward-and-loss of a training step (the probe's too) costs ``step(n)``
    seconds for the n-th one (from 0), each validated character ``per_char``, each
    checkpoint written ``save``; nothing else takes time."""

    def __init__(self, monkeypatch, *, step, per_char: float, save: float) -> None:
        self.now, self.losses = 1_000_000.0, 0
        self.step = step if callable(step) else (lambda n: step)
        self.per_char, self.save = per_char, save
        for module in (train_module, fitting, budget):   # the probe's timed steps and save
            monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: self.now))
        for module in (train_module, fitting):
            monkeypatch.setattr(module, "F", SimpleNamespace(cross_entropy=self._loss))
        monkeypatch.setattr(train_module, "nats_sum", self._nats_sum)
        monkeypatch.setattr(train_module, "save_checkpoint", self._save_checkpoint)

    def _loss(self, *args, **kwargs):
        self.now += self.step(self.losses)
        self.losses += 1
        return F.cross_entropy(*args, **kwargs)

    def _nats_sum(self, *args, on_chunk=None, **kwargs):
        def chunk(scored: int) -> None:
            self.now += self.per_char * scored
            if on_chunk is not None:
                on_chunk(scored)
        return self._real_nats_sum(*args, on_chunk=chunk, **kwargs)

    def _save_checkpoint(self, *args, **kwargs):
        self.now += self.save
        return self._real_save_checkpoint(*args, **kwargs)

    _real_nats_sum = staticmethod(train_module.nats_sum)
    _real_save_checkpoint = staticmethod(train_module.save_checkpoint)


PROBE_LOSSES = 2   # the probe before the first step runs a step's forward and loss twice


def budget_run(machine: ImaginedMachine, small_text, tmp_path, *, budget: float,
               start_up: float, **train_overrides):
    """``train`` with ``--max-time budget`` on ``machine``, begun ``start_up`` seconds
    after the process started; (the result, the seconds the whole process took)."""
    model, config = tiny_configs(max_steps=None, max_time=budget, out=str(tmp_path / "run"),
                                 **{"eval_every": 100_000, **train_overrides})
    process_start = machine.now - start_up
    result = train(small_text, model, config, progress=False, start_time=process_start)
    return result, machine.now - process_start


# 6,000 validated characters (the last tenth of the 60,000 of small_text).
@pytest.mark.parametrize("start_up, step, per_char, budget", [
    (1.0, 0.5, 5e-4, 20.0),     # 3 s passes, 0.5 s steps
    (8.0, 0.5, 5e-4, 20.0),     # a slow start-up counts against the budget
    (1.0, 1.5, 2e-3, 60.0),     # a slow machine: 12 s passes, 1.5 s steps
    (0.5, 0.2, 0.0, 5.0),       # a pass that costs nothing: only steps and saves
])
def test_a_time_budget_ends_within_it_and_uses_it(start_up, step, per_char, budget,
                                                   small_text, tmp_path, monkeypatch):
    """The run ends within its budget, counted from the process's start, and wastes
    at most what it had to keep free: the next step and the final validation and saves
    (with the margins the reserve adds), and one step more."""
    machine = ImaginedMachine(monkeypatch, step=step, per_char=per_char, save=0.02)
    result, spent = budget_run(machine, small_text, tmp_path, budget=budget,
                               start_up=start_up)
    final = 6_000 * per_char + 2 * 0.02                 # the last pass and its two saves
    assert spent <= budget
    assert spent >= budget - (1.2 * step + 0.25 * final + 0.15) - step, (spent, result.step)
    assert result.step == machine.losses - PROBE_LOSSES
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == result.step


def test_the_reserve_follows_steps_that_slow_down(small_text, tmp_path, monkeypatch):
    """The first 10 steps take 0.5 s, then a neighbour takes the core and each takes 3 s:
    the reserve follows the steps as timed, so the run still ends within the budget."""
    machine = ImaginedMachine(monkeypatch, step=lambda n: 0.5 if n < 10 + PROBE_LOSSES else 3.0,
                              per_char=1e-4, save=0.02)
    result, spent = budget_run(machine, small_text, tmp_path, budget=40.0, start_up=1.0)
    assert result.step > 10 and spent <= 40.0


def test_evaluations_during_the_run_are_paid_from_the_budget(small_text, tmp_path,
                                                              monkeypatch):
    """A 3 s validation every 4 steps of 0.5 s: the run's time goes to both and still
    ends within the budget, each evaluation a metrics row."""
    machine = ImaginedMachine(monkeypatch, step=0.5, per_char=5e-4, save=0.02)
    result, spent = budget_run(machine, small_text, tmp_path, budget=30.0, start_up=1.0,
                               eval_every=4)
    rows = load_checkpoint(tmp_path / "run" / "last.pt")["metrics"]
    assert 27.0 <= spent <= 30.0
    # 4 steps (2 s) and a pass with its saves (3.04 s) take 5.04 s: about five rounds.
    assert [r["step"] for r in rows[:-1]] == [4 * k for k in range(1, len(rows))]
    assert 4 <= len(rows) <= 6 and rows[-1]["step"] == result.step


@pytest.mark.parametrize("spent", [0.9, 5.0])
def test_a_budget_too_short_for_one_step_and_the_final_pass_is_refused_before_training(
        spent, small_text, tmp_path):
    """The budget is 1 s; the process started 0.9 s or 5 s ago (a slow start-up). The
    message counts those seconds and what reading the text and building the model took."""
    model, config = tiny_configs(max_steps=None, max_time=1.0, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"^--max-time 1 leaves no time to train: (\d+\.\d)s "
                                          r"are spent .* give --max-time (\d+) or more") as e:
        train(small_text, model, config, progress=False, start_time=time.time() - spent)
    found = re.match(r".*: (\d+\.\d)s .* --max-time (\d+) ", str(e.value))
    said = float(found.group(1))
    assert spent - 0.05 <= said < spent + 30 and int(found.group(2)) > said
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("step, per_char", [
    (0.5, 1e-3),    # the final pass (6 s) does not fit
    (6.0, 1e-4),    # the pass (0.6 s) fits, a step does not
])
def test_the_refusal_names_a_budget_that_then_trains(step, per_char, small_text, tmp_path,
                                                     monkeypatch):
    """On the imagined machine a step and the final pass do not fit 5 s: the run is
    refused before training; the budget the message names fits them, and trains."""
    machine = ImaginedMachine(monkeypatch, step=step, per_char=per_char, save=0.02)
    with pytest.raises(ConfigError, match=r"give --max-time (\d+) or more") as e:
        budget_run(machine, small_text, tmp_path, budget=5.0, start_up=1.0)
    named = int(re.search(r"give --max-time (\d+) or more", str(e.value)).group(1))
    assert not (tmp_path / "run").exists()
    result, spent = budget_run(machine, small_text, tmp_path, budget=named, start_up=1.0)
    assert result.step >= 1 and spent <= named


def test_a_budget_that_holds_one_step_trains_it(small_text, tmp_path, monkeypatch):
    """The check before training found room for one step; the clock then moved on past
    the budget (a slow save of config.toml, say): the step is still taken."""
    model, config = tiny_configs(max_steps=None, max_time=30.0, eval_every=1000,
                                 out=str(tmp_path / "run"))
    real = train_module.files.prepare_run_dir

    def slow_prepare(*args, **kwargs):
        real(*args, **kwargs)
        monkeypatch.setattr(train_module.RunState, "elapsed", lambda self: 31.0)
    monkeypatch.setattr(train_module.files, "prepare_run_dir", slow_prepare)
    result = train(small_text, model, config, progress=False)
    assert result.step == 1 and load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1


def test_the_reserve_follows_the_passes_actually_timed():
    reserve = budget.Reserve(step=0.5, score=2.0, save=0.1)
    assert reserve.seconds() == pytest.approx(0.5 + 1.25 * 2.0 + 0.2)
    reserve.steps.extend([0.2, 0.9, 0.3])
    reserve.evaluated(score=4.0, save=0.3)
    assert reserve.seconds() == pytest.approx(0.9 + 1.1 * 4.0 + 0.6)
    assert math.isclose(max(reserve.steps), 0.9)


def test_when_the_steps_slow_down_the_reserve_expects_a_slower_pass():
    reserve = budget.Reserve(step=0.1, score=2.0, save=0.0)
    reserve.steps.extend([0.1] * 7)
    assert reserve.seconds() == pytest.approx(0.1 + 1.25 * 2.0)
    reserve.steps.extend([0.3] * 8)        # another job took a core: steps 3x slower
    assert reserve.seconds() == pytest.approx(0.3 + 3 * 1.25 * 2.0)
    reserve.evaluated(score=6.0, save=0.0)  # a pass timed at that speed
    assert reserve.seconds() == pytest.approx(0.3 + 1.1 * 6.0)
    reserve.steps.extend([0.1] * 8)        # faster again: never less than the pass timed
    assert reserve.seconds() == pytest.approx(0.1 + 1.1 * 6.0)


def test_a_time_budget_beside_a_busy_process_trains_or_says_why(small_text, tmp_path):
    """The whole command, while another process keeps a core busy: it trains and saves
    at least one step, or says in one line that the budget cannot hold one and writes
    nothing. (How long it took is benchmarks/budget.py's figure.)"""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = tmp_path / "run"
        done = subprocess.run(
            [sys.executable, "-m", "charrnn", "train", str(small_text), "--out", str(out),
             "--max-time", "12", "--eval-every", "50", "--sample-every", "0", "-q",
             "--json"], env=child_env(), capture_output=True, text=True, timeout=300)
    finally:
        busy.kill()
        busy.wait()
    if done.returncode == 1:
        assert re.fullmatch(r"error: --max-time 12 leaves no time to train: .* give "
                            r"--max-time \d+ or more, .*\n", done.stderr), done.stderr
        assert not out.exists()
    else:
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["step"] >= 1 and result["elapsed_s"] > 0
        assert load_checkpoint(out / "last.pt")["step"] == result["step"]
