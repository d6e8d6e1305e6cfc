"""Shared fixtures and helpers: the tiny-shakespeare corpus that ships in data/, small
text files, one tiny trained run that many tests read, and the CLI called in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

# The suite writes nothing into the project folder. No bytecode caches beside the
# sources, from this process or any child process (the README runs the suite with
# `python -B`, so that this file's own is not written either; the caches installed with
# the packages are still read). Run folders, plots and corpus caches go to each test's
# own folder (``work_in_tmp_path``).
sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
# One intra-op thread in this process and in every child: the suite's models are tiny, and
# two threads beside a busy core wait on each other (a step tens of times slower).
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from charrnn.config import ModelConfig, TrainConfig  # noqa: E402

# Hypothesis keeps no example database in the working folder: the seeded runs replay
# the same examples anyway.
settings.register_profile("charrnn", database=None)
settings.load_profile("charrnn")

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"


@pytest.fixture(autouse=True)
def work_in_tmp_path(tmp_path, monkeypatch) -> None:
    """Every test runs in its own temporary folder, as a user runs charrnn in theirs:
    what a command writes by default (runs/, a plot) never lands in the project."""
    monkeypatch.chdir(tmp_path)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``charrnn ARGV`` in this process: (exit code, stdout, stderr)."""
    from charrnn.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that imports charrnn from this project."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def charrnn(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m charrnn ARGS`` in a fresh process, from the folder ``cwd``."""
    return subprocess.run([sys.executable, "-m", "charrnn", *args], cwd=cwd,
                          env=child_env(COLUMNS="100", **env), capture_output=True,
                          text=True, timeout=300)


# Flags of a tiny model for `charrnn train` in a child process.
TINY_FLAGS = ["--hidden-size", "32", "--embedding-dim", "16", "--batch-size", "8",
              "--seq-length", "32", "--sample-every", "0", "-q"]


def start_training(text: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``charrnn train TEXT`` of a tiny model into ``out``, in a child process."""
    return subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(text), *TINY_FLAGS,
                             "--out", str(out), *extra], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, until=None, timeout: float = 300.0) -> None:
    """Wait until ``path`` exists (and ``until(path)`` holds) while ``proc`` runs. The
    timeout only bounds a hung run: the wait ends on the event, however slow the machine."""
    deadline = time.monotonic() + timeout

    def reached() -> bool:
        try:
            return path.exists() and (until is None or until(path))
        except (OSError, ValueError, KeyError, IndexError):  # a file still being written
            return False

    while not reached():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never reached the expected state"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """The corpus as it ships with the project (data/tinyshakespeare.txt)."""
    assert SHAKESPEARE.is_file(), f"{SHAKESPEARE} is missing: it is part of the project"
    return SHAKESPEARE


@pytest.fixture(scope="session")
def small_text(shakespeare, tmp_path_factory) -> Path:
    """The first 60,000 characters of tiny-shakespeare."""
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(shakespeare.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


# Every kind of recurrent cell the tests build: name -> ModelConfig fields.
CELLS = {
    "rnn-tanh": dict(cell="rnn", nonlinearity="tanh"),
    "rnn-relu": dict(cell="rnn", nonlinearity="relu"),
    "lstm": dict(cell="lstm"),
    "lstm-proj": dict(cell="lstm", proj_size=3),
    "gru": dict(cell="gru"),
}


def tiny_configs(**train_overrides) -> tuple[ModelConfig, TrainConfig]:
    model = ModelConfig(cell="lstm", embedding_dim=16, hidden_size=32, num_layers=2)
    values = dict(seq_length=32, batch_size=8, max_steps=20, eval_every=10, sample_every=0,
                  warmup_steps=5, device="cpu")
    values.update(train_overrides)
    return model, TrainConfig(**values)


@pytest.fixture(scope="session")
def tiny_run(small_text, tmp_path_factory) -> Path:
    """A 2x32 LSTM trained for 20 steps; its run folder (best.pt, last.pt, metrics)."""
    from charrnn.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    model, config = tiny_configs(out=str(out))
    train(small_text, model, config, progress=False)
    return out


def prime_sensitive_model(chars: str, **config):
    """A random CharRNN (eval mode) over ``chars`` with its weights scaled up threefold,
    so that what it predicts depends clearly on what it has read."""
    import torch

    from charrnn.data import Vocab
    from charrnn.model import CharRNN

    torch.manual_seed(4)
    vocab = Vocab(chars)
    model = CharRNN(len(vocab), ModelConfig(embedding_dim=8, hidden_size=16, **config))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval(), vocab


def save_model(model, chars: str, path: Path, **extra) -> Path:
    """``model`` over the vocabulary ``chars`` saved as a checkpoint at ``path`` (with
    the default training settings and any ``extra`` fields, e.g. step, val_loss)."""
    from charrnn.checkpoint import save_checkpoint
    from charrnn.config import to_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint({"model_config": to_dict(model.config),
                            "train_config": to_dict(TrainConfig()), "vocab": chars,
                            "model_state": model.state_dict(), **extra}, path)
