"""No lost work: atomic checkpoints under kill -9, signals, divergence, failed saves,
unwritable or full folders; and the batching invariants over arbitrary sizes."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import checkpoint as checkpoint_module
from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.cli import main
from charrnn.data import RandomBatches, StreamBatches
from charrnn.errors import CharRNNError, CheckpointError
from charrnn.train import train

from conftest import tiny_configs

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--hidden-size", "32", "--embedding-dim", "16", "--batch-size", "8",
              "--seq-length", "32", "--sample-every", "0", "-q"]


def start_training(text: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(text), *TINY_FLAGS,
                             "--out", str(out), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_torn_checkpoint(small_text, tmp_path):
    """Evaluate (and so save) after every step, kill -9 at random moments, load what is
    left, resume, and do it again."""
    out = tmp_path / "run"
    rng = random.Random(1234)
    steps_seen, torn_writes_interrupted = [], 0
    for trial in range(10):
        resume = ["--resume", str(out)] if (out / "last.pt").exists() else []
        proc = start_training(small_text, out, "--eval-every", "1", "--val-fraction", "0.02",
                              "--max-steps", "1000000", *resume)
        if not resume:
            wait_for(out / "last.pt", proc)
        time.sleep(rng.uniform(1.5, 3.5))
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        torn_writes_interrupted += len(list(out.glob(".*.tmp")))
        for name in ("best.pt", "last.pt"):
            ckpt = load_checkpoint(out / name)            # never torn: old or new, whole
            assert all(torch.isfinite(t).all() for t in ckpt["model_state"].values())
        steps_seen.append(load_checkpoint(out / "last.pt")["step"])
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
    print(f"steps at each kill: {steps_seen}; temporary files left by killed writes: "
          f"{torn_writes_interrupted}")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_last_pt_and_exits_with_its_code(small_text, tmp_path, signum,
                                                              code):
    out = tmp_path / "run"
    proc = start_training(small_text, out, "--eval-every", "5", "--max-steps", "1000000")
    wait_for(out / "last.pt", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"interrupted: saved {out / 'last.pt'}; continue "
                                            f"with charrnn train --resume {out}")
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] >= 5


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        small_text, tmp_path, monkeypatch):
    real = train_module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, target, **kwargs):
        loss = real(logits, target, **kwargs)
        if "reduction" not in kwargs:          # training steps, not the validation pass
            calls["n"] += 1
            if calls["n"] == 25:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    model, config = tiny_configs(max_steps=40, eval_every=10, out=str(tmp_path / "run"))
    with pytest.raises(CharRNNError, match=r"loss is nan at step 25; last good checkpoint: "
                                           r".*last\.pt"):
        train(small_text, model, config, progress=False)
    kept = load_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["step"] == 20
    assert all(torch.isfinite(t).all() for t in kept["model_state"].values())


def test_a_failed_save_keeps_the_previous_checkpoint(tiny_run, tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    shutil.copy(tiny_run / "last.pt", target)
    before = target.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous "
                                              "checkpoint, if any, is kept"):
        save_checkpoint({"model_state": {}}, target)
    assert target.read_bytes() == before
    assert list(tmp_path.iterdir()) == [target]          # no temporary file left behind


def test_an_unwritable_run_folder_fails_before_training(small_text, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(small_text), *TINY_FLAGS, "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    # The encoded corpus is cached beside the run folder, so that write fails first.
    assert err.startswith(f"error: cannot write the corpus cache {blocker / '.cache'}")
    assert "Not a directory" in err and len(err.strip().splitlines()) == 1


def test_too_little_free_space_fails_before_training(small_text, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    model, config = tiny_configs(out=str(tmp_path / "run"))
    with pytest.raises(CharRNNError, match=r"only 0\.0 MB free in .*checkpoints need about"):
        train(small_text, model, config, progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_says_which_training_settings_changed(tiny_run, small_text, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--max-steps", "25", "--lr", "0.001", "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 0, err
    assert "resuming with changed training settings: lr 0.003 -> 0.001; max_steps 20 -> 25" in err
    assert load_checkpoint(run / "last.pt")["step"] == 25


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 3000), batch=st.integers(1, 8), seq=st.integers(1, 40),
       seed=st.integers(0, 2**31), stream=st.booleans())
def test_every_batch_targets_its_inputs_shifted_by_one(n, batch, seq, seed, stream):
    ids = np.arange(n, dtype=np.int64)          # id i sits at position i: targets are x + 1
    if stream and n // batch < seq + 1 or not stream and n < seq + 1:
        return
    batches = StreamBatches(ids, batch, seq) if stream else RandomBatches(ids, batch, seq, seed)
    for _ in range(5):
        b = batches.next()
        assert b.x.shape == b.y.shape == (batch, seq)
        assert torch.equal(b.y, b.x + 1)
        assert int(b.y.max()) < n


def test_any_flipped_byte_is_caught_or_harmless(tiny_run, tmp_path):
    original = (tiny_run / "best.pt").read_bytes()
    reference = load_checkpoint(tiny_run / "best.pt")
    rng = random.Random(7)
    caught = 0
    for position in rng.sample(range(len(original)), 150):
        damaged = bytearray(original)
        damaged[position] ^= 0xFF
        path = tmp_path / "damaged.pt"
        path.write_bytes(bytes(damaged))
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            caught += 1
            continue
        # Not caught: then it was a byte nothing reads (zip padding), and the content
        # is exactly the original.
        for name, tensor in reference["model_state"].items():
            assert torch.equal(ckpt["model_state"][name], tensor), (position, name)
        assert ckpt["vocab"] == reference["vocab"] and ckpt["metrics"] == reference["metrics"]
    assert caught > 100
