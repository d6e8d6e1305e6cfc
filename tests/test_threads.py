"""The thread count: chosen by timing the work with each count, re-checked from the real
steps' times, fixed by --threads or OMP_NUM_THREADS. The work and the clock are
imagined here (a call costs what a table says for the current count), so that the
decisions are checked without depending on this machine's load."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn import threads
from helpers import run


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Imagined:
    """A clock that a call of ``work`` advances by the cost of the current count."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.cost, self.now, self.calls = cost, 0.0, {n: 0 for n in cost}

    def clock(self) -> float:
        return self.now

    def work(self) -> None:
        n = torch.get_num_threads()
        self.calls[n] += 1
        cost = self.cost[n]                     # seconds, or one per call in turn
        self.now += cost if isinstance(cost, float) else cost[self.calls[n] - 1]


@pytest.mark.parametrize("cost, expected", [
    ({1: 0.010, 2: 0.006}, 2),      # a quiet machine: two threads are faster
    ({1: 0.010, 2: 0.300}, 1),      # beside a busy process: two are many times slower
    ({1: 0.010, 2: 0.0099}, 1),     # a near tie goes to fewer threads
    ({1: 0.010, 2: 0.0095}, 2),     # 5% is not a tie
])
def test_the_fastest_count_is_chosen_and_set(cost, expected):
    m = Imagined(cost)
    choice = threads.choose(m.work, [1, 2], clock=m.clock)
    assert choice.threads == expected
    assert torch.get_num_threads() == expected
    assert choice.how == "probe"
    assert choice.timings[1] == pytest.approx(cost[1])


def test_a_count_many_times_slower_is_run_once_and_dropped():
    m = Imagined({1: 0.010, 2: 0.500})
    threads.choose(m.work, [1, 2], rounds=3, clock=m.clock)
    assert m.calls[2] == 1            # its first call showed it: not timed again
    assert m.calls[1] == 4            # one to warm up, three timed


def test_a_count_that_turns_slow_during_the_probe_is_dropped():
    m = Imagined({1: 0.010, 2: [0.006, 0.006, 0.500, 0.006, 0.006]})
    choice = threads.choose(m.work, [1, 2], rounds=3, clock=m.clock)
    assert m.calls[2] == 3 and choice.threads == 1


def test_the_probe_stops_once_its_time_is_spent():
    m = Imagined({1: 0.4, 2: 0.3})
    threads.choose(m.work, [1, 2], rounds=5, limit_s=1.0, clock=m.clock)
    assert m.calls[1] + m.calls[2] < 2 * (5 + 1)


def test_candidates_are_powers_of_two_and_the_cpus_given():
    assert threads.candidates(1) == [1]
    assert threads.candidates(2) == [1, 2]
    assert threads.candidates(6) == [1, 2, 4, 6]
    assert threads.candidates(16) == [1, 2, 4, 8, 16]


def test_a_count_is_fixed_by_the_flag_then_by_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert (threads.fixed(2).threads, threads.fixed(2).how) == (2, "--threads")
    assert (threads.fixed(0).threads, threads.fixed(0).how) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.fixed(0) is None
    for value, expected in (("", None), ("0", None), ("abc", None), ("\u00b2", None),
                            (" 4 ", 4), ("2,1", 2), ("100000", threads.MOST)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        chosen = threads.fixed(0)
        assert (chosen and chosen.threads) == expected, value


class Steps:
    """Feeds a Tuner steps whose seconds depend on the count torch has now, on an
    imagined clock."""

    def __init__(self, tuner: threads.Tuner, m: Imagined) -> None:
        self.tuner, self.m = tuner, m

    def run(self, n: int) -> list[int]:
        counts = []
        for _ in range(n):
            count = torch.get_num_threads()
            seconds = self.m.cost[count]
            self.m.now += seconds
            counts.append(count)
            self.tuner.step_done(seconds)
        return counts


def tuner_at(count: int, m: Imagined) -> threads.Tuner:
    torch.set_num_threads(count)
    return threads.Tuner(threads.Choice(count, "probe"), [1, 2], clock=m.clock)


def test_a_losing_trial_goes_back_and_waits_twice_as_long():
    m = Imagined({1: 0.016, 2: 0.010})
    tuner = tuner_at(2, m)
    counts = Steps(tuner, m).run(3500)         # 35 s of steps
    assert tuner.current == 2 and torch.get_num_threads() == 2
    assert tuner.switches == 0
    # Trials start 10, then 20, then 40 s after the one before: two in 35 s.
    assert tuner.trials == 2
    assert counts.count(1) == 2 * (threads.Tuner.TRIAL_STEPS + 1)


def test_when_the_machine_gets_busy_the_run_moves_to_fewer_threads():
    m = Imagined({1: 0.016, 2: 0.010})
    tuner = tuner_at(2, m)
    steps = Steps(tuner, m)
    steps.run(200)
    m.cost[2] = 0.400                           # another job takes a core
    counts = steps.run(60)
    assert tuner.current == 1 and torch.get_num_threads() == 1
    # The slowdown brought the trial forward: it came within the next ten steps.
    assert counts.index(1) < 10


def test_a_trial_far_slower_ends_after_its_first_step():
    m = Imagined({1: 0.010, 2: 0.500})
    tuner = tuner_at(1, m)
    counts = Steps(tuner, m).run(2000)          # 20 s
    assert counts.count(2) == tuner.trials == 1
    assert tuner.current == 1 and torch.get_num_threads() == 1


def test_when_the_machine_gets_quiet_again_the_run_takes_more_threads():
    m = Imagined({1: 0.016, 2: 0.400})
    tuner = tuner_at(1, m)
    steps = Steps(tuner, m)
    steps.run(100)
    m.cost[2] = 0.010
    steps.run(int(threads.Tuner.LONGEST / 0.016) + 20)
    assert tuner.current == 2 and torch.get_num_threads() == 2


def test_no_trial_starts_when_the_run_says_not_to():
    m = Imagined({1: 0.016, 2: 0.010})
    tuner = tuner_at(2, m)
    for _ in range(3000):                       # 30 s of steps near a budget's end
        m.now += 0.010
        tuner.step_done(0.010, may_try=False)
    assert tuner.trials == 0 and torch.get_num_threads() == 2


def test_settle_ends_a_trial_on_the_count_it_had():
    m = Imagined({1: 0.016, 2: 0.010})
    tuner = tuner_at(2, m)
    steps = Steps(tuner, m)
    while tuner.trial is None:
        steps.run(1)
    assert torch.get_num_threads() == 1
    tuner.settle()
    assert tuner.trial is None and torch.get_num_threads() == 2


def test_a_training_run_reports_the_count_it_chose(small_text, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")
    code, out, err = run(["train", str(small_text), "--hidden-size", "32", "--embedding-dim",
                          "16", "--max-steps", "5", "--eval-every", "5", "--sample-every",
                          "0", "--out", "run", "--json"], capsys)
    assert code == 0, err
    assert "threads: " in err and "timed: 1: " in err
    assert 1 <= json.loads(out)["threads"] <= threads.available()


def test_threads_flag_fixes_the_count(small_text, capsys):
    code, out, err = run(["train", str(small_text), "--hidden-size", "32", "--embedding-dim",
                          "16", "--max-steps", "3", "--eval-every", "3", "--sample-every",
                          "0", "--batch-size", "4", "--seq-length", "16", "--val-max-chars",
                          "1000", "--out", "run", "--json", "--threads", "2"], capsys)
    assert code == 0, err
    assert "threads: 2 (--threads)" in err
    assert json.loads(out)["threads"] == 2


def test_eval_and_sample_give_the_same_results_with_any_count(tiny_run, small_text, capsys,
                                                              monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")
    scores, texts = [], []
    other = threads.available() + 1          # a count no command would choose by itself
    for count in ("1", "2", "0"):
        torch.set_num_threads(other)
        code, out, err = run(["eval", str(tiny_run), str(small_text), "--max-chars", "5000",
                              "--json", "--threads", count], capsys)
        assert code == 0, err
        scores.append(json.loads(out)["nats_per_char"])
        assert torch.get_num_threads() == (int(count) if count != "0" else
                                           torch.get_num_threads()) != other
        torch.set_num_threads(other)
        code, out, err = run(["sample", str(tiny_run), "--greedy", "--len", "80", "--threads",
                              count], capsys)
        assert code == 0, err
        texts.append(out)
        if count != "0":
            assert torch.get_num_threads() == int(count)
    assert scores == pytest.approx([scores[0]] * 3, abs=1e-6)
    assert texts == [texts[0]] * 3 and len(texts[0]) >= 80


def test_a_negative_thread_count_is_one_line(tiny_run, capsys):
    code, out, err = run(["sample", str(tiny_run), "--threads", "-1"], capsys)
    assert code == 2 and "--threads" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(["train", str(tiny_run), "--threads", "-1"], capsys)
    assert code == 1 and "train.threads must be at least 0" in err


def test_validation_never_runs_with_a_count_on_trial(small_text, tmp_path, monkeypatch):
    """A trial starts at every step here; each validation pass must still run with the
    count the run had chosen."""
    from charrnn import train as train_module
    from helpers import tiny_configs

    monkeypatch.delenv("OMP_NUM_THREADS")
    original = threads.Tuner.step_done
    tuners, during = [], []

    def always_trying(self, seconds, **kwargs):
        original(self, seconds, **kwargs)
        if self.trial is None and self._others():
            tuners.append(self)
            self.trial = (self._others()[0], [])
            threads.set_threads(self.trial[0])
    monkeypatch.setattr(threads.Tuner, "step_done", always_trying)
    real = train_module.nats_sum

    def recording(*args, **kwargs):
        during.append((torch.get_num_threads(), tuners[-1].current, tuners[-1].trial))
        return real(*args, **kwargs)
    monkeypatch.setattr(train_module, "nats_sum", recording)
    model, config = tiny_configs(max_steps=9, eval_every=3, out=str(tmp_path / "run"),
                                 threads=0)
    train_module.train(small_text, model, config, progress=False)
    if threads.available() < 2:
        pytest.skip("one CPU: no other count to try")
    assert len(during) == 3
    assert all(count == current and trial is None for count, current, trial in during)
