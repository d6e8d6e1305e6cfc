"""What tests share besides fixtures: the project's paths, the CLI called in-process or
in a child process, tiny configs and models, and waiting for a child's files.

Import from here (``from helpers import run, tiny_configs``); fixtures live in
``conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charrnn.config import ModelConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"


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
                          env=child_env(**{"COLUMNS": "100", **env}), capture_output=True,
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
