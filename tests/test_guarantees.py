"""What a run folder promises whatever the user does: two trainings never share one, a
changed text is not resumed silently, no output option writes over a run's files, and
damaged or hostile checkpoints are refused in one line."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn import stopping
from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.errors import CharRNNError, CheckpointError, TrainingInterrupted
from charrnn.train import train

from helpers import TINY_FLAGS, child_env, run, start_training, tiny_configs, wait_for


def test_a_run_folder_in_use_is_refused_at_once_and_freed_when_its_process_dies(
        small_text, tmp_path, capsys):
    out = tmp_path / "run"
    first = start_training(small_text, out, "--max-steps", "100000", "--eval-every", "5")
    try:
        wait_for(out / "metrics.csv", first)
        config_before = (out / "config.toml").read_bytes()
        for argv in (["train", str(small_text), *TINY_FLAGS, "--out", str(out), "--overwrite"],
                     ["train", "--resume", str(out), "-q"]):
            code, _, err = run(argv, capsys)          # this process: the other one holds it
            assert code == 1 and err.strip() == (
                f"error: run folder {out} is in use by another charrnn train; wait for it to "
                "end, or train into another folder with --out")
        assert (out / "config.toml").read_bytes() == config_before
    finally:
        first.kill()            # SIGKILL: no handler runs, the kernel drops the lock
        first.wait()
    code, _, err = run(["train", "--resume", str(out), "--max-steps", "1", "-q"], capsys)
    assert code == 0, err


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    code, _, err = run(["train", "empty.txt", *TINY_FLAGS], capsys)
    assert code == 1 and "empty" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def damaged(ckpt: dict, path, **changes) -> None:
    save_checkpoint({**ckpt, **changes}, path)


@pytest.mark.parametrize("command", ["sample", "eval", "inspect", "resume", "init-from"])
def test_a_checkpoint_with_non_finite_weights_is_refused_by_every_command(
        command, tiny_run, small_text, tmp_path, capsys):
    ckpt = load_checkpoint(tiny_run / "last.pt")
    state = dict(ckpt["model_state"])
    state["head.bias"] = state["head.bias"].clone()
    state["head.bias"][3] = math.nan
    folder = tmp_path / "run"
    folder.mkdir()
    damaged(ckpt, folder / "last.pt", model_state=state)
    argv = {"sample": ["sample", str(folder / "last.pt")],
            "eval": ["eval", str(folder / "last.pt"), str(small_text)],
            "inspect": ["inspect", str(folder / "last.pt")],
            "resume": ["train", "--resume", str(folder), "-q"],
            "init-from": ["train", str(small_text), "--init-from", str(folder / "last.pt"),
                          "--out", str(tmp_path / "new"), "-q"]}[command]
    code, out, err = run(argv, capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1:] == [     # after the note of what eval scores
        f"error: {folder / 'last.pt'} holds weights that are not finite (NaN or Inf in "
        "head.bias); use a checkpoint saved before the run diverged, e.g. its best.pt"]


@pytest.mark.parametrize("key, value", [
    ("optimizer_state", None), ("optimizer_state", {"state": {}, "param_groups": []}),
    ("data_state", "junk"), ("step", "seven"), ("metrics", 3), ("rng", {}),
    ("train_config", {"lr": "fast"}),
])
def test_resume_refuses_a_damaged_training_state_in_one_line(key, value, tiny_run, tmp_path,
                                                             capsys):
    ckpt = load_checkpoint(tiny_run / "last.pt")
    folder = tmp_path / "run"
    folder.mkdir()
    if value is None:
        ckpt.pop(key)
    else:
        ckpt[key] = value
    save_checkpoint(ckpt, folder / "last.pt")
    code, out, err = run(["train", "--resume", str(folder), "-q"], capsys)
    assert code == 1 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'last.pt'} cannot be "
                                                   "resumed")
    assert f"--init-from {folder / 'last.pt'}" in lines[0]


def crafted(tmp_path, name: str, pickle_bytes: bytes):
    """A file laid out as torch.save writes it, its data.pkl replaced."""
    torch.save({"a": 1}, tmp_path / "plain.pt")
    path = tmp_path / name
    with zipfile.ZipFile(tmp_path / "plain.pt") as source, zipfile.ZipFile(path, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            out.writestr(item, pickle_bytes if item.filename.endswith("data.pkl") else data)
    return path


@pytest.mark.parametrize("pickle_bytes, named", [
    (b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.", "posix.system"),
    (b"\x80\x02(cos\nsystem\nS'true'\ni.", "os.system"),
    (b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u\x82\x01.", "pickle operation 130"),
])
def test_a_checkpoint_refused_for_its_pickled_content_says_so(pickle_bytes, named, tmp_path):
    path = crafted(tmp_path, "evil.pt", pickle_bytes)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == (f"{path} is not a charrnn checkpoint: it "
                                  f"{'uses' if 'operation' in named else 'names'} {named}, "
                                  "which could run code when loaded; refused without running "
                                  "any of it")


# ------------------------------------------------------------------ resuming the right text
def test_resume_refuses_a_changed_text_unless_allowed(small_text, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(small_text.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run(["train", str(text), *TINY_FLAGS, "--max-steps", "10", "--out",
                        str(out)], capsys)
    assert code == 0, err
    with open(text, "a", encoding="utf-8") as f:
        f.write("one more line\n")
    before = (out / "last.pt").read_bytes()
    code, _, err = run(["train", "--resume", str(out), "--max-steps", "15", "-q"], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith(
        f"error: the training text {text.resolve()} is not the one {out / 'last.pt'} was "
        "trained on (")
    assert "pass --allow-changed-text" in err and (out / "last.pt").read_bytes() == before
    code, _, err = run(["train", "--resume", str(out), "--max-steps", "15", "-q",
                        "--allow-changed-text"], capsys)
    assert code == 0, err
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 15


def test_a_relative_text_path_resumes_from_another_folder(small_text, tmp_path, capsys,
                                                          monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "text.txt").write_text(small_text.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(work)
    code, _, err = run(["train", "text.txt", *TINY_FLAGS, "--max-steps", "10", "--out", "run"],
                       capsys)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", "--resume", "work/run", "--max-steps", "12", "-q"], capsys)
    assert code == 0, err
    assert torch.load(work / "run" / "last.pt", weights_only=True)["step"] == 12


def test_resuming_a_folder_stopped_before_its_first_checkpoint_says_what_to_do(
        tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.toml").write_text("[model]\n[train]\n", encoding="utf-8")
    code, _, err = run(["train", "--resume", str(folder)], capsys)
    assert code == 1 and err.strip() == (
        f"error: run folder {folder} has no best.pt or last.pt: it stopped before its first "
        f"evaluation saved one; start it again with charrnn train TEXT --out {folder} "
        "--overwrite")


# ------------------------------------------------------------- outputs never replace a run
@pytest.mark.parametrize("argv, victim", [
    (["sample", "{run}", "-o", "{copy}/last.pt"], "last.pt"),
    (["sample", "{run}", "-o", "{copy}/metrics.csv"], "metrics.csv"),
    (["sample", "{run}", "-o", "{copy}/best.pt", "--num-samples", "2"], "best.pt"),
    (["inspect", "{run}", "--activations", "Romeo", "--html", "{copy}/config.toml"],
     "config.toml"),
])
def test_no_output_option_writes_over_a_runs_files(argv, victim, tiny_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    before = (copy / victim).read_bytes()
    code, out, err = run([a.format(run=tiny_run, copy=copy) for a in argv], capsys)
    assert code == 1 and out == ""
    kind = "checkpoint" if victim.endswith(".pt") else victim
    assert err.strip().endswith(f"{copy / victim}: it would replace a run's {kind}; choose "
                                "another file name")
    assert (copy / victim).read_bytes() == before


# ------------------------------------------------------------------------------ signals
def test_sighup_saves_and_stops_like_sigterm(small_text, tmp_path):
    out = tmp_path / "run"
    proc = start_training(small_text, out, "--max-steps", "100000", "--eval-every", "5")
    wait_for(out / "metrics.csv", proc)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert err.strip().splitlines()[-1] == (f"interrupted: saved {out / 'last.pt'}; continue "
                                            f"with charrnn train --resume {out}")
    assert load_checkpoint(out / "last.pt")["step"] >= 5


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_corpus_is_encoded_stops_at_once_and_leaves_no_partial_file(
        signum, tmp_path):
    big = tmp_path / "big.txt"
    line = "To be, or not to be, that is the question: ÿ\n".encode()
    big.write_bytes(line * (120_000_000 // len(line)))     # 120 MB: encoding takes a while
    cache = tmp_path / "cache"
    proc = start_training(big, tmp_path / "run", "--cache-dir", str(cache))
    deadline = time.monotonic() + 300
    while not list(cache.glob(".*.npy.*.tmp")):             # the ids being written
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - sent < 3.0                  # at once, not after the encoding
    assert proc.returncode == 128 + signum, err
    assert err.strip() == "interrupted before training began; nothing was saved"
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*.tmp"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_second_signal_waits_for_the_save_in_progress():
    stop = stopping.StopRequest()
    stop.training = True
    stop(signal.SIGINT, None)                     # the first: a request, read after the step
    assert stop.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        with stop.hold():
            stop(signal.SIGINT, None)             # the second, during a save: held back
            saved = True                          # ... the save finishes
    assert saved
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGINT, None)                 # outside a save: at once
    early = stopping.StopRequest()                # before training: nothing to save
    with pytest.raises(TrainingInterrupted):
        early(signal.SIGTERM, None)


# ------------------------------------------------------------------- saves that fail
def test_a_failed_save_is_reported_and_training_goes_on(small_text, tmp_path, capsys,
                                                        monkeypatch):
    real, calls = train_module.save_checkpoint, []

    def flaky(payload, path):
        calls.append(payload["step"])
        if payload["step"] == 10:
            raise CheckpointError(f"cannot write checkpoint {path}: No space left on device; "
                                  "the previous checkpoint, if any, is kept")
        return real(payload, path)

    monkeypatch.setattr(train_module, "save_checkpoint", flaky)
    out = tmp_path / "run"
    code, _, err = run(["train", str(small_text), *TINY_FLAGS[:-1], "--max-steps", "30",
                        "--eval-every", "10", "--out", str(out)], capsys)
    assert code == 0, err
    assert ("warning: cannot write checkpoint " in err
            and "training goes on, the next evaluation saves again" in err)
    assert load_checkpoint(out / "last.pt")["step"] == 30
    assert [row["step"] for row in load_checkpoint(out / "last.pt")["metrics"]] == [10, 20, 30]


def test_a_non_finite_validation_loss_is_never_saved(small_text, tmp_path, monkeypatch):
    real, calls = train_module.nats_sum, []

    def turns_nan(*args, **kwargs):
        calls.append(1)
        return (math.nan, 1) if len(calls) == 2 else real(*args, **kwargs)

    monkeypatch.setattr(train_module, "nats_sum", turns_nan)
    model, config = tiny_configs(max_steps=30, eval_every=10, out=str(tmp_path / "run"))
    with pytest.raises(CharRNNError, match=r"training diverged: the validation loss is nan at "
                                           r"step 20; last good checkpoint: .*last\.pt"):
        train(small_text, model, config, progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 10
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == 10


# ------------------------------------------------------------- user strings print as typed
@pytest.mark.parametrize("name", ["x[bold]y", "a[/]b", "[red]"])
def test_paths_print_literally(name, small_text, tmp_path, capsys):
    out = tmp_path / name
    code, _, err = run(["train", str(small_text), *TINY_FLAGS[:-1], "--max-steps", "3",
                        "--out", str(out)], capsys)
    assert code == 0, err
    assert f"run folder: {out}" in err and f"checkpoints: {out}/best.pt" in err
    code, out_text, err = run(["sample", str(out), "--len", "5"], capsys)
    assert code == 0 and f"sampling from {out}/best.pt" in err and len(out_text) == 5


# ------------------------------------------------------------- one way out of every command
def test_sample_into_a_closed_pipe_ends_quietly(tiny_run):
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", str(tiny_run),
                             "--len", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env())
    assert len(proc.stdout.read(10)) == 10        # like `head -c 10`, then the reader goes
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Error" not in err and "Exception" not in err


def test_an_unexpected_error_is_one_line_unless_debug_asks(tmp_path, capsys, monkeypatch):
    from charrnn import runs

    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(runs, "list_runs", broken)
    code, out, err = run(["runs", str(tmp_path)], capsys)
    assert code == 1 and out == ""
    assert err.strip() == ("error: unexpected TypeError: boom; this is a bug in charrnn: run "
                           "the command again with --debug to see where, and report it")
    monkeypatch.delenv("CHARRNN_DEBUG", raising=False)
    with pytest.raises(TypeError, match="boom"):
        run(["--debug", "runs", str(tmp_path)], capsys)


def test_sigterm_stops_any_command_and_leaves_no_partial_file(tmp_path):
    big = tmp_path / "big.txt"
    line = "To be, or not to be, that is the question: ÿ\n".encode()
    big.write_bytes(line * (120_000_000 // len(line)))
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "prepare", str(big),
                             "--cache-dir", str(cache), "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    deadline = time.monotonic() + 300
    while not list(cache.glob(".*.tmp")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and out == ""
    assert err.strip() == f"stopped by signal {int(signal.SIGTERM)}"
    assert not list(cache.glob(".*.tmp"))


@pytest.mark.parametrize("key, value", [
    ("metrics", 3), ("metrics", ["x", {"step": "a", "val_loss": 2.0}]), ("corpus", [1, 2]),
    ("train_config", "adam"), ("train_config", {"seq_length": 10**12, "optimizer": 5}),
    ("best_val_loss", "low"), ("val_loss", [1.0]), ("step", "ten"), ("elapsed", {"s": 1}),
    ("charrnn_version", 7), ("format_version", True),
])
def test_inspect_shows_a_checkpoint_with_unusual_metadata(key, value, tiny_run, tmp_path,
                                                          capsys):
    ckpt = load_checkpoint(tiny_run / "last.pt")
    ckpt[key] = value
    path = tmp_path / "odd.pt"
    torch.save(ckpt, path)              # as written by another program: no checks on the way
    for extra in ([], ["--json"]):
        code, out, err = run(["inspect", str(path), *extra], capsys)
        assert (code, "Traceback" in err) == (0, False) or (
            code == 1 and len(err.strip().splitlines()) == 1), err
        assert code == 0 or key == "format_version", err


def test_one_damaged_run_folder_is_marked_and_the_others_listed(tiny_run, tmp_path, capsys,
                                                                monkeypatch):
    runs_dir = tmp_path / "runs"
    shutil.copytree(tiny_run, runs_dir / "good")
    odd = runs_dir / "odd"                       # files of the wrong shape everywhere
    odd.mkdir()
    (odd / "config.toml").write_text('[model]\ncell = [1]\nnum_layers = "two"\n',
                                     encoding="utf-8")
    (odd / "metrics.csv").write_text("step,val_loss,elapsed_s\nnan,1.5,x\n", encoding="utf-8")
    (odd / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    broken = runs_dir / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text("[model]\n", encoding="utf-8")
    from charrnn import runs

    real = runs.summarize

    def fails_on_broken(run_dir):
        if run_dir.name == "broken":
            raise PermissionError(13, "Permission denied")
        return real(run_dir)

    monkeypatch.setattr(runs, "summarize", fails_on_broken)
    code, out, err = run(["runs", str(runs_dir), "--json"], capsys)
    assert code == 0, err
    listed = {Path(r["path"]).name: r for r in json.loads(out)}
    assert set(listed) == {"good", "odd", "broken"}
    assert listed["broken"]["problem"] == "Permission denied"
    assert listed["broken"]["model"] == "damaged" and listed["good"]["problem"] is None
    assert listed["odd"]["cell"] is None and listed["odd"]["steps"] is None
    code, out, err = run(["runs", str(runs_dir)], capsys)
    assert code == 0 and "damaged" in out and "good" in out


# --------------------------------------------------------------------------- special files
@pytest.mark.parametrize("argv", [
    ["train", "{fifo}", *TINY_FLAGS], ["eval", "{run}", "{fifo}"], ["prepare", "{fifo}"],
    ["inspect", "{run}", "--activations", "{fifo}"],
    ["train", "{text}", "--config", "/dev/zero"], ["plot", "/dev/zero"], ["sample", "{fifo}"],
])
def test_pipes_and_devices_are_refused_before_anything_waits_on_them(argv, tiny_run,
                                                                     small_text, tmp_path,
                                                                     capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)                     # nobody writes: opening it would wait for ever
    args = [a.format(fifo=fifo, run=tiny_run, text=small_text) for a in argv]
    code, out, err = run(args, capsys)
    assert code == 1 and out == ""
    assert "is not a regular file (a pipe or a device)" in err.strip().splitlines()[-1], err


# ------------------------------------------------------------------------ extreme values
@pytest.mark.parametrize("argv, expected", [
    (["train", "{text}", "--hidden-size", "60000", "--num-layers", "20"],
     r"training this model \(561,6\d\d,\d{3},\d{3} parameters\) on batches of 32x64 needs about "
     r"[\d,.]+ GB of memory, more than the [\d,.]+ GB free on cpu; make it smaller"),
    (["train", "{text}", "--batch-size", "1000000", "--seq-length", "1000000"],
     "needs about .* GB of memory"),
    (["train", "{text}", "--hidden-size", "1000000000"], "hidden_size must be at most 1,048,576"),
    (["train", "{text}", "--num-layers", "1000000"], "num_layers must be at most 1,024"),
    (["train", "{text}", "--epochs", "1e308"], "epochs must be at most 1,000,000"),
    (["train", "{text}", "--seed", str(2**64)], "seed must be at most 9,223,372,036,854,775,807"),
    (["inspect", "--hidden-size", "60000", "--num-layers", "1000"],
     "building this model .* needs about"),
    (["inspect", "--seq-length", "1000000000"], "keep --seq-length x --batch-size within"),
    (["sample", "{run}", "--num-samples", "1000000000"], "--num-samples must be at most 10,000"),
    (["plot", "{run}", "--width", "60000", "--height", "60000"], "at most 10000x10000"),
    (["download", "tinyshakespeare", "--timeout", "inf"], "--timeout must be greater than 0 "
                                                          "and at most 3600 seconds, got inf"),
])
def test_extreme_values_are_refused_before_any_work(argv, expected, small_text, tiny_run,
                                                    tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    code, out, err = run([a.format(text=small_text, run=tiny_run) for a in argv], capsys)
    assert code == 1 and out == "", err
    assert re.search(expected, err.strip().splitlines()[-1]), err
    assert time.monotonic() - started < 30        # refused, not attempted
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_vanishing_temperature_draws_the_most_likely_character(tiny_run, capsys):
    code, cold, err = run(["sample", str(tiny_run), "--len", "40", "--temperature", "1e-40",
                           "--seed", "3"], capsys)
    assert code == 0, err
    code, greedy, _ = run(["sample", str(tiny_run), "--len", "40", "--greedy"], capsys)
    assert cold == greedy


def test_parameter_count_without_building_matches_the_module():
    from charrnn.config import build
    from charrnn.model import CharRNN, parameter_count

    for values in (dict(cell="lstm"), dict(cell="gru", num_layers=3),
                   dict(cell="rnn", nonlinearity="relu", num_layers=2),
                   dict(cell="lstm", proj_size=32, hidden_size=64, embedding_dim=32,
                        tie_weights=True),
                   dict(cell="gru", bidirectional=True, num_layers=3, hidden_size=16,
                        embedding_dim=32, tie_weights=True),
                   dict(cell="lstm", bidirectional=True, proj_size=8, hidden_size=16)):
        config = build("model", values)
        assert parameter_count(67, config) == CharRNN(67, config).num_parameters(), values


def test_each_sample_is_drawn_and_written_in_turn(tiny_run, capsys):
    from charrnn.checkpoint import model_from_checkpoint
    from charrnn.sample import stream

    code, out, err = run(["sample", str(tiny_run), "--len", "30", "--num-samples", "3",
                          "--seed", "9", "--prime", "Th"], capsys)
    assert code == 0, err
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    expected = ["Th" + "".join(stream(model, vocab, 30, prime="Th", seed=9 + i))
                for i in range(3)]
    assert out == "\n\n".join(expected)


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tiny_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    before = (copy / "last.pt").read_bytes()
    code, out, err = run(["train", "--resume", str(copy), "--json"], capsys)
    assert code == 0, err
    assert "nan" not in err and "done: nothing to train, the run had already reached its " \
                               "budget at step 20" in err
    assert json.loads(out)["step"] == 20 and json.loads(out)["first_step_s"] is None
    assert (copy / "last.pt").read_bytes() == before


def test_characters_only_in_the_validation_file_are_pointed_out(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("abc abc cab\n" * 300, encoding="utf-8")
    (tmp_path / "val.txt").write_text("abc xyz\n" * 40, encoding="utf-8")
    code, _, err = run(["train", str(tmp_path / "train.txt"), "--val-file",
                        str(tmp_path / "val.txt"), *TINY_FLAGS[:-1], "--max-steps", "2",
                        "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert ("note: 3 character(s) occur only in the validation text (x y z): the model never "
            "trains on them") in err


# ---------------------------------------------- faults at random moments, twice, then resume
FAULTS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FAULT_RUN = ["--max-steps", "40", "--eval-every", "4", "--val-fraction", "0.05",
             "--warmup-steps", "6", "--dropout", "0.2"]


def _step_reached(out) -> int:
    rows = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()[1:]
    return int(rows[-1].split(",")[0]) if rows else 0


def _faulted_run(text, out, rng, faults: int) -> list[str]:
    """Start (or resume) the run and stop it with a random signal at a random moment
    (start-up, reading, a step, an evaluation, a save), ``faults`` times; then let it
    finish. What happened each time, for the failure message."""
    log = []
    for _ in range(faults + 1):
        again = (["--resume", str(out)] if list(out.glob("*.pt")) else
                 ["--overwrite"] if (out / "config.toml").exists() else [])   # never saved
        config = out / "config.toml"
        written = config.stat().st_mtime_ns if config.exists() else 0
        proc = start_training(text, out, *FAULT_RUN, *again)
        if len(log) == faults:                                   # the last: to the end
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, (log, err)
            return log
        # Not while Python itself starts (CPython reports a Ctrl-C there as a fatal
        # error): from the moment the command has loaded torch, its handlers are set.
        deadline = time.monotonic() + 300
        while "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        # The moment, chosen by event: as torch has loaded (reading, encoding); as this
        # process has written its config.toml (the model built, the loop about to start);
        # or as a later evaluation is reached (a step or a save under way, well before
        # the end).
        wait = rng.choice(["torch", "config", 4, 8])
        if wait == "config":
            wait_for(config, proc, until=lambda p: p.stat().st_mtime_ns > written)
        elif wait != "torch":
            target = min(20, (_step_reached(out) if (out / "metrics.csv").exists() else 0)
                         + wait)
            wait_for(out / "metrics.csv", proc, until=lambda p: _step_reached(p.parent) >= target)
        fault = rng.choice(FAULTS)
        proc.send_signal(fault)
        _, err = proc.communicate(timeout=300)
        log.append(f"{signal.Signals(fault).name} after {wait} -> {proc.returncode}")
        # (-fault: it came as Python shut down after a finished run, when CPython puts
        # the default handlers back; the weights below show nothing was lost.)
        assert proc.returncode in (-signal.SIGKILL, -fault, 128 + fault), (log, err)
        assert "Traceback" not in err, err
    return log


def _faults_change_nothing(small_text, tmp_path, seed: int, faults: int) -> None:
    straight = start_training(small_text, tmp_path / "straight", *FAULT_RUN)
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err
    out = tmp_path / "faulted"
    log = _faulted_run(small_text, out, random.Random(seed), faults)
    a, b = (load_checkpoint(tmp_path / name / "last.pt") for name in ("straight", "faulted"))
    assert a["step"] == b["step"] == 40, log
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), (log, name)
    for column in ("step", "lr", "train_loss", "val_loss"):
        assert [r[column] for r in a["metrics"]] == [r[column] for r in b["metrics"]], log


def test_two_faults_at_random_moments_then_resume_give_the_straight_run(small_text, tmp_path):
    _faults_change_nothing(small_text, tmp_path, seed=11, faults=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_many_faults_at_random_moments_then_resume_give_the_straight_run(seed, small_text,
                                                                         tmp_path):
    _faults_change_nothing(small_text, tmp_path, seed=100 + seed, faults=3)


# --------------------------------------------------------- every command, random option values
MODEL_FLAGS = ["--hidden-size", "--num-layers", "--embedding-dim", "--proj-size", "--cell",
               "--nonlinearity", "--dropout", "--tie-weights"]
TRAIN_FLAGS = MODEL_FLAGS + [
    "--batch-size", "--seq-length", "--lr", "--epochs", "--max-steps", "--warmup-steps",
    "--val-fraction", "--optimizer", "--decay", "--dtype", "--batching", "--seed",
    "--eval-every", "--grad-clip", "--min-lr-ratio", "--weight-decay", "--sample-every",
    "--save-every", "--keep", "--patience"]
COMMANDS = {
    # command: (arguments before the random options, options to draw, arguments after)
    "train": (["train", "{text}", *TINY_FLAGS, "--out", "{tmp}/run", "--overwrite"],
              TRAIN_FLAGS, ["--max-time", "3", "--device", "cpu"]),
    "config": (["config", "show"], TRAIN_FLAGS + ["--max-time"], []),
    "sample": (["sample", "{run}"], ["--len", "--temperature", "--top-k", "--top-p", "--seed",
                                     "--num-samples", "--prime", "--greedy"], []),
    "inspect": (["inspect"], MODEL_FLAGS + ["--seq-length", "--batch-size", "--vocab-size",
                                            "--bidirectional", "--verify"], []),
    "inspect-run": (["inspect", "{run}"], ["--seq-length", "--batch-size", "--activations",
                                           "--layer", "--neuron", "--top", "--signal",
                                           "--state"], []),
    "eval": (["eval", "{run}", "{text}"], ["--skip-unknown", "--device"], []),
    "runs": (["runs", "{runs}"], ["--sort"], []),
    "plot": (["plot", "{run}"], ["--width", "--height", "--title", "-o"], []),
}
NO_VALUE = {"--greedy", "--verify", "--bidirectional", "--skip-unknown", "--tie-weights"}
VALUES = st.one_of(
    st.integers(-3, 700).map(str), st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "0", "1", "nan", "inf", "-inf", "1e308", "1e-40", "lstm", "gru",
                     "relu", "adam", "x[bold]y", "a[/]b", "ü€\n", "--", "/dev/zero",
                     "{tmp}/out.png", "{run}/last.pt", "{run}/metrics.csv"]),
    st.text(max_size=6))


@st.composite
def command_lines(draw):
    name = draw(st.sampled_from(sorted(COMMANDS)))
    before, flags, after = COMMANDS[name]
    argv = list(before)
    for flag in draw(st.lists(st.sampled_from(flags), max_size=4)):
        argv += [flag] if flag in NO_VALUE else [flag, draw(VALUES)]
    return argv + after


def _run_fuzzed(argv, tiny_run, small_text, tmp_path, capsys) -> None:
    runs_dir = tmp_path / "runs"
    run_copy = runs_dir / "run"
    if not run_copy.exists():
        shutil.copytree(tiny_run, run_copy)
    guarded = {p: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    args = [a.replace("{text}", str(small_text)).replace("{run}", str(run_copy))
            .replace("{runs}", str(runs_dir)).replace("{tmp}", str(tmp_path)) for a in argv]
    started = time.monotonic()
    code, out, err = run(args, capsys)
    assert code in (0, 1, 2, 130), (args, code, err)
    assert "Traceback" not in err and "unexpected" not in err, (args, err)
    if code == 1:
        assert err.strip().splitlines()[-1].startswith("error:"), (args, err)
    if code == 2:
        assert err.strip().startswith("usage error:"), (args, err)
    assert time.monotonic() - started < 120, args
    for path, content in guarded.items():       # a run's files are never changed
        assert path.read_bytes() == content, (args, path)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_every_command_answers_random_options_with_a_status_and_at_most_one_line(
        argv, tiny_run, small_text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_fuzzed(argv, tiny_run, small_text, tmp_path, capsys)


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_every_command_answers_many_random_options(argv, tiny_run, small_text, tmp_path,
                                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_fuzzed(argv, tiny_run, small_text, tmp_path, capsys)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from([["sample", "{ckpt}", "--len", "5"], ["inspect", "{ckpt}"],
                                ["eval", "{ckpt}", "{text}"], ["runs", "{folder}"],
                                ["train", "--resume", "{folder}", "-q"]]),
       cut=st.integers(0, 300_000), flips=st.lists(st.tuples(st.integers(0, 300_000),
                                                              st.integers(1, 255)), max_size=3))
def test_every_command_answers_a_damaged_checkpoint_with_a_status_and_one_line(
        command, cut, flips, tiny_run, small_text, tmp_path, capsys):
    folder = tmp_path / "damaged"
    folder.mkdir(exist_ok=True)
    data = bytearray((tiny_run / "last.pt").read_bytes())[:cut or None]
    for position, mask in flips:
        if position < len(data):
            data[position] ^= mask
    (folder / "last.pt").write_bytes(bytes(data))
    args = [a.format(ckpt=folder / "last.pt", folder=folder, text=small_text) for a in command]
    code, _, err = run(args, capsys)
    assert code in (0, 1), (args, err)
    assert "Traceback" not in err and "unexpected" not in err, (args, err)
    if code == 1:
        assert err.strip().splitlines()[-1].startswith("error:"), err


@pytest.mark.parametrize("index", [
    '{"format": 1, "path": 5', "\x00\xff",
    '{"format": 1, "path": "t", "size": 1, "mtime_ns": 1, "chars": "x", "vocab": 5, '
    '"sha256": 7}'])
def test_a_damaged_cache_index_is_rebuilt(index, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("hello world, hello again\n" * 300, encoding="utf-8")
    cache = tmp_path / "cache"
    assert run(["prepare", str(text), "--cache-dir", str(cache), "-q"], capsys)[0] == 0
    for scan in cache.glob("*.json"):
        scan.write_text(index, encoding="utf-8")
    code, out, err = run(["prepare", str(text), "--cache-dir", str(cache), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["chars"] == 7500


def test_a_config_file_with_a_byte_order_mark_is_read(small_text, tmp_path, capsys):
    config = tmp_path / "bom.toml"
    config.write_bytes("\ufeff[model]\nhidden_size = 24\n".encode("utf-8"))
    code, out, err = run(["config", "show", "--config", str(config), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["model"]["hidden_size"] == 24


def test_sample_output_replaces_links_and_survives_an_interruption(tiny_run, tmp_path, capsys,
                                                                   monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    link = tmp_path / "notes.txt"
    link.symlink_to(copy / "last.pt")                  # a harmless name for a checkpoint
    before = (copy / "last.pt").read_bytes()
    code, _, err = run(["sample", str(copy), "--len", "10", "-o", str(link)], capsys)
    assert code == 1 and "it would replace a run's checkpoint" in err
    assert (copy / "last.pt").read_bytes() == before
    kept = tmp_path / "kept.txt"
    kept.write_text("precious\n", encoding="utf-8")
    from charrnn import sample as sample_module

    real = sample_module.stream

    def stopped_midway(*args, **kwargs):
        for n, ch in enumerate(real(*args, **kwargs)):
            if n == 50:
                raise KeyboardInterrupt
            yield ch

    monkeypatch.setattr(sample_module, "stream", stopped_midway)
    code, _, err = run(["sample", str(copy), "--len", "500", "-o", str(kept)], capsys)
    assert code == 130 and kept.read_text(encoding="utf-8") == "precious\n"
    assert not list(tmp_path.glob(".kept.txt.*"))          # no partial file either


def test_out_never_turns_a_folder_of_other_files_into_a_run(small_text, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("mine", encoding="utf-8")
    (mine / ".draft.tmp").write_text("mine too", encoding="utf-8")
    code, _, err = run(["train", str(small_text), *TINY_FLAGS, "--out", str(mine),
                        "--overwrite"], capsys)
    assert code == 1 and err.strip() == (f"error: {mine} holds other files (.draft.tmp, "
                                         "notes.md), not a run; give --out a new or empty "
                                         "folder")
    assert sorted(p.name for p in mine.iterdir()) == [".draft.tmp", "notes.md"]


def test_the_config_of_a_run_that_never_saved_is_replaced_only_when_asked(small_text, tmp_path,
                                                                        capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.toml").write_text("[model]\nhidden_size = 99\n", encoding="utf-8")
    code, _, err = run(["train", str(small_text), *TINY_FLAGS, "--max-steps", "2", "--out",
                        str(folder)], capsys)
    assert code == 1 and "already holds a run (config.toml)" in err
    code, _, err = run(["train", str(small_text), *TINY_FLAGS, "--max-steps", "2", "--out",
                        str(folder), "--overwrite"], capsys)
    assert code == 0, err


def test_sample_length_has_a_bound(tiny_run, capsys):
    code, out, err = run(["sample", str(tiny_run), "--len", str(10**20)], capsys)
    assert code == 1 and out == "" and "--len must be at most 100,000,000" in err


def test_a_resume_into_another_folder_never_writes_over_the_run_there(tiny_run, tmp_path,
                                                                      capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    source = tmp_path / "source"
    shutil.copytree(tiny_run, source)
    before = (other / "last.pt").read_bytes()
    code, _, err = run(["train", "--resume", str(source), "--max-steps", "22", "--out",
                        str(other), "-q"], capsys)
    assert code == 1 and f"run folder {other} already holds a run" in err
    assert (other / "last.pt").read_bytes() == before
    code, _, err = run(["train", "--resume", str(source), "--max-steps", "22", "--out",
                        str(tmp_path / "fresh"), "-q"], capsys)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "fresh" / "last.pt")["step"] == 22


# ----------------------------------------------- default folders, --overwrite, idle resumes
def test_runs_started_in_the_same_second_get_folders_of_their_own(small_text, tmp_path,
                                                                   monkeypatch):
    """A sweep that starts runs at once: each gets its own default folder."""
    from datetime import datetime

    from charrnn import files

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 3, 15, 0, 0)

    monkeypatch.setattr(files, "datetime", Frozen)
    model, config = tiny_configs(max_steps=2, eval_every=2)
    results = [train(small_text, model, config, progress=False, runs_dir=tmp_path / "runs")
               for _ in range(3)]
    folders = [r.run_dir.name for r in results]
    assert folders == ["20261203-150000-small-lstm", "20261203-150000-small-lstm-2",
                       "20261203-150000-small-lstm-3"]
    assert all((r.run_dir / "best.pt").is_file() for r in results)


def test_a_failed_run_leaves_no_empty_default_folder(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    code, _, err = run(["train", str(tmp_path / "empty.txt"), *TINY_FLAGS,
                        "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 1 and "is empty" in err
    assert list((tmp_path / "runs").iterdir()) == []


def test_overwrite_removes_the_old_runs_tensorboard_events(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    old = out / "events.out.tfevents.1700000000.host.1.0"
    old.write_bytes(b"old curves")
    code, _, err = run(["train", str(small_text), *TINY_FLAGS, "--max-steps", "2",
                        "--out", str(out)], capsys)
    assert code == 1 and "already holds a run (TensorBoard events)" in err and old.exists()
    code, _, err = run(["train", str(small_text), *TINY_FLAGS, "--max-steps", "2",
                        "--out", str(out), "--overwrite"], capsys)
    assert code == 0, err
    assert not old.exists()


def test_a_resume_with_nothing_to_train_leaves_config_toml_as_it_was(small_text, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", str(small_text), *TINY_FLAGS, "--max-steps", "4",
                        "--eval-every", "2", "--out", str(out)], capsys)
    assert code == 0, err
    before = (out / "config.toml").read_bytes()
    code, _, err = run(["train", "--resume", str(out), "--lr", "0.5"], capsys)
    assert code == 0 and "nothing to train" in err
    assert (out / "config.toml").read_bytes() == before
    code, _, err = run(["train", "--resume", str(out), "--max-steps", "6"], capsys)
    assert code == 0 and "max_steps = 6" in (out / "config.toml").read_text(encoding="utf-8")
