"""No lost work: stop signals, divergence, unwritable or full folders; and the batching
invariants over arbitrary sizes. (Checkpoint files themselves: test_checkpoint.py.)"""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import files
from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint
from charrnn.cli import main
from charrnn.data import RandomBatches, StreamBatches
from charrnn.errors import CharRNNError
from charrnn.train import train

from helpers import TINY_FLAGS, child_env, run, start_training, tiny_configs, wait_for


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


@pytest.mark.parametrize("command", [["sample", "{run}", "--len", "100000000"],
                                     ["eval", "{run}", "-"]])
def test_ctrl_c_in_sample_or_eval_says_aborted_and_exits_130(tiny_run, command):
    # sample writes an endless text, eval reads an endless stdin: each is at work in the
    # command when the signal comes (a pipe holds 64 KiB, so 2 MB written were read).
    proc = subprocess.Popen([sys.executable, "-m", "charrnn",
                             *[a.format(run=tiny_run) for a in command]],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env())
    try:
        if command[0] == "sample":
            proc.stdout.read(1000)
        else:
            for _ in range(128):
                proc.stdin.write(b"a text to score " * 1024)
            proc.stdin.flush()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "aborted"
    assert "Traceback" not in err.decode()


# -------------------------------------------------------- a reader of stderr that goes away
NARRATED = [flag for flag in TINY_FLAGS if flag != "-q"][:-2] + ["--sample-every", "6"]


@pytest.mark.parametrize("lines", [4])      # from the start: the test after the next
def test_a_closed_stderr_never_stops_or_loses_a_run(small_text, tmp_path, lines):
    """``charrnn train ... 2>&1 | head -N``: the reader goes away after N lines (at
    start-up, after the first notes, during the steps and evaluations); the run goes on
    to its end, saves everything, and exits 0."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(small_text),
                             *NARRATED, "--max-steps", "18", "--eval-every", "6",
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=child_env())
    for _ in range(lines):
        proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    assert [int(row["step"]) for row in rows] == [6, 12, 18]
    assert load_checkpoint(out / "last.pt")["step"] == 18 and (out / "best.pt").is_file()


def test_a_closed_stderr_leaves_eval_its_answer(tiny_run, small_text, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "eval", str(tiny_run),
                             str(small_text)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env())
    proc.stderr.close()                        # before its first note
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "nats/char" in out.decode()


def test_no_progress_bar_is_drawn_into_a_file_or_a_pipe(tiny_run, small_text, capsys,
                                                        monkeypatch):
    """Every bar a command makes while stderr is not a terminal is disabled: a log
    gets whole lines, not bar frames."""
    from charrnn import progress

    made = []

    class Recorded(progress.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("disable"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(progress, "tqdm", Recorded)
    for argv in (["eval", str(tiny_run), str(small_text)],
                 ["eval", str(tiny_run), str(small_text), "--per-char", "-"],
                 ["train", str(small_text), *NARRATED, "--max-steps", "2", "--out", "r"],
                 ["sample", str(tiny_run), "--len", "5", "-o", "s.txt"]):
        code, _, err = run(argv, capsys)
        assert code == 0, err
        assert "\r" not in err
    assert made and all(made)


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


def test_an_unwritable_run_folder_fails_before_training(small_text, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(small_text), *TINY_FLAGS, "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    # The run folder is made (and held) first, before the text is read.
    assert err.startswith(f"error: cannot write to run folder {blocker / 'run'}: Not a "
                          "directory; choose another with --out")
    assert "Not a directory" in err and len(err.strip().splitlines()) == 1


def test_too_little_free_space_fails_before_training(small_text, tmp_path, monkeypatch):
    monkeypatch.setattr(files.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    model, config = tiny_configs(out=str(tmp_path / "run"))
    with pytest.raises(CharRNNError, match=r"only 0\.0 MB free in .*checkpoints need about"):
        train(small_text, model, config, progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


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


@pytest.mark.parametrize("closed", [2])     # stdout closed: test_guarantees, closed pipe
def test_a_stream_the_process_starts_without_is_no_error(small_text, tmp_path, closed):
    """``charrnn train ... 2>&-`` (or ``>&-``): a process started with stdout or stderr
    closed trains to its end, saves everything and exits 0."""
    import os

    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(small_text),
                           *NARRATED, "--max-steps", "4", "--eval-every", "2", "--json",
                           "--out", str(out)], env=child_env(), cwd=tmp_path,
                          stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(closed),
                          capture_output=False, timeout=300)
    assert done.returncode == 0
    assert load_checkpoint(out / "last.pt")["step"] == 4 and (out / "best.pt").is_file()


def test_a_closed_stdin_reads_as_empty(tiny_run, tmp_path):
    import os

    done = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(tiny_run),
                           "--prime-file", "-"], env=child_env(), cwd=tmp_path,
                          capture_output=True, text=True, preexec_fn=lambda: os.close(0),
                          timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == ("error: --prime-file - is empty; give a file with some "
                                   "text, or leave it out to start from the beginning of a line")
