"""--size auto: when it applies, what it leaves to the user, and the rule that turns
timed candidates into a shape. The rule's timings are imagined (a step costs a fixed
time per parameter), so the choices are checked by hand counts, not by this machine."""

from __future__ import annotations

import json
import tomllib

import pytest

from charrnn import config as cfg
from charrnn import sizing
from charrnn.config import ModelConfig
from charrnn.model import parameter_count
from helpers import charrnn, run

NONE: dict = {"model": {}, "train": {}}


def flags(**train) -> dict:
    return {"model": {}, "train": train}


def test_a_time_budget_alone_sizes_the_model_and_fills_in_the_recipe():
    model, train, free = cfg.resolve(None, flags(max_time=60.0))
    assert train.size == "auto"
    assert free == {"hidden_size", "num_layers", "dropout"}
    for key, value in sizing.RECIPE.items():
        assert getattr(train, key) == value


@pytest.mark.parametrize("overrides", [
    {"model": {}, "train": {}},                                    # no budget: 3000 steps
    {"model": {}, "train": {"max_steps": 100, "max_time": 60.0}},  # a second budget
    {"model": {}, "train": {"epochs": 1.0, "max_time": 60.0}},
    {"model": {"hidden_size": 128}, "train": {"max_time": 60.0}},  # a shape given
    {"model": {"cell": "gru"}, "train": {"max_time": 60.0}},
    {"model": {}, "train": {"max_time": 60.0, "size": "fixed"}},
])
def test_anything_else_keeps_the_model_the_settings_give(overrides):
    model, train, free = cfg.resolve(None, overrides)
    assert train.size == "fixed" and not free
    assert train.seq_length == cfg.TrainConfig().seq_length
    assert model.hidden_size == overrides["model"].get("hidden_size", 256)


def test_a_config_file_with_a_model_table_keeps_its_model(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nhidden_size = 96\n[train]\nmax_time = 30\n", encoding="utf-8")
    model, train, free = cfg.resolve(path, NONE)
    assert (train.size, model.hidden_size, free) == ("fixed", 96, frozenset())


def test_with_size_auto_given_settings_win_and_the_rest_is_chosen():
    model, train, free = cfg.resolve(None, {
        "model": {"hidden_size": 384}, "train": {"max_time": 60.0, "size": "auto",
                                                 "lr": 0.002, "seq_length": 100}})
    assert free == {"num_layers", "dropout"}
    assert (model.hidden_size, train.lr, train.seq_length) == (384, 0.002, 100)
    assert train.batch_size == sizing.RECIPE["batch_size"]


def test_a_resumed_auto_run_keeps_its_shape():
    saved = {"model": cfg.to_dict(ModelConfig(hidden_size=640, num_layers=1, dropout=0.1)),
             "train": cfg.to_dict(cfg.TrainConfig(max_time=60.0, size="auto"))}
    model, train, free = cfg.resolve(None, flags(max_time=120.0), base=saved)
    assert (model.hidden_size, model.num_layers, model.dropout) == (640, 1, 0.1)
    assert train.size == "auto" and not free


@pytest.mark.parametrize("passes, per_char, dropout", [
    (0.3, 0.1, 0.0), (1.0, 0.5, 0.0), (3.0, 0.75, 0.0), (4.5, 0.5, 0.09), (6.0, 0.2, 0.18),
    (7.2, 0.1, 0.25), (40.0, 0.01, 0.25),              # many passes
    (1.0, 1.125, 0.12), (2.0, 1.5, 0.25), (4.3, 4.5, 0.25), (5.0, 0.9, 0.12)])  # much room
def test_dropout_grows_with_the_passes_and_the_room_to_memorise(passes, per_char, dropout):
    assert sizing.dropout_for(passes, per_char) == pytest.approx(dropout)


def params(config: ModelConfig) -> int:
    return parameter_count(65, config)


class StepClock:
    """A step costs ``per_param`` seconds per parameter; counts the candidates timed."""

    def __init__(self, per_param: float) -> None:
        self.per_param, self.timed = per_param, []

    def __call__(self, config: ModelConfig) -> float:
        self.timed.append((config.num_layers, config.hidden_size))
        return self.per_param * params(config)


def expected_choice(per_param: float, seconds: float, chars_per_step: int,
                    train_chars: int):
    """By hand: the most parameters that still read MIN_CHARS_PER_PARAM characters
    each, or the text MANY_PASSES times and FEWEST_CHARS_PER_PARAM each (a step of N
    parameters takes per_param * N seconds, times the overhead), in the budget less
    what timing the candidates cost (five steps of each)."""
    best, spent = None, 0.0
    for layers, hidden in sizing.CANDIDATES:
        n = params(ModelConfig(num_layers=layers, hidden_size=hidden))
        spent += 5 * per_param * n
        steps = int((seconds - spent) / (sizing.STEP_OVERHEAD * per_param * n))
        per_param_read = steps * chars_per_step / n
        if (per_param_read >= sizing.MIN_CHARS_PER_PARAM
                or (steps * chars_per_step / train_chars >= sizing.MANY_PASSES
                    and per_param_read >= sizing.FEWEST_CHARS_PER_PARAM)):
            best = (layers, hidden)
    return best


@pytest.mark.parametrize("per_param, seconds, text", [
    (1e-8, 60, 10**6), (1e-8, 600, 10**6), (3e-9, 120, 10**6), (5e-8, 120, 10**6),
    (1e-9, 600, 10**6), (1e-10, 600, 10**6),
    # a short text read many times: larger than the characters per parameter allow
    (1e-8, 600, 200_000), (1e-9, 120, 100_000)])
def test_the_largest_model_the_budget_trains_enough_is_chosen(per_param, seconds, text):
    clock = StepClock(per_param)
    result = sizing.choose(ModelConfig(), set(sizing.SHAPE_KEYS), clock, params,
                           seconds=seconds, chars_per_step=1024, train_chars=text,
                           eval_steps=0)
    got = (result.model.num_layers, result.model.hidden_size)
    assert got == (expected_choice(per_param, seconds, 1024, text) or sizing.CANDIDATES[0])
    assert result.chosen.enough or got == sizing.CANDIDATES[0]
    # Candidates are timed smallest first, up to the first that falls short; then the
    # first once more, which finds the machine's speed unchanged.
    first_pass, last = clock.timed[:-1], clock.timed[-1]
    assert first_pass == sizing.CANDIDATES[:len(first_pass)] and last == sizing.CANDIDATES[0]
    assert len(first_pass) <= sizing.CANDIDATES.index(got) + 2
    passes = result.chosen.steps * 1024 / text
    assert result.model.dropout == sizing.dropout_for(passes, result.chosen.params / text)
    assert result.chosen.params == params(result.model)


class SlowAtFirst(StepClock):
    """Three times slower for the first ``calls`` steps timed (another process starting)."""

    def __init__(self, per_param: float, calls: int) -> None:
        super().__init__(per_param)
        self.calls = calls

    def __call__(self, config: ModelConfig) -> float:
        seconds = super().__call__(config)
        return 3 * seconds if len(self.timed) <= self.calls else seconds


@pytest.mark.parametrize("calls", [1, 4, 8])
def test_a_probe_slowed_by_a_passing_load_is_timed_again(calls):
    steady = sizing.choose(ModelConfig(), set(sizing.SHAPE_KEYS), StepClock(1e-9), params,
                           seconds=600, chars_per_step=1024, train_chars=10**6, eval_steps=0)
    clock = SlowAtFirst(1e-9, calls)
    slowed = sizing.choose(ModelConfig(), set(sizing.SHAPE_KEYS), clock, params,
                           seconds=600, chars_per_step=1024, train_chars=10**6, eval_steps=0)
    assert slowed.model == steady.model
    assert clock.timed.count(sizing.CANDIDATES[0]) == 3     # timed, again, once more


def test_when_no_candidate_reads_enough_the_smallest_is_chosen():
    result = sizing.choose(ModelConfig(), set(sizing.SHAPE_KEYS), StepClock(1e-5), params,
                           seconds=30, chars_per_step=1024, train_chars=10**6, eval_steps=0)
    assert (result.model.num_layers, result.model.hidden_size) == sizing.CANDIDATES[0]
    assert "none reads 4, so the smallest" in result.reason()


def test_a_config_that_fits_only_some_widths_is_sized_among_them():
    model, train, free = cfg.resolve(None, {"model": {"tie_weights": True, "embedding_dim": 384},
                                            "train": {"max_time": 60.0, "size": "auto"}})
    assert free == set(sizing.SHAPE_KEYS) and model.hidden_size == 256   # not checked yet
    result = sizing.choose(model, set(free), StepClock(1e-9), params, seconds=60,
                           chars_per_step=1024, train_chars=10**6, eval_steps=0)
    assert result.model.hidden_size == 384 and result.model.tie_weights


def test_a_given_width_or_dropout_is_kept():
    given = ModelConfig(hidden_size=512, dropout=0.4)
    clock = StepClock(1e-9)
    result = sizing.choose(given, {"num_layers"}, clock, params, seconds=600,
                           chars_per_step=1024, train_chars=10**6, eval_steps=0)
    assert result.model.hidden_size == 512 and result.model.dropout == 0.4
    assert {h for _, h in clock.timed} == {512}


@pytest.mark.slow     # two timed runs of the whole command: about 19 s
def test_a_run_with_only_a_time_budget_says_what_it_chose_and_saves_it(small_text, tmp_path):
    """The whole command, in its own process (the budget counts from its start): what
    it chose is said, saved in config.toml, and kept by a resume with more time."""
    done = charrnn("train", str(small_text), "--max-time", "9", "--val-max-chars", "2000",
                   "--out", "run", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "size auto: " in done.stderr and "passes over the text" in done.stderr
    result = json.loads(done.stdout)
    chosen = result["size"]["chosen"]
    layers, hidden = map(int, chosen.split("x"))
    with open(tmp_path / "run" / "config.toml", "rb") as f:
        saved = tomllib.load(f)
    assert (saved["model"]["num_layers"], saved["model"]["hidden_size"]) == (layers, hidden)
    assert saved["train"]["size"] == "auto"
    assert saved["train"]["seq_length"] == sizing.RECIPE["seq_length"]
    assert set(result["size"]["timed"]) >= {chosen}
    # A resume with more time trains on with the shape chosen, choosing nothing again
    # (the budget counts the first session and this one's start-up: leave room for both).
    again = charrnn("train", "--resume", "run", "--max-time", "18", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "size auto:" not in again.stderr and json.loads(again.stdout)["size"] is None
    assert json.loads(again.stdout)["step"] > result["step"]
    with open(tmp_path / "run" / "config.toml", "rb") as f:
        assert tomllib.load(f)["model"] == saved["model"]


def shapes(given: ModelConfig, free: set[str]) -> list[tuple[int, int]]:
    return [(m.num_layers, m.hidden_size) for m in sizing.candidates(given, free)]


def test_a_fixed_width_leaves_the_depth_and_a_fixed_depth_the_width():
    assert shapes(ModelConfig(hidden_size=512), {"num_layers", "dropout"}) == [(1, 512), (2, 512)]
    assert shapes(ModelConfig(num_layers=2), {"hidden_size"}) == [(2, w) for w in sizing.WIDTHS]
    assert shapes(ModelConfig(num_layers=3, hidden_size=100), set()) == [(3, 100)]


def test_shapes_other_settings_rule_out_are_left_out():
    # A projection of 200 needs a wider layer; tied weights need the head's input = 384.
    proj = shapes(ModelConfig(proj_size=200), set(sizing.SHAPE_KEYS))
    assert proj and min(h for _, h in proj) > 200
    tied = shapes(ModelConfig(tie_weights=True, embedding_dim=384), set(sizing.SHAPE_KEYS))
    assert {h for _, h in tied} == {384}
    with pytest.raises(cfg.ConfigError, match="--size auto found no candidate.*tie_weights"):
        sizing.candidates(ModelConfig(tie_weights=True, embedding_dim=100),
                          set(sizing.SHAPE_KEYS))


@pytest.mark.parametrize("train, base, message", [
    ({"size": "auto"}, None, "give --max-time SECONDS, or drop"),
    ({"size": "auto", "max_time": 60.0, "max_steps": 10}, None, "without --max-steps"),
    ({"size": "auto", "max_time": 60.0, "epochs": 1.0}, None, "without --epochs"),
    ({"size": "auto", "max_time": 60.0}, {"model": {"hidden_size": 64}, "train": {}},
     "--init-from keeps the checkpoint's model"),
])
def test_size_auto_where_it_cannot_choose_is_one_line(train, base, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.resolve(None, {"model": {}, "train": train}, base=base)


def test_config_show_leaves_what_auto_chooses_open_and_reads_back(tmp_path, capsys):
    code, out, err = run(["config", "show", "--max-time", "90"], capsys)
    assert code == 0, err
    assert "# hidden_size = (chosen by --size auto)" in out and 'size = "auto"' in out
    path = tmp_path / "shown.toml"
    path.write_text(out, encoding="utf-8")
    again = cfg.resolve(path, {"model": {}, "train": {}})
    assert again == cfg.resolve(None, flags(max_time=90.0))
    code, out, err = run(["config", "show", "--max-time", "90", "--json"], capsys)
    model = json.loads(out)["model"]
    assert model["hidden_size"] is model["num_layers"] is model["dropout"] is None
    assert model["cell"] == "lstm"


def test_fitting_times_only_shapes_the_other_settings_allow():
    """A projection of 600 rules out every width up to 512: the thread count is timed
    on an allowed shape and the choice is one of them (no error from torch)."""
    import torch

    from charrnn import fitting

    train = cfg.TrainConfig(max_time=30.0, size="auto", seq_length=8, batch_size=2,
                            threads=1)
    fit = fitting.fit(ModelConfig(proj_size=600), train, vocab_size=20,
                      device=torch.device("cpu"), dtype="float32", rows=2,
                      free=frozenset(sizing.SHAPE_KEYS), choose_size=True, seconds=30.0,
                      train_chars=10_000, val_chars=1_000)
    assert fit.model_config.hidden_size > 600 and fit.model_config.proj_size == 600
    assert fit.threads.how == "--threads" and fit.tuner is None
