"""charrnn.inspect describes exactly the model torch builds; charrnn.views draws it."""

import io
import json
import math
import subprocess
import sys

import re

import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from charrnn import inspect, reference
from charrnn.cli import main
from charrnn.config import OPTIMIZERS, ModelConfig, TrainConfig
from charrnn.data import Vocab
from charrnn.errors import DataError
from charrnn.inspect import describe, describe_checkpoint
from charrnn.model import CharRNN, make_rnn
from charrnn.views import render_checkpoint, render_inspect

from helpers import CELLS

VOCAB, SEQ, BATCH = 11, 4, 3

# Small models of every kind (CELLS): embedding_dim 5, hidden_size 7, proj_size 3.


def small(cell: str, num_layers: int = 2, bidirectional: bool = False, **extra
          ) -> ModelConfig:
    values = dict(embedding_dim=5, hidden_size=7, num_layers=num_layers,
                  bidirectional=bidirectional)
    return ModelConfig(**{**values, **CELLS[cell], **extra})


def torch_model(config: ModelConfig, batch_first: bool = True) -> CharRNN:
    """The model describe() should be describing, built the same way."""
    model = CharRNN(VOCAB, config)
    model.rnn = make_rnn(config, batch_first=batch_first)
    return model


def run(config: ModelConfig, batch_first: bool = True, **kw) -> dict:
    return describe(config, vocab_size=VOCAB, seq_length=SEQ, batch_size=BATCH,
                    batch_first=batch_first, **kw)


cells = pytest.mark.parametrize("cell", list(CELLS))
directions = pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
layouts = pytest.mark.parametrize("batch_first", [True, False],
                                  ids=["batch-first", "seq-first"])


# ----------------------------------------------------------------------------- the grid

def torch_rnn(cell: str, num_layers: int, bidirectional: bool, batch_first: bool
              ) -> nn.RNNBase:
    """The module straight from torch, not through charrnn: what inspect must match."""
    kw = dict(input_size=5, hidden_size=7, num_layers=num_layers,
              bidirectional=bidirectional, batch_first=batch_first)
    return {"rnn-tanh": lambda: nn.RNN(nonlinearity="tanh", **kw),
            "rnn-relu": lambda: nn.RNN(nonlinearity="relu", **kw),
            "lstm": lambda: nn.LSTM(**kw),
            "lstm-proj": lambda: nn.LSTM(proj_size=3, **kw),
            "gru": lambda: nn.GRU(**kw)}[cell]()


def cli_flags(cell: str) -> list[str]:
    flags = ["--cell", CELLS[cell]["cell"]]
    if "nonlinearity" in CELLS[cell]:
        flags += ["--nonlinearity", CELLS[cell]["nonlinearity"]]
    if "proj_size" in CELLS[cell]:
        flags += ["--proj-size", str(CELLS[cell]["proj_size"])]
    return flags


def inspect_json(argv: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", *argv, "--json"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")
@cells
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@directions
@layouts
def test_every_configuration_is_reported_exactly_and_verified(
        cell, num_layers, bidirectional, batch_first, capsys):
    """All 60: parameter names and shapes, the tensors of a forward pass, the equations'
    sizes, and the reference check, through ``charrnn inspect --json --verify``."""
    argv = cli_flags(cell) + [
        "--embedding-dim", "5", "--hidden-size", "7", "--num-layers", str(num_layers),
        "--seq-length", str(SEQ), "--batch-size", str(BATCH), "--vocab-size", str(VOCAB),
        "--batch-first" if batch_first else "--no-batch-first", "--verify"]
    if bidirectional:
        argv.append("--bidirectional")
    report = inspect_json(argv, capsys)
    rnn = torch_rnn(cell, num_layers, bidirectional, batch_first)
    D, h_out = 2 if bidirectional else 1, rnn.proj_size or rnn.hidden_size

    # Every parameter, by torch's name and shape, in torch's order.
    expected = ([("embedding.weight", [VOCAB, 5])]
                + [("rnn." + name, list(p.shape)) for name, p in rnn.named_parameters()]
                + [("head.weight", [VOCAB, D * h_out]), ("head.bias", [VOCAB])])
    assert [(p["name"], p["shape"]) for p in report["parameters"]] == expected
    assert report["num_parameters"] == sum(math.prod(shape) for _, shape in expected)

    # Every tensor of one forward pass, as torch returns it.
    x = torch.randn((BATCH, SEQ, 5) if batch_first else (SEQ, BATCH, 5))
    with torch.no_grad():
        output, state = rnn(x)
    h_n, c_n = state if isinstance(rnn, nn.LSTM) else (state, None)
    tensors = {"input_ids": list(x.shape[:2]), "embedded": list(x.shape), "h0": list(h_n.shape)}
    if c_n is not None:
        tensors["c0"] = list(c_n.shape)
    tensors.update(output=list(output.shape), h_n=list(h_n.shape))
    if c_n is not None:
        tensors["c_n"] = list(c_n.shape)
    tensors["logits"] = list(output.shape[:2]) + [VOCAB]
    assert report["tensors"] == tensors
    assert {k: len(v) for k, v in report["tensor_dims"].items()} == \
        {k: len(v) for k, v in tensors.items()}

    # The equations name matrices of exactly the parameters' sizes.
    w_ih0, w_hh0 = rnn.weight_ih_l0.shape, rnn.weight_hh_l0.shape
    gates = {"rnn-tanh": 1, "rnn-relu": 1, "gru": 3}.get(cell, 4)
    assert w_ih0[0] == gates * 7
    sections = report["equations"]
    for section, w_ih in zip(sections, [w_ih0] + ([rnn.weight_ih_l1.shape] if num_layers > 1
                                                  else [])):
        text = " ".join(line[0] for line in section["lines"])
        assert {tuple(map(int, m)) for m in re.findall(r"W_i\w?\[(\d+)×(\d+)\]", text)} == \
            {(7, w_ih[1])}
        assert {tuple(map(int, m)) for m in re.findall(r"W_h\w\[(\d+)×(\d+)\]", text)
                if cell != "lstm-proj" or m != ("3", "7")} == {(7, w_hh0[1])}

    # The hand-written equations give the module's numbers, within 1e-5 in float32.
    assert set(report["verify"]) == ({"output", "h_n", "c_n"} if c_n is not None
                                     else {"output", "h_n"})
    assert all(0 <= diff <= 1e-5 for diff in report["verify"].values())
    assert report["verify_last_step"] == (
        {"forward": True, "reverse": True} if bidirectional else {"forward": True})
    assert report["verify_ok"] is True


# ----------------------------------------------------------------------------- parameters

@cells
@directions
def test_parameter_roles_are_short_and_init_is_described(cell, bidirectional):
    report = run(small(cell, bidirectional=bidirectional))
    for p in report["parameters"]:
        assert p["numel"] == math.prod(p["shape"])
        assert p["role"] and p["init"]
        assert len(p["role"]) <= 110, p["role"]             # one or two lines, no equation
        assert "h_t =" not in p["role"] or p["name"].startswith("rnn.weight_hr")
    assert sum(report["num_parameters_per_layer"].values()) == report["num_parameters"]
    assert list(report["num_parameters_per_layer"]) == [
        "embedding", "rnn layer 0", "rnn layer 1", "head"]


def test_lstm_gate_slices_and_layers():
    config = ModelConfig(cell="lstm", embedding_dim=64, hidden_size=256, num_layers=2)
    params = {p["name"]: p for p in run(config)["parameters"]}
    w = params["rnn.weight_ih_l0"]
    assert w["shape"] == [1024, 64]
    assert "[W_ii; W_if; W_ig; W_io] × x_t[64]" in w["role"]
    assert [(g["gate"], g["meaning"], g["rows"]) for g in w["gates"]] == [
        ("i", "input gate", [0, 256]), ("f", "forget gate", [256, 512]),
        ("g", "cell candidate", [512, 768]), ("o", "output gate", [768, 1024])]
    assert "x_t[256]" in params["rnn.weight_ih_l1"]["role"]
    assert params["rnn.weight_ih_l1"]["shape"] == [1024, 256]
    assert "[b_hi; b_hf; b_hg; b_ho], 256 entries per gate" in params["rnn.bias_hh_l1"]["role"]
    assert "U(-0.0625, 0.0625)" in w["init"]
    assert params["embedding.weight"]["init"] == "N(0, 1)"
    assert "fan_in = 256" in params["head.weight"]["init"]


def test_gru_gates_and_bidirectional_input_width():
    params = {p["name"]: p for p in run(small("gru", bidirectional=True))["parameters"]}
    w = params["rnn.weight_hh_l1_reverse"]
    assert [g["gate"] for g in w["gates"]] == ["r", "z", "n"]
    assert [g["rows"] for g in w["gates"]] == [[0, 7], [7, 14], [14, 21]]
    assert w["role"].startswith("layer 1 reverse [W_hr; W_hz; W_hn]")
    assert "b_hn is inside r_t" in params["rnn.bias_hh_l0"]["role"]
    # layer 1 reads both directions of layer 0: D*H_out = 2*7 = 14 columns.
    assert params["rnn.weight_ih_l1"]["shape"] == [21, 14]
    assert "x_t[14]" in params["rnn.weight_ih_l1"]["role"]
    assert params["head.weight"]["shape"] == [VOCAB, 14]


def test_projection_changes_hh_and_h():
    report = run(small("lstm-proj", bidirectional=True))
    params = {p["name"]: p for p in report["parameters"]}
    assert params["rnn.weight_hh_l0"]["shape"] == [28, 3]      # [4H, P]
    assert params["rnn.weight_hr_l0_reverse"]["shape"] == [3, 7]  # [P, H]
    assert "projection" in params["rnn.weight_hr_l0"]["role"]
    assert report["tensors"]["h_n"] == [4, BATCH, 3]
    assert report["tensors"]["c_n"] == [4, BATCH, 7]
    assert report["tensor_dims"]["h_n"][2] == "H_out = proj_size"
    assert report["tensor_dims"]["c_n"][2] == "H_cell = hidden_size"
    assert any("[28, 3]" in note for note in report["notes"])


@cells
def test_init_ranges_hold_for_a_fresh_model(cell):
    config = small(cell, hidden_size=16)
    torch.manual_seed(0)
    model = CharRNN(VOCAB, config)
    report = describe(config, vocab_size=VOCAB, seq_length=SEQ, batch_size=BATCH,
                      model=model)
    weights = dict(model.named_parameters())
    for p in report["parameters"]:
        if p["name"].startswith("rnn."):
            assert p["init_bound"] == pytest.approx(0.25)           # 1/sqrt(16)
        if p["init_bound"] is not None:
            assert weights[p["name"]].abs().max().item() <= p["init_bound"]
    head_fan_in = config.proj_size or config.hidden_size
    assert report["parameters"][-1]["init_bound"] == pytest.approx(1 / math.sqrt(head_fan_in))


def test_tied_weights_are_listed_once():
    config = ModelConfig(cell="gru", embedding_dim=7, hidden_size=7, num_layers=1,
                         tie_weights=True)
    report = run(config)
    names = [p["name"] for p in report["parameters"]]
    assert names.count("embedding.weight") == 1 and "head.weight" not in names
    assert report["num_parameters"] == torch_model(config).num_parameters()


# ----------------------------------------------------------------------------- tensors

def test_seed_example_rnn_seq_first():
    """The seeds' example: nn.RNN(10, 20, 2), seq 5, batch 3, (L, N, H_in) input."""
    config = ModelConfig(cell="rnn", embedding_dim=10, hidden_size=20, num_layers=2)
    report = describe(config, vocab_size=30, seq_length=5, batch_size=3,
                      batch_first=False, verify=True)
    shapes = {p["name"]: p["shape"] for p in report["parameters"]}
    assert shapes["rnn.weight_ih_l0"] == [20, 10]
    assert shapes["rnn.weight_hh_l0"] == [20, 20]
    assert shapes["rnn.weight_ih_l1"] == [20, 20]
    assert shapes["rnn.weight_hh_l1"] == [20, 20]
    for name in ("bias_ih_l0", "bias_hh_l0", "bias_ih_l1", "bias_hh_l1"):
        assert shapes["rnn." + name] == [20]
    t = report["tensors"]
    assert t["input_ids"] == [5, 3]
    assert t["embedded"] == [5, 3, 10]
    assert t["h0"] == [2, 3, 20]
    assert t["output"] == [5, 3, 20]
    assert t["h_n"] == [2, 3, 20]
    assert t["logits"] == [5, 3, 30]
    assert "c0" not in t and "c_n" not in t
    assert report["tensor_dims"]["embedded"] == [
        "L = seq_length", "N = batch_size", "H_in = embedding_dim"]
    assert report["verify_ok"] is True
    assert report["model"]["batch_first"] is False and report["model"]["vocab_size"] == 30


# ----------------------------------------------------------------------------- equations

def section_text(report: dict, title_start: str) -> str:
    section = next(s for s in report["equations"] if s["title"].startswith(title_start))
    return "\n".join(f"{eq}  {comment}" for eq, comment in section["lines"])


def test_equations_of_the_seeds_rnn_with_sizes():
    config = ModelConfig(cell="rnn", embedding_dim=10, hidden_size=20, num_layers=2)
    report = describe(config, vocab_size=30, seq_length=5, batch_size=3)
    assert ("h_t = tanh(W_ih[20×10] x_t[10] + b_ih[20] + W_hh[20×20] h_{t-1}[20] + b_hh[20])"
            in section_text(report, "layer 0"))
    assert "W_ih[20×20] x_t[20]" in section_text(report, "layer 1")
    stack = section_text(report, "stacking")
    assert "D*num_layers = 2 rows: 0 = layer 0, 1 = layer 1" in stack
    assert "output[L-1]  = h_n[1]" in stack
    assert "logits_t = W[30×20] y_t[20] + b[30]" in stack
    relu = describe(ModelConfig(cell="rnn", nonlinearity="relu", embedding_dim=10,
                                hidden_size=20, num_layers=1), vocab_size=30, seq_length=5,
                    batch_size=3)
    assert section_text(relu, "layer 0").startswith("h_t = relu(W_ih[20×10]")


def test_lstm_equations_name_the_gates_and_the_projection():
    report = run(small("lstm-proj", bidirectional=True))
    layer0 = section_text(report, "layer 0, each direction")
    for gate, act, meaning in (("i", "σ", "input gate"), ("f", "σ", "forget gate"),
                               ("g", "tanh", "cell candidate"), ("o", "σ", "output gate")):
        assert (f"{gate}_t = {act}(W_i{gate}[7×5] x_t[5] + b_i{gate}[7] + "
                f"W_h{gate}[7×3] h_{{t-1}}[3] + b_h{gate}[7])  {meaning}") in layer0
    assert "c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t" in layer0
    assert "h_t = W_hr[3×7] (o_t ⊙ tanh(c_t))" in layer0
    assert "x_t[6]" in section_text(report, "layer 1")          # 2 directions x proj 3
    packing = section_text(report, "packing")
    assert "weight_ih_l0 [28×5]  = [W_ii; W_if; W_ig; W_io], rows 0:7 i, 7:14 f, 14:21 g, " \
           "21:28 o" in packing
    assert "weight_hh_l{k} [28×3]" in packing and "weight_hr_l{k} [3×7]" in packing
    assert "_reverse" in packing
    stack = section_text(report, "stacking")
    assert "0 = layer 0 forward, 1 = layer 0 reverse, 2 = layer 1 forward, " \
           "3 = layer 1 reverse" in stack
    assert "output[L-1][:3]  = h_n[2]" in stack and "output[0][3:]  = h_n[3]" in stack
    assert "c_n  the same rows for c, 7 wide (h_n is 3 wide: proj_size)" in stack


def test_gru_equations_keep_b_hn_inside_the_reset_gate():
    layer0 = section_text(run(small("gru", num_layers=1)), "layer 0")
    assert "r_t = σ(W_ir[7×5] x_t[5] + b_ir[7] + W_hr[7×7] h_{t-1}[7] + b_hr[7])" in layer0
    assert "n_t = tanh(W_in[7×5] x_t[5] + b_in[7] + r_t ⊙ (W_hn[7×7] h_{t-1}[7] + b_hn[7]))" \
        in layer0
    assert "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}" in layer0
    assert "rows 0:7 r, 7:14 z, 14:21 n" in section_text(run(small("gru")), "packing")


# ----------------------------------------------------------------------------- costs

def counted_flops(model: CharRNN, ids: torch.Tensor, backward: bool) -> int:
    """FLOPs torch's own counter sees. oneDNN's fused LSTM hides its products from the
    counter, so it is switched off; h0 (and c0) need gradients so that backward computes
    every product's input gradient, as it does for all but the first step of a window."""
    c = model.config
    rows = c.num_layers * (2 if c.bidirectional else 1)
    h0 = torch.zeros(rows, ids.size(0), c.proj_size or c.hidden_size, requires_grad=True)
    hidden = (h0, torch.zeros(rows, ids.size(0), c.hidden_size, requires_grad=True)) \
        if c.cell == "lstm" else h0
    counter = FlopCounterMode(display=False)
    with torch.backends.mkldnn.flags(enabled=False), counter:
        logits, _ = model(ids, hidden)
        if backward:
            logits.sum().backward()
    return counter.get_total_flops()


@pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning",
                            "ignore:TF32 acceleration:UserWarning")
@cells
@directions
def test_flops_per_character_match_torchs_flop_counter(cell, bidirectional):
    config = small(cell, bidirectional=bidirectional)
    model = torch_model(config)
    report = run(config)
    flops = report["costs"]["flops_per_char"]
    ids = torch.randint(VOCAB, (BATCH, SEQ))
    chars = BATCH * SEQ
    assert flops["forward"] * chars == counted_flops(model, ids, backward=False)
    assert flops["training"] * chars == counted_flops(model, ids, backward=True)
    assert flops["training"] == 3 * flops["forward"]
    assert sum(flops["per_part"].values()) == flops["forward"]
    assert flops["per_part"]["embedding"] == 0
    assert list(flops["per_part"]) == list(report["num_parameters_per_layer"])


def test_default_model_flops():
    """2x256 LSTM, embedding 64, 65 characters: 2 FLOPs per weight-matrix entry."""
    report = describe(ModelConfig(), vocab_size=65, seq_length=SEQ, batch_size=BATCH)
    flops = report["costs"]["flops_per_char"]
    assert flops["per_part"] == {"embedding": 0, "rnn layer 0": 2 * 1024 * (64 + 256),
                                 "rnn layer 1": 2 * 1024 * (256 + 256), "head": 2 * 65 * 256}
    assert flops["forward"] == 1_737_216 and flops["training"] == 5_211_648


# Tensors of state per parameter that each optimiser keeps (optim.make_optimizer's).
STATE_COPIES = {"adamw": 2, "adam": 2, "sgd": 1, "rmsprop": 1, "adagrad": 1}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_memory_of_weights_gradients_and_optimizer_state(optimizer):
    config = small("lstm")
    report = run(config, train_config=TrainConfig(optimizer=optimizer))
    memory = report["costs"]["memory_bytes"]
    weights = 4 * report["num_parameters"]                    # float32
    assert memory["weights"] == memory["gradients"] == weights
    assert memory["optimizer"] == optimizer and memory["dtype"] == "float32"
    # The copies of every weight, plus at most a step counter per parameter tensor.
    copies = STATE_COPIES[optimizer] * weights
    assert copies <= memory["optimizer_state"] <= copies + 8 * len(report["parameters"])


# ----------------------------------------------------------------------------- verify

def test_verify_fails_when_the_equations_are_wrong(monkeypatch):
    right = reference.gru_cell

    def wrong(x, h, **weights):
        return right(x, h, **weights) + 0.01

    monkeypatch.setattr(reference, "gru_cell", wrong)
    report = run(small("gru"), verify=True)
    assert report["verify"]["output"] > 1e-3
    assert report["verify_ok"] is False


def test_describe_a_given_model_leaves_it_alone():
    config = small("lstm")
    torch.manual_seed(1)
    model = CharRNN(VOCAB, config).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    report = describe(ModelConfig(), vocab_size=999, seq_length=SEQ, batch_size=BATCH,
                      model=model, verify=True)
    assert report["model"]["vocab_size"] == VOCAB and report["model"]["hidden_size"] == 7
    assert report["verify_ok"] is True
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_describe_is_deterministic_json_and_keeps_global_rng():
    rng = torch.random.get_rng_state()
    a = run(small("lstm-proj", bidirectional=True), verify=True)
    b = run(small("lstm-proj", bidirectional=True), verify=True)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert a == b
    assert json.loads(json.dumps(a)) == a
    assert {"model", "parameters", "num_parameters", "tensors", "tensor_dims", "notes",
            "verify", "verify_last_step", "verify_ok"} <= set(a)
    assert "verify" not in run(small("gru"))


# ----------------------------------------------------------------------------- checkpoint

def fake_checkpoint() -> dict:
    config = ModelConfig(cell="gru", embedding_dim=8, hidden_size=8, num_layers=1,
                         tie_weights=True)
    model = CharRNN(5, config)
    return {
        "format_version": 1, "charrnn_version": "0.1.0", "torch_version": torch.__version__,
        "model_config": {"cell": "gru", "hidden_size": 8, "tie_weights": True},
        "train_config": {"seq_length": 64, "batch_size": 32, "out": None},
        "vocab": "\n !a\t", "model_state": model.state_dict(), "optimizer_state": {},
        "step": 3000, "elapsed": 125.5, "best_val_loss": 1.5, "val_loss": 1.6,
        "metrics": [{"step": s, "elapsed": s / 10, "train_loss": 4 - s / 1000,
                     "val_loss": 3.9 - s / 1000, "chars_per_s": 12345.6, "lr": 0.003}
                    for s in range(0, 3001, 100)],
        "corpus": {"path": "data/tiny.txt", "chars": 1115394},
    }, model


def test_describe_checkpoint():
    ckpt, model = fake_checkpoint()
    info = describe_checkpoint(ckpt)
    assert info["vocab"] == {"size": 5, "chars": ["\\n", "␣", "!", "a", "\\t"]}
    assert info["step"] == 3000 and info["elapsed"] == 125.5
    assert info["best_val_loss"] == 1.5 and info["val_loss"] == 1.6
    assert info["best_val_bpc"] == pytest.approx(1.5 / math.log(2))
    assert info["train_config"]["seq_length"] == 64
    assert info["model_config"]["cell"] == "gru"
    assert len(info["metrics"]) == 31 and info["metrics"][-1]["lr"] == 0.003
    assert info["num_parameters"] == model.num_parameters()      # tied matrix once
    assert info["corpus"]["chars"] == 1115394
    json.dumps({k: v for k, v in info.items()})


def test_vocabulary_counts_from_the_corpus():
    ckpt, _ = fake_checkpoint()
    ckpt["vocab"] = "\t\n !a"                                 # code-point order, as saved
    info = describe_checkpoint(ckpt, corpus="a a !\n\ta")
    assert info["vocab"]["counts"] == [1, 1, 2, 1, 3]        # in id order: \t \n ␣ ! a
    assert "counts" not in describe_checkpoint(ckpt)["vocab"]
    assert inspect.char_counts(Vocab("ab"), "abba") == [2, 2]
    with pytest.raises(DataError, match=r"2 character\(s\) not in .* x z; give the text "
                                        "the model was trained on"):
        describe_checkpoint(ckpt, corpus="xaz")


def test_describe_checkpoint_is_lenient():
    info = describe_checkpoint({"vocab": "ab", "step": 7})
    assert info["vocab"]["size"] == 2 and info["step"] == 7
    assert info["metrics"] == [] and info["val_loss"] is None and info["val_bpc"] is None
    assert info["model_config"] == {} and info["num_parameters"] is None


def test_escape_char():
    assert [inspect.escape_char(c) for c in "\n\r\t \\\x07é"] == [
        "\\n", "\\r", "\\t", "␣", "\\\\", "\\x07", "é"]


# ----------------------------------------------------------------------------- views

def rendered(render, data) -> str:
    buffer = io.StringIO()
    render(data, Console(file=buffer, width=100, color_system=None))
    return buffer.getvalue()


def test_render_inspect():
    report = run(small("lstm-proj", bidirectional=True), verify=True)
    text = rendered(render_inspect, report)
    for p in report["parameters"]:
        assert p["name"] in text
    for name in report["tensors"]:
        assert name in text
    assert "PASS" in text and "FAIL" not in text
    assert f"{report['num_parameters']:,}" in text
    assert "H_cell = hidden_size" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 100

    failed = dict(report, verify_ok=False, verify={"output": 0.5, "h_n": 0.0, "c_n": 0.0})
    assert "FAIL" in rendered(render_inspect, failed)
    assert "PASS" not in rendered(render_inspect, run(small("gru")))


def test_default_view_is_compact_and_shows_costs():
    """Each parameter's role fits in two lines; the equations wait for --equations."""
    report = describe(ModelConfig(), vocab_size=65, seq_length=SEQ, batch_size=BATCH)
    text = rendered(render_inspect, report)
    table = text[text.index("parameters"):text.index("cost per character")]
    rows = [line for line in table.splitlines()[3:] if line.strip()]
    assert len(rows) <= 2 * len(report["parameters"])
    assert "σ(" not in text and "h_t = o_t" not in text
    assert "1,737,216 (1.74 M)" in text and "5,211,648 (5.21 M)" in text
    assert "655,360" in text and "33,280" in text
    assert "weights 3.35 MiB (float32)" in text and "adamw state 6.69 MiB" in text


def test_equations_view():
    report = run(small("gru", num_layers=1), verify=True)
    buffer = io.StringIO()
    render_inspect(report, Console(file=buffer, width=150, color_system=None), equations=True)
    text = buffer.getvalue()
    assert "n_t = tanh(W_in[7×5] x_t[5] + b_in[7] + r_t ⊙ (W_hn[7×7] h_{t-1}[7] + b_hn[7]))" \
        in text
    for section in report["equations"]:
        assert section["title"] in text
    assert "PASS" in text
    assert "rnn.weight_ih_l0" not in text                   # no parameter table here


def test_render_checkpoint_counts_most_frequent_first():
    ckpt, _ = fake_checkpoint()
    ckpt["vocab"] = "\t\n !a"
    text = rendered(render_checkpoint, describe_checkpoint(ckpt, corpus="aaa  !"))
    assert "by count in the corpus" in text
    assert re.search(r"a 3\s+␣ 2\s+! 1\s+\\t 0\s+\\n 0", text)


def test_render_checkpoint():
    ckpt, _ = fake_checkpoint()
    ckpt["vocab"] += "[b]"                        # would be markup if not escaped
    text = rendered(render_checkpoint, describe_checkpoint(ckpt))
    assert "\\n ␣ ! a \\t [ b ]" in text
    assert "3000" in text and "1.5000" in text and "seq_length" in text
    assert "train_loss" in text and "chars_per_s" in text and "lr" in text
    assert "of 31 rows" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "step" in rendered(render_checkpoint, describe_checkpoint({}))


def test_views_does_not_import_torch():
    code = "import sys, charrnn.views; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
