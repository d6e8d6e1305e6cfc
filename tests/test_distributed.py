"""Data-parallel training: two gloo processes on 127.0.0.1 under torchrun take the
same steps as one process with the same global batch, and a run moves between world
sizes on resume."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from charrnn.data import RandomBatches, StreamBatches
from charrnn.distributed import Group
from charrnn.errors import ConfigError

# A constant learning rate, so that 10 steps and a resume to 20 equal 20 steps; float32,
# where replicas agree to rounding (bf16, the default on some CPUs, rounds far coarser).
FLAGS = ["--hidden-size", "32", "--embedding-dim", "16", "--batch-size", "8",
         "--seq-length", "32", "--eval-every", "10", "--sample-every", "0", "--seed", "3",
         "--device", "cpu", "--dtype", "float32", "--quiet"]
CONSTANT_LR = "[train]\nmin_lr_ratio = 1.0\nwarmup_steps = 0\n"
# Replicas hold the same weights up to float rounding (the gradients are averaged in
# another order).
WEIGHTS_ATOL = 1e-5
# Validation is cut into one part per process, each scored from a zero hidden state:
# the first characters after each cut cost a little more.
VAL_TOLERANCE = 2e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {k: v for k, v in os.environ.items()
       if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}


def command(*args: str, processes: int = 1) -> list[str]:
    """``charrnn ARGS`` in one process, or under torchrun on 127.0.0.1."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                 "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
                if processes > 1 else [sys.executable])
    return [*launcher, "-m", "charrnn", *args]


def charrnn(*args: str, cwd, processes: int = 1) -> subprocess.CompletedProcess:
    done = subprocess.run(command(*args, processes=processes), cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model_state"]


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_and_resume_in_either(shakespeare, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(shakespeare.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    (tmp_path / "const.toml").write_text(CONSTANT_LR, encoding="utf-8")
    common = [str(text), "--config", "const.toml", *FLAGS]

    charrnn("train", *common, "--max-steps", "20", "--out", "one", cwd=tmp_path)
    charrnn("train", *common, "--max-steps", "20", "--out", "two", cwd=tmp_path, processes=2)
    one, two = tmp_path / "one", tmp_path / "two"
    # One set of files, written by rank 0 alone.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir()) == [
        "best.pt", "config.toml", "last.pt", "metrics.csv"]
    saved = torch.load(two / "last.pt", weights_only=True)
    reference = torch.load(one / "last.pt", weights_only=True)
    assert saved["world_size"] == 2 and saved["step"] == 20
    assert max_difference(saved["model_state"], reference["model_state"]) < WEIGHTS_ATOL
    assert abs(saved["val_loss"] - reference["val_loss"]) < VAL_TOLERANCE
    # The whole batch's hidden state is saved, gathered from both processes.
    assert saved["hidden"][0].shape == reference["hidden"][0].shape == (2, 8, 32)
    assert torch.allclose(saved["hidden"][0], reference["hidden"][0], atol=1e-4)

    # Two processes for 10 steps, then one process resumes to 20: the same run.
    charrnn("train", *common, "--max-steps", "10", "--out", "moved", cwd=tmp_path, processes=2)
    charrnn("train", "--resume", "moved", "--max-steps", "20", "--quiet", cwd=tmp_path)
    moved = torch.load(tmp_path / "moved" / "last.pt", weights_only=True)
    assert moved["step"] == 20 and moved["world_size"] == 1
    assert max_difference(moved["model_state"], reference["model_state"]) < WEIGHTS_ATOL
    assert abs(moved["val_loss"] - reference["val_loss"]) < 1e-4   # one process scores it


@pytest.mark.slow
def test_a_stop_reaches_every_process_and_rank_0_saves_once(shakespeare, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(shakespeare.read_text(encoding="utf-8")[:100_000], encoding="utf-8")
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        command("train", str(text), *FLAGS, "--max-steps", "1000000", "--out", str(run),
                processes=2),
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and time.time() < deadline:  # step 10 is done
        time.sleep(0.1)
    launcher.send_signal(signal.SIGTERM)                # torchrun passes it to both workers
    _, err = launcher.communicate(timeout=120)
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["step"] >= 10 and saved["world_size"] == 2
    assert err.count("interrupted: saved") == 1         # said by rank 0 alone
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "config.toml", "last.pt", "metrics.csv"]


@pytest.mark.parametrize("batches", ["stream", "random"])
def test_the_ranks_rows_make_up_the_whole_batch(batches):
    ids = np.arange(5000) % 251
    make = (lambda rows: StreamBatches(ids, 6, 10, rows)) if batches == "stream" else (
        lambda rows: RandomBatches(ids, 6, 10, seed=1, rows=rows))
    whole = make(slice(None))
    parts = [make(Group(rank, 3).rows(6)) for rank in range(3)]
    for _ in range(4):
        expected = whole.next().window
        assert torch.equal(torch.cat([p.next().window for p in parts]), expected)


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ConfigError, match="--batch-size 32 does not split evenly over 3 "
                                          "processes; use a multiple of 3"):
        Group(0, 3).rows(32)


def test_each_rank_takes_its_rows_of_a_saved_hidden_state():
    h = torch.arange(2 * 8 * 4, dtype=torch.float32).view(2, 8, 4)
    c = -h
    parts = [Group(rank, 4).my_rows((h, c), 8) for rank in range(4)]
    assert torch.equal(torch.cat([p[0] for p in parts], dim=1), h)
    assert torch.equal(torch.cat([p[1] for p in parts], dim=1), c)
    assert Group(0, 2).my_rows(h, 16) is None          # another batch size: start fresh
