"""The training run: learning, evaluation, schedule, run folder, checkpoints, resume."""

from __future__ import annotations

import csv
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from charrnn.config import ModelConfig, TrainConfig, read_toml
from charrnn.data import Vocab, load_text
from charrnn.errors import CheckpointError, ConfigError
from charrnn import train as train_module
from charrnn.errors import TrainingInterrupted
from charrnn.model import detach_hidden
from charrnn.train import evaluate, lr_at, train

from conftest import tiny_configs

UNIGRAM = 3.35  # nats/char of a unigram model on tiny-shakespeare


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_learns_well_below_the_unigram_level(cell, shakespeare, tmp_path):
    text = tmp_path / "part.txt"
    text.write_text(shakespeare.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    model = ModelConfig(cell=cell, embedding_dim=32, hidden_size=128, num_layers=1)
    config = TrainConfig(seq_length=64, batch_size=32, max_steps=150, eval_every=150,
                         sample_every=0, lr=1e-2, warmup_steps=10, device="cpu",
                         out=str(tmp_path / "run"))
    result = train(text, model, config, progress=False)
    assert result.step == 150
    assert result.val_loss < UNIGRAM - 0.8, result.val_loss


def test_run_folder_holds_checkpoints_metrics_and_config(tiny_run):
    assert (tiny_run / "best.pt").is_file() and (tiny_run / "last.pt").is_file()
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20]
    assert all(float(r["val_loss"]) > 0 and float(r["chars_per_s"]) > 0 for r in rows)
    saved = read_toml(tiny_run / "config.toml")
    assert saved["model"]["hidden_size"] == 32 and saved["train"]["max_steps"] == 20
    ckpt = load_checkpoint(tiny_run / "last.pt")
    assert ckpt["step"] == 20 and ckpt["val_loss"] == pytest.approx(float(rows[-1]["val_loss"]))
    assert ckpt["best_val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows))


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


def test_evaluate_is_the_mean_loss_of_one_stateful_pass(tiny_run, small_text):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    ids = vocab.encode(load_text(small_text)[:3000])
    x = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(x[:-1].unsqueeze(0))
        expected = F.cross_entropy(logits[0], x[1:]).item()
    assert evaluate(model, ids, torch.device("cpu")) == pytest.approx(expected, rel=1e-5)


def test_ctrl_c_then_resume_gives_the_same_weights_as_a_straight_run(
        small_text, tmp_path, monkeypatch):
    model, straight = tiny_configs(max_steps=30, eval_every=10, out=str(tmp_path / "a"))
    full = train(small_text, model, straight, progress=False)

    # Press Ctrl-C during step 15 of an identical run: the step finishes, last.pt is saved.
    calls = {"n": 0}

    def detach_and_interrupt(hidden):
        calls["n"] += 1
        if calls["n"] == 15:
            os.kill(os.getpid(), signal.SIGINT)
        return detach_hidden(hidden)

    monkeypatch.setattr(train_module, "detach_hidden", detach_and_interrupt)
    _, same = tiny_configs(max_steps=30, eval_every=10, out=str(tmp_path / "b"))
    with pytest.raises(TrainingInterrupted) as stopped:
        train(small_text, model, same, progress=False)
    assert stopped.value.signum == signal.SIGINT
    monkeypatch.undo()

    ckpt = load_checkpoint(stopped.value.checkpoint)
    assert ckpt["step"] == 15
    second = train(small_text, model, same, resume=ckpt, resume_path=stopped.value.checkpoint,
                   progress=False)
    assert second.step == 30
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert [r["step"] for r in b["metrics"]] == [10, 20, 30]
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name
    assert [r["val_loss"] for r in a["metrics"]] == [r["val_loss"] for r in b["metrics"]]
    assert second.val_loss == full.val_loss


def test_resume_refuses_changed_model_settings(tiny_run, small_text):
    ckpt = load_checkpoint(tiny_run / "last.pt")
    model, config = tiny_configs(max_steps=30)
    bigger = ModelConfig(**{**ckpt["model_config"], "hidden_size": 64})
    with pytest.raises(ConfigError, match="hidden_size 32 -> 64"):
        train(small_text, bigger, config, resume=ckpt, progress=False)


def test_init_from_needs_the_checkpoints_characters(tiny_run, tmp_path):
    ckpt = load_checkpoint(tiny_run / "best.pt")
    other = tmp_path / "other.txt"
    other.write_text("Ω≈ç" * 2000, encoding="utf-8")
    model, config = tiny_configs()
    with pytest.raises(Exception, match=r"3 character\(s\) that the checkpoint's vocabulary lacks"):
        train(other, ModelConfig(**ckpt["model_config"]), config, init_from=ckpt,
              progress=False)


def test_bidirectional_training_is_refused(small_text):
    model, config = tiny_configs()
    model.bidirectional = True
    with pytest.raises(ConfigError, match="must predict"):
        train(small_text, model, config, progress=False)


def test_max_time_budget_stops_the_run(small_text, tmp_path):
    model, config = tiny_configs(max_steps=None, max_time=2.0, eval_every=10_000,
                                 out=str(tmp_path / "t"))
    result = train(small_text, model, config, progress=False)
    assert 0 < result.step < 100_000
    assert load_checkpoint(tmp_path / "t" / "last.pt")["step"] == result.step


def test_learning_rate_warms_up_then_decays_by_cosine():
    c = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 0.0, c) == pytest.approx(0.1)
    assert lr_at(9, 0.0, c) == pytest.approx(1.0)
    assert lr_at(500, 0.5, c) == pytest.approx(0.55)
    assert lr_at(999, 1.0, c) == pytest.approx(0.1)
    assert all(lr_at(s, s / 100, c) >= lr_at(s + 1, (s + 1) / 100, c) for s in range(10, 99))


def test_linear_decay_is_a_straight_line_to_the_floor():
    c = TrainConfig(lr=1.0, warmup_steps=0, min_lr_ratio=0.0, decay="linear")
    assert [lr_at(s, p, c) for s, p in ((0, 0.0), (10, 0.25), (20, 0.5), (40, 1.0))] == \
        pytest.approx([1.0, 0.75, 0.5, 0.0])
    floor = TrainConfig(lr=2.0, warmup_steps=0, min_lr_ratio=0.5, decay="linear")
    assert lr_at(5, 0.5, floor) == pytest.approx(1.5) and lr_at(9, 1.0, floor) == pytest.approx(1.0)


def test_vocab_of_a_checkpoint_round_trips(tiny_run):
    ckpt = load_checkpoint(tiny_run / "best.pt")
    assert Vocab(ckpt["vocab"]) == Vocab.from_text(ckpt["vocab"])


def test_a_foreign_file_is_not_a_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="missing format_version"):
        load_checkpoint(tmp_path / "state.pt")
