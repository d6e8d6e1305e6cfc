"""Checkpoints: the file format, atomic saves, safe loads, and an exact resume.

A checkpoint loads with plain torch, holds CPU tensors, round-trips the model exactly,
survives kill -9 at any moment and refuses damaged or foreign files in one line; a run
interrupted and resumed writes the same metrics and weights as a straight run."""

from __future__ import annotations

import csv
import errno
import os
import random
import shutil
import signal
import time

import pytest
import torch

from charrnn import checkpoint as checkpoint_module
from charrnn import files
from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from charrnn.config import ModelConfig, TrainConfig, to_dict
from charrnn.data import Vocab
from charrnn.errors import CheckpointError, ConfigError, TrainingInterrupted
from charrnn.model import CharRNN, detach_hidden
from charrnn.train import train

from helpers import run, start_training, tiny_configs, wait_for


def test_checkpoints_load_with_plain_torch_and_hold_cpu_tensors(tiny_run):
    raw = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)
    assert raw["format_version"] == 1 and isinstance(raw["vocab"], str)
    assert all(t.device.type == "cpu" for t in raw["model_state"].values())


def test_checkpoint_round_trip_gives_identical_logits(tiny_run, tmp_path):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    idx = torch.randint(0, len(vocab), (2, 30))
    before, _ = model(idx)
    ckpt = load_checkpoint(tiny_run / "best.pt")
    ckpt["model_state"] = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(ckpt, tmp_path / "copy.pt")
    again, _ = model_from_checkpoint(load_checkpoint(tmp_path / "copy.pt"))[0](idx)
    assert torch.equal(before, again)


def test_resume_refuses_changed_model_settings(tiny_run, small_text):
    ckpt = load_checkpoint(tiny_run / "last.pt")
    _, config = tiny_configs(max_steps=30)
    bigger = ModelConfig(**{**ckpt["model_config"], "hidden_size": 64})
    with pytest.raises(ConfigError, match="hidden_size 32 -> 64"):
        train(small_text, bigger, config, resume=tiny_run / "last.pt", progress=False)


def test_init_from_needs_the_checkpoints_characters(tiny_run, tmp_path):
    ckpt = load_checkpoint(tiny_run / "best.pt")
    other = tmp_path / "other.txt"
    other.write_text("Ω≈ç" * 2000, encoding="utf-8")
    model, config = tiny_configs()
    with pytest.raises(Exception, match=r"3 character\(s\) that the checkpoint's vocabulary lacks"):
        train(other, ModelConfig(**ckpt["model_config"]), config,
              init_from=tiny_run / "best.pt", progress=False)


def test_vocab_of_a_checkpoint_round_trips(tiny_run):
    ckpt = load_checkpoint(tiny_run / "best.pt")
    assert Vocab(ckpt["vocab"]) == Vocab.from_text(ckpt["vocab"])


def test_a_foreign_file_is_not_a_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="missing format_version"):
        load_checkpoint(tmp_path / "state.pt")


# --- the loop against a plain-torch one ---------------------------------------------


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


def test_resume_says_which_training_settings_changed(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    code, _, err = run(["train", "--resume", str(copy), "--max-steps", "25", "--lr", "0.001"],
                       capsys)
    assert code == 0, err
    assert "resuming with changed training settings: lr 0.003 -> 0.001; max_steps 20 -> 25" in err
    assert load_checkpoint(copy / "last.pt")["step"] == 25
    code, _, err = run(["train", "--resume", str(copy), "--max-steps", "26", "-q"], capsys)
    assert code == 0 and err == ""                  # -q: the result alone, no notes


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


def test_single_bit_flips_in_the_zip_directory_never_escape_as_tracebacks(tiny_run, tmp_path):
    """The directory at the end of the archive (record names, sizes, methods, flags) is
    what zipfile trusts first: a bit of each of its last 1,500 bytes, flipped in turn."""
    original = (tiny_run / "best.pt").read_bytes()
    path = tmp_path / "damaged.pt"
    outcomes = {"refused": 0, "harmless": 0}
    for position in range(len(original) - 1500, len(original)):
        for bit in (position % 8,):
            damaged = bytearray(original)
            damaged[position] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            try:
                model_from_checkpoint(load_checkpoint(path), path)
            except CheckpointError:
                outcomes["refused"] += 1
            else:
                outcomes["harmless"] += 1
    assert outcomes["refused"] > 500, outcomes


def metrics_rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("batching", ["stream", "random"])
def test_an_interrupted_and_resumed_run_equals_the_straight_run(batching, small_text,
                                                                tmp_path, monkeypatch):
    """Ctrl-C during step 15 of 30 (between evaluations at 10, 20, 30), then --resume.
    Dropout draws from torch's RNG, random batching from its own generator, stream
    batching carries the hidden state and the data position; warmup and a cosine decay
    make the learning rate depend on the step, and the step-20 row's train loss averages
    steps 11-20 across the interruption. So every column that does not measure time
    (step, epoch, lr, train_loss, val_loss, val_bpc) and every weight and optimizer
    moment must come out equal."""
    model = ModelConfig(cell="lstm", embedding_dim=16, hidden_size=32, num_layers=2,
                        dropout=0.3)
    settings = dict(max_steps=30, eval_every=10, batching=batching, warmup_steps=8)
    _, straight = tiny_configs(**settings, out=str(tmp_path / "straight"))
    train(small_text, model, straight, progress=False)

    calls = {"n": 0}

    def detach_and_interrupt(hidden):       # runs once per step, after the update
        calls["n"] += 1
        if calls["n"] == 15:
            os.kill(os.getpid(), signal.SIGINT)
        return detach_hidden(hidden)

    monkeypatch.setattr(train_module, "detach_hidden", detach_and_interrupt)
    _, stopped_config = tiny_configs(**settings, out=str(tmp_path / "resumed"))
    with pytest.raises(TrainingInterrupted) as stopped:
        train(small_text, model, stopped_config, progress=False)
    assert stopped.value.signum == signal.SIGINT
    monkeypatch.undo()
    saved = load_checkpoint(stopped.value.checkpoint)
    assert saved["step"] == 15

    resumed = train(small_text, model, stopped_config, resume=stopped.value.checkpoint,
                    progress=False)
    assert resumed.step == 30
    a, b = metrics_rows(tmp_path / "straight"), metrics_rows(tmp_path / "resumed")
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["10", "20", "30"]
    for column in ("step", "epoch", "lr", "train_loss", "val_loss", "val_bpc"):
        assert [r[column] for r in a] == [r[column] for r in b], column
    for row in b:                                   # the timing columns are filled in
        assert float(row["elapsed_s"]) > 0 and float(row["chars_per_s"]) > 0
    # The clock goes on from the time the first part trained.
    assert 0 < float(b[0]["elapsed_s"]) <= saved["elapsed"] < float(b[1]["elapsed_s"])
    first, again = (load_checkpoint(tmp_path / name / "last.pt")
                    for name in ("straight", "resumed"))
    for name, tensor in first["model_state"].items():
        assert torch.equal(tensor, again["model_state"][name]), name
    moments = [(s, t) for s, t in zip(first["optimizer_state"]["state"].values(),
                                      again["optimizer_state"]["state"].values())]
    assert moments and all(torch.equal(s["exp_avg_sq"], t["exp_avg_sq"]) for s, t in moments)
    assert first["data_state"].keys() == again["data_state"].keys()
    assert first["data_state"]["position"] == again["data_state"]["position"] == 30


def test_a_run_resumed_from_the_checkpoint_of_an_evaluation_equals_the_straight_run(
        small_text, tmp_path, monkeypatch):
    """A crash just after the evaluation at step 20 saved last.pt (before metrics.csv
    was written): resumed from that checkpoint, the step-30 row averages steps 21-30
    only, as in the straight run, and every loss and weight comes out the same."""
    model = ModelConfig(cell="gru", embedding_dim=16, hidden_size=32, num_layers=1)
    settings = dict(max_steps=30, eval_every=10, warmup_steps=4)
    _, straight = tiny_configs(**settings, out=str(tmp_path / "straight"))
    train(small_text, model, straight, progress=False)

    class Crash(Exception):
        pass

    writes, real = [], files.write_metrics

    def write_then_crash(run_dir, rows):
        writes.append(rows[-1]["step"])
        if len(writes) == 2:
            raise Crash
        real(run_dir, rows)

    monkeypatch.setattr(files, "write_metrics", write_then_crash)
    _, config = tiny_configs(**settings, out=str(tmp_path / "resumed"))
    with pytest.raises(Crash):
        train(small_text, model, config, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 20
    train(small_text, model, config, resume=tmp_path / "resumed", progress=False)
    a, b = metrics_rows(tmp_path / "straight"), metrics_rows(tmp_path / "resumed")
    for column in ("step", "lr", "train_loss", "val_loss"):
        assert [r[column] for r in a] == [r[column] for r in b], column
    first, again = (load_checkpoint(tmp_path / name / "last.pt")
                    for name in ("straight", "resumed"))
    for name, tensor in first["model_state"].items():
        assert torch.equal(tensor, again["model_state"][name]), name


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_torn_checkpoint(small_text, tmp_path):
    """Evaluate (and so save) after every step; in each of six trials, start or resume,
    wait until the run has gone past where the last one stopped (its metrics.csv has a
    later step), kill -9 at a random moment of the save cycle, and load what is left."""
    out = tmp_path / "run"
    rng = random.Random(1234)
    steps_seen, torn_writes_interrupted = [0], 0
    for trial in range(6):
        resume = ["--resume", str(out)] if (out / "last.pt").exists() else []
        proc = start_training(small_text, out, "--eval-every", "1", "--val-fraction", "0.02",
                              "--max-steps", "1000000", *resume)
        target = steps_seen[-1] + rng.randint(1, 3)
        wait_for(out / "metrics.csv", proc,
                 until=lambda path: int(metrics_rows(path.parent)[-1]["step"]) >= target)
        pause = rng.uniform(0.0, 0.3)               # somewhere in the next save or two
        time.sleep(pause)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        torn_writes_interrupted += len(list(out.glob(".*.tmp")))
        for name in ("best.pt", "last.pt"):
            ckpt = load_checkpoint(out / name)            # never torn: old or new, whole
            assert all(torch.isfinite(t).all() for t in ckpt["model_state"].values())
        steps_seen.append(load_checkpoint(out / "last.pt")["step"])
        assert steps_seen[-1] >= target, steps_seen
    print(f"steps at each kill: {steps_seen[1:]}; temporary files left by killed writes: "
          f"{torn_writes_interrupted}")


def test_only_known_format_versions_and_a_vocabulary_load(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    for version, message in ((checkpoint_module.FORMAT_VERSION + 1, "newer charrnn"),
                             (0, "invalid format_version"), ("1", "invalid format_version")):
        ckpt["format_version"] = version
        torch.save(ckpt, tmp_path / "other.pt")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "other.pt")
    ckpt["format_version"] = checkpoint_module.FORMAT_VERSION
    for vocab in ("", ["a", "b"]):
        torch.save({**ckpt, "vocab": vocab}, tmp_path / "other.pt")
        with pytest.raises(CheckpointError, match="has no vocabulary"):
            load_checkpoint(tmp_path / "other.pt")
    torch.save(ckpt, tmp_path / "same.pt")
    assert load_checkpoint(tmp_path / "same.pt")["step"] == ckpt["step"]


def test_sample_without_a_path_takes_the_run_that_saved_last(tiny_run, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)
    for name, age in (("old", 1000), ("new", 10)):
        shutil.copytree(tiny_run, tmp_path / "runs" / name)
        for f in (tmp_path / "runs" / name).iterdir():
            os.utime(f, (time.time() - age, time.time() - age))
    code, out, err = run(["sample", "--len", "5", "--seed", "1"], capsys)
    assert code == 0 and len(out) == 5
    assert err.splitlines()[0] == f"sampling from {os.path.join('runs', 'new', 'best.pt')}"
    os.utime(tmp_path / "runs" / "old" / "last.pt")       # the old run saved again, now
    code, _, err = run(["sample", "--len", "5"], capsys)
    assert err.splitlines()[0] == f"sampling from {os.path.join('runs', 'old', 'best.pt')}"


def test_a_loaded_model_predicts_without_dropout(tmp_path):
    """A checkpoint of a model trained with dropout loads ready to predict: the same
    input gives the same logits every time, equal to the module's own eval mode."""
    config = ModelConfig(cell="gru", embedding_dim=8, hidden_size=16, num_layers=2,
                         dropout=0.5)
    model = CharRNN(6, config)
    save_checkpoint({"model_config": to_dict(config), "train_config": to_dict(TrainConfig()),
                     "vocab": "abcdef", "model_state": model.state_dict()},
                    tmp_path / "dropout.pt")
    loaded, _ = model_from_checkpoint(load_checkpoint(tmp_path / "dropout.pt"))
    idx = torch.randint(0, 6, (4, 30))
    with torch.no_grad():
        first, again, expected = loaded(idx)[0], loaded(idx)[0], model.eval()(idx)[0]
    assert torch.equal(first, again) and torch.allclose(first, expected)


def test_resuming_removes_the_temporary_files_a_killed_save_left(tiny_run, small_text,
                                                                 tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    torn = [run_dir / ".last.pt.x1y2.tmp", run_dir / ".best.pt.a3b4.tmp"]
    for path in torn:
        path.write_bytes((run_dir / "last.pt").read_bytes()[:1000])
    saved = load_checkpoint(run_dir / "last.pt")
    _, config = tiny_configs(max_steps=22)
    train(small_text, ModelConfig(**saved["model_config"]), config, resume=run_dir,
          progress=False)
    assert not any(path.exists() for path in torn)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 22
