"""Settings: defaults < config file < flags, unknown keys, ranges, presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from charrnn import config as cfg
from charrnn.errors import ConfigError

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_precedence_is_defaults_then_file_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\ncell = "gru"\nhidden_size = 64\n[train]\nlr = 0.01\n',
                    encoding="utf-8")
    model, train, _ = cfg.resolve(path, {"model": {"hidden_size": 32, "num_layers": None},
                                         "train": {}})
    assert model.cell == "gru"                 # from the file
    assert model.hidden_size == 32             # the flag wins over the file
    assert model.num_layers == cfg.ModelConfig().num_layers   # default (flag not given)
    assert train.lr == 0.01 and train.batch_size == cfg.TrainConfig().batch_size


@pytest.mark.parametrize("text, message", [
    ("[train]\nbatchsize = 3\n", "did you mean 'batch_size'"),
    ("[modle]\ncell = 'gru'\n", "unknown table \\[modle\\].*did you mean 'model'"),
    ("[model]\nhidden_size = 'big'\n", "model.hidden_size must be a int"),
    ("[model]\nhidden_size = 1.5\n", "model.hidden_size must be a int"),
    ("[train]\nlr = -1\n", "train.lr must be greater than 0"),
    ("[train]\nmax_time = nan\n", "must be a finite number"),
    ("[train]\nbatching = 'shuffled'\n", "must be one of stream, random"),
    ("[model]\nhidden_size = 3\nhidden_size = 4\n", "not valid TOML"),
    ("cell = 'gru'\n", "unknown table \\[cell\\]"),
])
def test_bad_config_files_are_refused_with_a_pointer(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        cfg.resolve(path, {})


def test_bad_toml_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\ncell = 'lstm'\nhidden_size = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 3"):
        cfg.read_toml(path)


def test_resolved_config_written_as_toml_reads_back_the_same(tmp_path):
    model = cfg.ModelConfig(cell="gru", dropout=0.25, tie_weights=True, embedding_dim=256)
    train = cfg.TrainConfig(out='runs/a "quoted" name', max_time=60.0, size="fixed")
    path = tmp_path / "round.toml"
    path.write_text(cfg.to_toml(model, train), encoding="utf-8")
    assert cfg.resolve(path, {}) == (model, train, frozenset())


def test_default_budget_applies_only_when_no_budget_is_set():
    assert cfg.TrainConfig().budget_steps() == cfg.DEFAULT_MAX_STEPS
    assert cfg.TrainConfig(epochs=2).budget_steps() is None
    assert cfg.TrainConfig(max_time=10).budget_steps() is None
    assert cfg.TrainConfig(max_steps=5, max_time=10).budget_steps() == 5


def test_there_are_presets():
    names = {p.stem for p in PRESETS}
    assert {"tiny", "shakespeare-cpu"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_is_valid_and_documents_itself(path):
    model, train, _ = cfg.resolve(path, {})
    header = path.read_text(encoding="utf-8").split("[", 1)[0]
    assert "charrnn train" in header and "val" in header.lower()


def test_config_show_says_what_step_budget_a_run_would_use():
    """No budget given: a run stops after the default number of steps, and the printed
    settings say so without fixing it (another budget given later still rules alone)."""
    default = cfg.to_toml(cfg.ModelConfig(), cfg.TrainConfig())
    assert (f"# max_steps = (not set: {cfg.DEFAULT_MAX_STEPS}, the budget when none is "
            "given)") in default
    timed = cfg.to_toml(cfg.ModelConfig(), cfg.TrainConfig(max_time=60.0))
    assert "# max_steps = (not set)" in timed
    assert cfg.TrainConfig(max_time=60.0).budget_steps() is None


@pytest.mark.parametrize("text", ['a\nb', 'tab\there', 'quote " and \\ back', 'del\x7f',
                                  'nul\x00', 'émoji 🙂'])
def test_any_string_setting_round_trips_through_the_toml(text):
    """What ``config show`` and a run's config.toml write reads back as the same value,
    whatever characters the setting holds."""
    import tomllib

    train = cfg.TrainConfig(out=text)
    assert tomllib.loads(cfg.to_toml(cfg.ModelConfig(), train))["train"]["out"] == text
