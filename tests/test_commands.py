"""CLI conventions across commands: help panels with an example per command, shell
completion, `config show`, `train --json` and `--tensorboard`, exit codes, presets."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from charrnn import config as cfg

from helpers import ROOT, charrnn, run
COMMANDS = ["train", "sample", "eval", "export", "inspect", "runs", "plot", "download", "prepare",
            "config"]
PANELS = {"Train and use a model": ["train", "sample", "eval", "export"],
          "Look inside and compare": ["inspect", "runs", "plot"],
          "Data and settings": ["download", "prepare", "config"]}


def test_help_groups_the_commands_in_panels(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for panel, commands in PANELS.items():
        block = out.split(panel, 1)[1].split("╰", 1)[0]
        listed = re.findall(r"│ (\w+)\s", block)
        assert listed == commands, (panel, listed)
    assert "--install-completion" in out and "--version" in out


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "config"] + ["config show"])
def test_every_command_has_an_example(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run([*command.split(), "--help"], capsys)
    assert code == 0
    assert re.search(rf"Example: charrnn {command}\b", out), out[-300:]


def test_help_keeps_bracketed_text_such_as_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")   # rich would read "[default: 256]" as markup
    code, out, _ = run(["train", "--help"], capsys)
    assert code == 0
    assert "hidden state h [default: 256]" in out and "[model] and [train] tables" in out
    code, out, _ = run(["plot", "--help"], capsys)
    assert "[default: the newest run under --runs-dir]" in out and "'charrnn-cli[plot]'" in out


# Completion options that take the shell's name instead of detecting it.
NAMED_SHELL = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


def test_shell_completion_offers_commands_and_corpus_names(tmp_path):
    words = charrnn(cwd=tmp_path, _CHARRNN_COMPLETE="complete_bash",
                    COMP_WORDS="charrnn ev", COMP_CWORD="1")
    assert words.returncode == 0 and words.stdout.split() == ["eval"]
    names = charrnn(cwd=tmp_path, _CHARRNN_COMPLETE="complete_bash",
                    COMP_WORDS="charrnn download tiny", COMP_CWORD="2")
    assert names.stdout.split() == ["tinyshakespeare"]
    # The shell is named, not detected from the processes above the test (a test run
    # started outside any shell has none to find).
    script = charrnn("--show-completion", "bash", cwd=tmp_path, **NAMED_SHELL)
    assert "_CHARRNN_COMPLETE=complete_bash" in script.stdout


@pytest.mark.parametrize("words, expected", [
    ("charrnn train --cell ", ["rnn", "lstm", "gru"]),
    ("charrnn train --optimizer ad", ["adamw", "adam", "adagrad"]),
    ("charrnn inspect --nonlinearity r", ["relu"]),
    ("charrnn train --decay c", ["cosine"]),
    ("charrnn train tin", ["tinyshakespeare", "tiny notes.txt", "tiny_dir/"]),
])
def test_completion_offers_option_values_corpus_names_and_files(tmp_path, words, expected):
    (tmp_path / "tiny notes.txt").write_text("x", encoding="utf-8")
    (tmp_path / "tiny_dir").mkdir()
    (tmp_path / "other.txt").write_text("x", encoding="utf-8")
    index = len(words.split()) - (0 if words.endswith(" ") else 1)
    offered = charrnn(cwd=tmp_path, _CHARRNN_COMPLETE="complete_bash", COMP_WORDS=words,
                      COMP_CWORD=str(index))
    assert offered.returncode == 0, offered.stderr
    assert offered.stdout.splitlines() == expected


def test_install_completion_writes_the_script_into_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    installed = charrnn("--install-completion", "bash", cwd=tmp_path, HOME=str(home),
                        **NAMED_SHELL)
    assert installed.returncode == 0, installed.stderr
    assert "completion installed in" in installed.stdout
    scripts = [p for p in home.rglob("*") if p.is_file() and "charrnn" in p.read_text()]
    assert scripts, list(home.rglob("*"))


def test_config_show_prints_the_defaults_as_toml_that_reads_back(tmp_path, capsys):
    code, out, err = run(["config", "show"], capsys)
    assert code == 0 and err == ""
    path = tmp_path / "shown.toml"
    path.write_text(out, encoding="utf-8")
    assert cfg.resolve(path, {}) == (cfg.ModelConfig(), cfg.TrainConfig(size="fixed"),
                                     frozenset())
    assert "[model]" in out and "[train]" in out and "tensorboard = false" in out


def test_config_show_resolves_a_file_over_the_defaults(tmp_path, capsys):
    preset = ROOT / "configs" / "tiny.toml"
    code, out, _ = run(["config", "show", "--config", str(preset)], capsys)
    assert code == 0
    path = tmp_path / "shown.toml"
    path.write_text(out, encoding="utf-8")
    assert cfg.resolve(path, {}) == cfg.resolve(preset, {})
    code, out, _ = run(["config", "show", "-c", str(preset), "--json"], capsys)
    shown = json.loads(out)
    model, train, _ = cfg.resolve(preset, {})
    assert shown == {"model": cfg.to_dict(model), "train": cfg.to_dict(train)}
    assert shown["train"]["lr"] == 0.01 and shown["train"]["optimizer"] == "adamw"


def test_config_show_is_a_dry_run_of_flags_over_the_file(tmp_path, capsys):
    """The same flags as train, with the same precedence: defaults < --config < flags;
    and the settings train would use are exactly those shown."""
    preset = ROOT / "configs" / "tiny.toml"
    flags = ["--lr", "0.02", "--cell", "gru", "--tie-weights", "--embedding-dim", "64",
             "--max-time", "30", "--batching", "random"]
    code, out, err = run(["config", "show", "-c", str(preset), *flags, "--json"], capsys)
    assert code == 0, err
    shown = json.loads(out)
    in_file = cfg.read_toml(preset)
    assert (shown["train"]["lr"], shown["model"]["cell"], shown["model"]["tie_weights"]) == \
        (0.02, "gru", True)                                     # the flags win
    assert shown["model"]["hidden_size"] == in_file["model"]["hidden_size"] != 256  # the file
    assert shown["train"]["max_steps"] == in_file["train"]["max_steps"]
    assert shown["train"]["grad_clip"] == cfg.TrainConfig().grad_clip             # default
    code, _, err = run(["train", "data-that-is-not-there.txt", "-c", str(preset), *flags,
                        "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and "does not exist" in err      # train takes the very same flags
    code, _, err = run(["config", "show", "--lr", "-1"], capsys)
    assert code == 1 and "lr must be greater than 0" in err


def test_config_show_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 0.1\n", encoding="utf-8")
    code, out, err = run(["config", "show", "--config", str(bad)], capsys)
    assert code == 1 and out == "" and "did you mean 'lr'" in err
    code, _, err = run(["config", "show", "--nope"], capsys)
    assert code == 2 and "(see 'charrnn config show --help')" in err


@pytest.mark.parametrize("argv, expected", [
    (["eval"], "Missing argument"),
    (["eval", "a.pt"], "Missing argument"),
    (["plot", "--width", "wide"], "Invalid value for '--width'"),
    (["runs", "--sort"], "requires an argument"),
    (["download"], "Missing argument"),
    (["config", "show", "extra"], "unexpected extra argument"),
])
def test_usage_errors_exit_2_in_one_line(argv, expected, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected.lower() in err.lower()


def test_train_json_is_the_only_thing_on_stdout(small_text, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run(["train", str(small_text), "--hidden-size", "16", "--embedding-dim", "8",
                          "--max-steps", "6", "--eval-every", "3", "--batch-size", "4",
                          "--seq-length", "16", "--device", "cpu", "--out", str(out_dir),
                          "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    from charrnn.files import read_metrics

    rows = read_metrics(out_dir)
    assert summary["step"] == 6 and summary["run_dir"] == str(out_dir)
    assert summary["val_loss"] == pytest.approx(rows[-1]["val_loss"])
    assert summary["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in rows))
    assert summary["val_bpc"] == pytest.approx(rows[-1]["val_bpc"])
    assert Path(summary["best"]).is_file() and Path(summary["last"]).is_file()
    assert "done:" in err                               # narration stays on stderr


def test_tensorboard_logs_each_evaluation(small_text, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from charrnn import tblog

    out_dir = tmp_path / "run"
    code, _, err = run(["train", str(small_text), "--hidden-size", "16", "--embedding-dim", "8",
                        "--max-steps", "6", "--eval-every", "3", "--batch-size", "4",
                        "--seq-length", "16", "--device", "cpu", "--out", str(out_dir),
                        "--tensorboard", "-q"], capsys)
    assert code == 0, err
    tblog.close_all()
    assert list(out_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out_dir))
    events.Reload()
    from charrnn.files import read_metrics

    rows = read_metrics(out_dir)
    val = events.Scalars("loss/val")
    assert [e.step for e in val] == [3, 6]
    assert [e.value for e in val] == pytest.approx([r["val_loss"] for r in rows], abs=1e-6)
    assert {"loss/train", "loss/val", "val_bits_per_char", "lr"} <= set(events.Tags()["scalars"])
    assert "tensorboard = true" in (out_dir / "config.toml").read_text(encoding="utf-8")


def test_tensorboard_missing_is_one_line_before_any_training(small_text, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out_dir = tmp_path / "run"
    code, out, err = run(["train", str(small_text), "--tensorboard", "--out", str(out_dir)],
                         capsys)
    assert code == 1 and out == ""
    assert err.strip() == ("error: --tensorboard needs the tensorboard package: pip install "
                           "'charrnn-cli[tensorboard]' (or drop --tensorboard)")
    assert not out_dir.exists()


PRESETS = {p.stem: p for p in (ROOT / "configs").glob("*.toml")}


def test_the_four_presets_exist_and_state_their_command_time_and_loss():
    names = ("tiny", "shakespeare-cpu-quick", "shakespeare-cpu", "shakespeare-gpu")
    assert set(names) <= set(PRESETS)
    for name in names:
        header = PRESETS[name].read_text(encoding="utf-8").split("\n[", 1)[0]
        assert f"--config configs/{name}.toml" in header, name
        if name == "shakespeare-gpu":   # no GPU was at hand to measure it: it says so
            assert "not yet measured" in header
        else:
            assert re.search(r"\d+(\.\d+)? nats/char", header), name
            assert re.search(r"\d+ ?(s|min)\b", header), name
    assert cfg.resolve(PRESETS["shakespeare-gpu"], {})[1].device == "cuda"


def test_the_time_budgeted_presets_fit_their_budget_and_name_their_processor():
    """Each preset that stops on the clock: its max_time leaves the process's start-up
    room within the budget its name states, quality.py can run it, and its header gives
    the command, the loss and the processor it was measured on."""
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    timed = {name: path for name, path in PRESETS.items() if cfg.resolve(path, {})[1].max_time}
    assert {"shakespeare-105s", "shakespeare-2min", "shakespeare-10min"} <= set(timed)
    for name, path in timed.items():
        amount, unit = re.fullmatch(r"shakespeare-(\d+)(s|min)", name).groups()
        budget = int(amount) * (60 if unit == "min" else 1)
        assert cfg.resolve(path, {})[1].max_time <= budget - 0.5, name
        assert name.removeprefix("shakespeare-") in quality.PRESETS
        header = path.read_text(encoding="utf-8").split("\n[", 1)[0]
        assert f"--config configs/{name}.toml" in header, name
        assert re.search(r"\d\.\d{4}\b.* nats/char", header, re.S), name
        assert re.search(r"[Mm]easured on .*(AVX2|AVX-512)", header, re.S), name


def test_runs_elsewhere_are_found_with_runs_dir_or_its_variable(tiny_run, tmp_path,
                                                                monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_run, tmp_path / "elsewhere" / "mine")
    code, _, err = run(["sample", "--len", "5"], capsys)
    assert code == 1 and "no trained model found under runs/" in err
    best = os.path.join("elsewhere", "mine", "best.pt")
    code, out, err = run(["sample", "--len", "5", "--runs-dir", "elsewhere"], capsys)
    assert code == 0 and len(out) == 5 and err == f"sampling from {best}\n"
    monkeypatch.setenv("CHARRNN_RUNS_DIR", "elsewhere")
    code, out, err = run(["sample", "--len", "5"], capsys)
    assert code == 0 and err == f"sampling from {best}\n"
    code, out, err = run(["inspect", "--json"], capsys)
    assert code == 0 and json.loads(out)["checkpoint"]["path"] == best
    code, out, _ = run(["runs", "--json"], capsys)
    assert code == 0 and [Path(r["path"]).name for r in json.loads(out)] == ["mine"]
    code, _, err = run(["plot", "-o", "loss.png"], capsys)
    assert code == 0 and (tmp_path / "loss.png").is_file(), err


@pytest.mark.parametrize("command", ["train", "sample", "eval", "inspect", "prepare"])
def test_help_paragraphs_fill_a_narrow_terminal(tmp_path, command):
    """At 80 columns a command's description wraps where the terminal is full, not where
    the source's lines ended: no line of a paragraph but its last is left short."""
    done = charrnn(command, "--help", cwd=tmp_path, COLUMNS="80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith(("╭", "┌", "+")))
    paragraphs, current = [], []
    for line in lines[start:end]:
        if line.strip():
            current.append(line.rstrip())
        elif current:
            paragraphs.append(current)
            current = []
    assert paragraphs
    for paragraph in paragraphs:
        assert all(len(line) >= 60 for line in paragraph[:-1]), paragraph
