"""The training run: learning, evaluation, schedule, budgets, the run folder; the loop
against a plain-torch one. (Checkpoint files and resume: test_checkpoint.py.)"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.config import ModelConfig, TrainConfig, read_toml
from charrnn.data import load_text
from charrnn.device import resolve_dtype
from charrnn.errors import ConfigError
from charrnn.model import CharRNN
from charrnn.optim import lr_at, make_optimizer
from charrnn.scoring import evaluate
from charrnn.train import train

from helpers import run, tiny_configs

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


def test_evaluate_is_the_mean_loss_of_one_stateful_pass(tiny_run, small_text):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    ids = vocab.encode(load_text(small_text)[:3000])
    x = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(x[:-1].unsqueeze(0))
        expected = F.cross_entropy(logits[0], x[1:]).item()
    assert evaluate(model, ids, torch.device("cpu")) == pytest.approx(expected, rel=1e-5)


def test_bidirectional_training_is_refused(small_text):
    model, config = tiny_configs()
    model.bidirectional = True
    with pytest.raises(ConfigError, match="must predict"):
        train(small_text, model, config, progress=False)


def test_each_step_uses_the_scheduled_learning_rate(small_text, tmp_path):
    """Step k of N (k = 1..N) uses lr * k / W during the W warmup steps, so step W uses
    lr itself; then floor + (lr - floor) * cosine, the cosine over the steps after the
    warmup: 0.5 (1 + cos(pi (k - 1 - W) / (N - W))). The metrics' lr is that of the step
    the row ends with. Here lr 3e-3, W = 5, floor = 0.1 lr, N = 12, a row every step."""
    model, config = tiny_configs(max_steps=12, eval_every=1, warmup_steps=5,
                                 out=str(tmp_path / "run"))
    train(small_text, model, config, progress=False)
    rows = load_checkpoint(tmp_path / "run" / "last.pt")["metrics"]

    def by_hand(k: int) -> float:
        if k <= 5:
            return 3e-3 * k / 5
        cosine = 0.5 * (1 + math.cos(math.pi * (k - 1 - 5) / (12 - 5)))
        return 3e-4 + (3e-3 - 3e-4) * cosine

    assert [r["lr"] for r in rows] == pytest.approx([by_hand(k) for k in range(1, 13)],
                                                    rel=1e-9)
    assert max(r["lr"] for r in rows) == pytest.approx(3e-3)     # warmup reaches --lr


def test_extending_a_finished_run_carries_on_down_from_its_rate(small_text, tmp_path):
    """--resume with a larger --max-steps: the added steps start at the rate the run had
    reached and decay from there to the floor; the rate never jumps back up."""
    model, config = tiny_configs(max_steps=12, eval_every=1, warmup_steps=2,
                                 out=str(tmp_path / "run"))
    train(small_text, model, config, progress=False)
    _, longer = tiny_configs(max_steps=18, eval_every=1, warmup_steps=2,
                             out=str(tmp_path / "run"))
    train(small_text, model, longer, resume=tmp_path / "run", progress=False)
    lrs = [r["lr"] for r in load_checkpoint(tmp_path / "run" / "last.pt")["metrics"]]
    assert len(lrs) == 18
    reached = lrs[11]                                   # step 12, where the run had ended
    # Steps 13..18 decay from there over the 6 added steps: cosine of 0/6 .. 5/6.
    floor = 3e-4
    expected = [floor + (reached - floor) * 0.5 * (1 + math.cos(math.pi * i / 6))
                for i in range(6)]
    assert lrs[12:] == pytest.approx(expected, rel=1e-9)
    assert max(lrs[12:]) <= reached


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


def reference_run(text: str, model_config: ModelConfig, c: TrainConfig, steps: int,
                  bf16: bool = False) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The weights after ``steps`` steps of a plain-torch loop written from the batching
    rules, and each step's loss: ids by hand, windows cut by hand, the hidden state
    carried (detached) from one window of a stream into the next and zero at the start
    of each epoch (stream), or zero for every window (random). Constant learning rate,
    AdamW without decay, gradients clipped to ``grad_clip``; with ``bf16``, the forward
    pass under bfloat16 autocast and the loss in float32."""
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(ch) for ch in text])
    torch.manual_seed(c.seed)
    model = CharRNN(len(chars), model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=0.0)
    B, T = c.batch_size, c.seq_length
    length = len(ids) // B
    streams = ids[:B * length].view(B, length)
    windows = (length - 1) // T
    offsets = torch.Generator().manual_seed(c.seed)
    hidden, losses = None, []
    for step in range(steps):
        if c.batching == "stream":
            i = step % windows
            window = streams[:, i * T:i * T + T + 1]
            if i == 0:
                hidden = None
        else:
            starts = torch.randint(0, len(ids) - T, (B, 1), generator=offsets)
            window = ids[starts + torch.arange(T + 1)]
            hidden = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, hidden = model(window[:, :-1], hidden)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)).float(), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) \
            else hidden.detach()
    return model.state_dict(), losses


@pytest.mark.parametrize("batching", ["stream", "random"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_matches_a_plain_torch_loop(batching, cell, tmp_path):
    """Stream batching carries the state across windows and starts each epoch from
    zero; random batching starts every window from zero. 8 streams of 175 characters
    hold (175 - 1) // 16 = 10 windows, so the 23 steps cross two epochs."""
    rng = np.random.default_rng(3)
    text = "".join(rng.choice(list("abcdefgh \n"), size=1400))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    (tmp_path / "v.txt").write_text(text[:200], encoding="utf-8")   # all of t.txt trains
    model = ModelConfig(cell=cell, embedding_dim=8, hidden_size=16, num_layers=2)
    config = TrainConfig(seq_length=16, batch_size=8, batching=batching, max_steps=23,
                         eval_every=10, sample_every=0, lr=1e-2, warmup_steps=0,
                         min_lr_ratio=1.0, weight_decay=0.0, grad_clip=0.1, device="cpu",
                         dtype="float32", val_file=str(tmp_path / "v.txt"),
                         out=str(tmp_path / "run"))   # the reference loop is in float32
    train(tmp_path / "t.txt", model, config, progress=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    weights, losses = reference_run(text, model, config, 23)
    for name, tensor in weights.items():
        assert torch.allclose(last["model_state"][name], tensor, atol=1e-5), name
    # Each row's train loss: the mean over the steps since the row before.
    assert [r["train_loss"] for r in last["metrics"]] == pytest.approx(
        [np.mean(losses[:10]), np.mean(losses[10:20]), np.mean(losses[20:])], abs=1e-5)
    # Passes over the text: 23 of 10 windows, or 23 batches of 8 x 16 of 1,400 characters.
    epochs = 2.3 if batching == "stream" else 23 * 8 * 16 / 1400
    assert last["epoch"] == pytest.approx(epochs)
    assert [float(r["epoch"]) for r in last["metrics"]] == pytest.approx(
        [epochs * s / 23 for s in (10, 20, 23)], abs=1e-4)


@pytest.mark.parametrize("capabilities, expected", [
    ({"avx512_bf16": True}, "bfloat16"), ({"amx_tile": True, "amx_bf16": True}, "bfloat16"),
    ({"architecture": "arm64", "bf16": True}, "bfloat16"),
    ({"avx2": True, "avx512_f": True, "avx512_bf16": False}, "float32"), ({}, "float32"),
    (None, "float32")])   # None: a torch too old to say
def test_auto_precision_follows_the_cpu_s_bf16_instructions(capabilities, expected,
                                                             monkeypatch):
    if capabilities is None:
        monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    else:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == expected
    assert [resolve_dtype(d, cpu) for d in ("float32", "bfloat16")] == ["float32", "bfloat16"]


@pytest.mark.parametrize("bf16_instructions", [True, False])
def test_auto_precision_trains_in_bfloat16_where_the_cpu_has_bf16_instructions(
        bf16_instructions, tmp_path, monkeypatch):
    """--dtype auto, the default, on a CPU that has (or lacks) bf16 instructions: the
    weights are those of a plain-torch loop under bfloat16 autocast (or in float32),
    which differ."""
    flags = {"avx2": True, "avx512_f": True, "avx512_bf16": bf16_instructions}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    text = "".join(np.random.default_rng(5).choice(list("abcdefgh \n"), size=1400))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    model = ModelConfig(cell="lstm", embedding_dim=8, hidden_size=16, num_layers=1)
    config = TrainConfig(seq_length=16, batch_size=8, max_steps=8, eval_every=8,
                         sample_every=0, lr=1e-2, warmup_steps=0, min_lr_ratio=1.0,
                         weight_decay=0.0, grad_clip=0.1, device="cpu",
                         val_file=str(tmp_path / "t.txt"), out=str(tmp_path / "run"))
    seen = {}
    result = train(tmp_path / "t.txt", model, config, progress=False, on_start=seen.update)
    expected = "bfloat16" if bf16_instructions else "float32"
    assert result.dtype == result.to_dict()["dtype"] == expected
    assert seen["dtype"] == f"{expected} (auto)"
    weights = load_checkpoint(tmp_path / "run" / "last.pt")["model_state"]
    same, other = (reference_run(text, model, config, 8, bf16=bf16)[0]
                   for bf16 in (bf16_instructions, not bf16_instructions))
    for name, tensor in weights.items():
        assert torch.allclose(tensor, same[name], atol=1e-5), name
    assert max((weights[name] - other[name]).abs().max() for name in weights) > 1e-4


def test_validation_scores_exactly_the_held_out_targets(tiny_run, small_text, capsys):
    """Training's val loss, `eval` on the held-out tenth and a one-call plain-torch
    loss over the same characters agree to 1e-6."""
    text = small_text.read_text(encoding="utf-8")
    held_out = text[len(text) - len(text) // 10:]         # the last tenth, by hand
    ckpt = load_checkpoint(tiny_run / "last.pt")
    model, vocab = model_from_checkpoint(ckpt)
    ids = torch.tensor([vocab.chars.index(ch) for ch in held_out])
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(0))        # one call over the whole text
    reference = F.cross_entropy(logits[0], ids[1:]).item()
    path = tiny_run.parent / "held_out.txt"
    path.write_text(held_out, encoding="utf-8")
    code, out, err = run(["eval", str(tiny_run / "last.pt"), str(path), "--json"], capsys)
    assert code == 0, err
    scored = json.loads(out)
    assert scored["scored"] == len(held_out) - 1
    assert abs(ckpt["val_loss"] - reference) < 1e-6
    assert abs(scored["nats_per_char"] - reference) < 1e-6


@pytest.mark.parametrize("batching, steps", [
    ("stream", 15),   # 8 streams of 175 characters: 10 whole windows of 16 per pass
    ("random", 17),   # ceil(1.5 * 1,400 / (8 * 16)): windows enough for 1.5 x the text
])
def test_an_epochs_budget_takes_that_many_passes_over_the_text(tmp_path, batching, steps):
    text = tmp_path / "t.txt"
    text.write_text("abcdefgh \n" * 140, encoding="utf-8")       # 1,400 characters
    model = ModelConfig(cell="gru", embedding_dim=4, hidden_size=8, num_layers=1)
    config = TrainConfig(seq_length=16, batch_size=8, batching=batching, epochs=1.5,
                         eval_every=100, sample_every=0, device="cpu", val_file=str(text),
                         out=str(tmp_path / "run"))
    result = train(text, model, config, progress=False)
    assert result.step == steps
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] >= 1.5


def test_adamw_decays_weight_matrices_only_and_decoupled_from_the_gradient():
    """With zero gradients, AdamW's step is the decay alone, w <- w (1 - lr wd), on the
    recurrent and head matrices; biases and the embedding table do not move."""
    model = CharRNN(7, ModelConfig(cell="lstm", embedding_dim=4, hidden_size=5,
                                   num_layers=1))
    config = TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5)
    optimizer = make_optimizer(model, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 0.95 if p.dim() >= 2 and name != "embedding.weight" else 1.0
        assert torch.allclose(p.detach(), before[name] * factor), name


def test_best_pt_keeps_the_lowest_validation_loss(small_text, tmp_path, monkeypatch):
    """Validation losses scripted to fall, rise, fall less: best.pt stays at the lowest
    one, last.pt follows the run, and the metrics hold each one with its bits."""
    scripted = iter([3.0, 2.0, 2.5, 2.2])
    monkeypatch.setattr(train_module, "nats_sum", lambda *args, **kw: (next(scripted), 1))
    model, config = tiny_configs(max_steps=40, eval_every=10, out=str(tmp_path / "run"))
    result = train(small_text, model, config, progress=False)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (best["step"], best["val_loss"], best["best_val_loss"]) == (20, 2.0, 2.0)
    assert (last["step"], last["val_loss"], last["best_val_loss"]) == (40, 2.2, 2.0)
    assert (result.val_loss, result.best_val_loss) == (2.2, 2.0)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [float(r["val_loss"]) for r in rows] == [3.0, 2.0, 2.5, 2.2]
    assert [float(r["val_bpc"]) for r in rows] == pytest.approx(
        [v / math.log(2) for v in (3.0, 2.0, 2.5, 2.2)])
