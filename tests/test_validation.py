"""Validation in streams: what a pass scores, that it is the number of one pass over the
whole text, that training and `eval` compute the same one, and that a stop request is
obeyed during it (time budgets: test_budget.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import scoring
from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.config import ModelConfig
from charrnn.data import load_text
from charrnn.errors import TrainingInterrupted
from charrnn.files import read_metrics
from charrnn.model import CharRNN
from charrnn.scoring import CONTEXT_CHARS, STREAM_CHARS, STREAMS, nats_sum, stream_plan
from charrnn.train import train

from helpers import CELLS, child_env, run, tiny_configs

CPU = torch.device("cpu")


# ------------------------------------------------------------------------ the streams
def test_a_short_text_is_one_stream_and_a_long_one_is_cut_into_equal_tiles():
    assert stream_plan(10).tolist() == [[1, 10]]
    assert stream_plan(2 * STREAM_CHARS).tolist() == [[1, 2 * STREAM_CHARS]]  # 1 short of 2
    n = 2 * STREAM_CHARS + 1
    assert stream_plan(n).tolist() == [[1, 1 + STREAM_CHARS], [1 + STREAM_CHARS, n]]
    plan = stream_plan(10_000_001)
    assert len(plan) == STREAMS and plan[0, 0] == 1 and plan[-1, 1] == 10_000_001
    assert (plan[1:, 0] == plan[:-1, 1]).all()                    # they tile the text
    assert set(np.diff(plan).ravel()) <= {156_250, 156_249}          # 10,000,000 / 64


def test_a_capped_pass_scores_equal_streams_spread_over_the_text():
    plan = stream_plan(10_000_001, max_chars=640_000)
    assert len(plan) == STREAMS and (np.diff(plan).ravel() == 10_000).all()
    assert plan[0, 0] == 1 and plan[-1, 0] == 1 + 63 * 10_000_000 // 64
    assert (plan[:, 1] <= 10_000_001).all()
    assert stream_plan(30_001, max_chars=10**9).tolist() == stream_plan(30_001).tolist()
    assert len(stream_plan(30_001, max_chars=5_000)) == 1            # 5,000 // 4,096


def per_stream_sum(model: CharRNN, ids: np.ndarray, plan: np.ndarray) -> float:
    """The nats of each stream's targets computed on its own: one forward call over
    the CONTEXT_CHARS characters before its first input and its own characters."""
    total = 0.0
    with torch.no_grad():
        for start, end in plan.tolist():
            first = max(0, start - 1 - CONTEXT_CHARS)
            x = torch.from_numpy(ids[first:end - 1].astype(np.int64))[None]
            y = torch.from_numpy(ids[first + 1:end].astype(np.int64))
            logits, _ = model(x)
            losses = F.cross_entropy(logits[0], y, reduction="none")
            total += losses[start - 1 - first:].sum().item()
    return total


@pytest.mark.parametrize("cell", ["rnn-tanh", "gru", "lstm-proj"])
def test_each_stream_scores_what_its_own_pass_would(cell):
    torch.manual_seed(0)
    model = CharRNN(7, ModelConfig(embedding_dim=4, hidden_size=8, num_layers=2,
                                   **CELLS[cell])).eval()
    ids = np.random.default_rng(0).integers(0, 7, 20_000).astype(np.uint8)
    for max_chars in (None, 9_000):
        plan = stream_plan(len(ids), max_chars)
        assert len(plan) > 1
        total, count = nats_sum(model, ids, CPU, max_chars=max_chars)
        assert count == int(np.diff(plan).sum())
        assert total == pytest.approx(per_stream_sum(model, ids, plan), rel=1e-6)
        # Under torchrun each process scores every n-th stream; the parts add up.
        parts = [nats_sum(model, ids, CPU, max_chars=max_chars, part=(k, 3)) for k in range(3)]
        assert sum(p[0] for p in parts) == pytest.approx(total, rel=1e-6)
        assert sum(p[1] for p in parts) == count


def test_streams_give_the_number_of_one_pass_over_the_whole_text(tiny_run, small_text):
    """On 60,000 characters, 14 streams: within 1e-3 nats per character of a single
    stateful pass (the benchmark measures a trained model on tiny-shakespeare's 10%)."""
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    ids = vocab.encode(load_text(small_text))
    assert len(stream_plan(len(ids))) == 14
    x = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(x[:-1][None])
        one_pass = F.cross_entropy(logits[0], x[1:]).item()
    assert scoring.evaluate(model, ids, CPU) == pytest.approx(one_pass, abs=1e-3)


def test_eval_scores_what_training_reported_with_and_without_a_cap(small_text, tmp_path,
                                                                   capsys):
    """A run validated on 20,000 characters of a 50,000-character file: `eval --max-chars`
    gives its val loss; and with no cap the two agree as well."""
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(load_text(small_text)[:50_001], encoding="utf-8")
    for cap in (20_000, 0):
        out = tmp_path / f"run{cap}"
        model, config = tiny_configs(max_steps=10, val_file=str(held_out),
                                     val_max_chars=cap, out=str(out))
        train(small_text, model, config, progress=False)
        val_loss = read_metrics(out / "metrics.csv")[-1]["val_loss"]
        code, out_text, err = run(["eval", str(out / "last.pt"), str(held_out), "--max-chars",
                                   str(cap), "-q"], capsys)
        assert code == 0, err
        assert float(out_text.split()[0]) == pytest.approx(val_loss, abs=5e-5)
        assert f"({cap or 50_000:,} characters scored)" in out_text


def test_a_validation_folder_is_its_files_read_as_one_text(small_text, tmp_path):
    """``--val-file`` takes a folder (or a pattern) as training takes one: its files
    joined by the separator, scored as that one text would be."""
    text = load_text(small_text)
    held = tmp_path / "held"
    held.mkdir()
    (held / "a.txt").write_text(text[:3000], encoding="utf-8")
    (held / "b.txt").write_text(text[5000:7000], encoding="utf-8")
    joined = tmp_path / "joined.txt"
    joined.write_text(text[:3000] + "\n\n" + text[5000:7000], encoding="utf-8")
    losses = []
    for val in (held, joined, f"{held}/*.txt"):
        out = tmp_path / f"run{len(losses)}"
        model, config = tiny_configs(max_steps=4, eval_every=4, val_file=str(val),
                                     out=str(out))
        train(small_text, model, config, progress=False)
        losses.append(read_metrics(out / "metrics.csv")[-1]["val_loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6) and losses[2] == losses[0]


# ---------------------------------------------------------------- a stop during a pass
def test_a_stop_during_validation_saves_the_step_and_a_resume_scores_it(small_text, tmp_path,
                                                                        monkeypatch):
    """SIGINT arrives during the second validation pass: the pass is given up, last.pt
    holds step 20 without its row, and the resumed run scores step 20 first, so that its
    metrics are those of a run never stopped."""
    real, calls = train_module.nats_sum, []

    def interrupted_second_pass(*args, on_chunk=None, **kwargs):
        calls.append(1)

        def chunk(scored):
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)
            on_chunk(scored)
        return real(*args, on_chunk=chunk, **kwargs)

    model, config = tiny_configs(max_steps=30, eval_every=10, out=str(tmp_path / "stopped"))
    monkeypatch.setattr(train_module, "nats_sum", interrupted_second_pass)
    with pytest.raises(TrainingInterrupted):
        train(small_text, model, config, progress=False)
    stopped = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert stopped["step"] == 20 and [r["step"] for r in stopped["metrics"]] == [10]
    monkeypatch.setattr(train_module, "nats_sum", real)

    resumed = train(small_text, model, config, progress=False, resume=tmp_path / "stopped")
    _, config = tiny_configs(max_steps=30, eval_every=10, out=str(tmp_path / "straight"))
    straight = train(small_text, model, config, progress=False)
    assert resumed.step == straight.step == 30
    stopped_rows = read_metrics(tmp_path / "stopped" / "metrics.csv")
    straight_rows = read_metrics(tmp_path / "straight" / "metrics.csv")
    assert [r["step"] for r in stopped_rows] == [r["step"] for r in straight_rows] == [10, 20, 30]
    assert [r["val_loss"] for r in stopped_rows] == pytest.approx(
        [r["val_loss"] for r in straight_rows], rel=1e-6)


def read_until(fd: int, wanted: bytes, proc: subprocess.Popen, timeout: float = 300) -> bytes:
    """What the terminal at ``fd`` shows, up to and including ``wanted``."""
    seen, deadline = b"", time.monotonic() + timeout
    while wanted not in seen:
        assert proc.poll() is None and time.monotonic() < deadline, seen[-2000:]
        if select.select([fd], [], [], 0.1)[0]:
            seen += os.read(fd, 65536)
    return seen


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_long_validation_pass_stops_without_finishing_it(signum, shakespeare,
                                                                          tmp_path):
    """A 6,700,000-character validation text, whose whole pass takes about 15 s on 2
    cores: the terminal shows the pass under way, the signal comes, and the run ends
    with the pass given up: last.pt holds the step without a metrics row (a run that
    finished the pass first would have written its row)."""
    text = load_text(shakespeare)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(text * 6, encoding="utf-8")
    out = tmp_path / "run"
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", str(shakespeare), "--out", str(out),
         "--hidden-size", "128", "--num-layers", "1", "--batch-size", "8", "--seq-length",
         "32", "--eval-every", "1", "--sample-every", "0", "--val-file", str(held_out),
         "--val-max-chars", "0"], env=child_env(COLUMNS="120"), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    try:
        read_until(controller, b"validating", proc)
        proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        proc.kill()
        os.close(controller)
    assert proc.returncode == 128 + signum
    stopped = load_checkpoint(out / "last.pt")
    assert stopped["step"] == 1 and stopped["metrics"] == []


def test_a_validation_file_is_kept_where_it_is_for_a_resume_from_elsewhere(
        small_text, tmp_path, capsys, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "val.txt").write_text(load_text(small_text)[:5000],
                                               encoding="utf-8")
    monkeypatch.chdir(tmp_path / "mine")
    flags = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4",
             "--seq-length", "16", "--eval-every", "2", "--sample-every", "0", "-q"]
    code, _, err = run(["train", str(small_text), *flags, "--max-steps", "2", "--val-file",
                        "val.txt", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", "--resume", "r", "--max-steps", "4", "-q"], capsys)
    assert code == 0, err
    (tmp_path / "mine" / "val.txt").rename(tmp_path / "val.txt")
    code, _, err = run(["train", "--resume", "r", "--max-steps", "6", "-q"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "does not exist; give an existing file, folder or pattern with --val-file" in err
    code, _, err = run(["train", "--resume", "r", "--max-steps", "6", "--val-file", "val.txt",
                        "-q"], capsys)
    assert code == 0, err
