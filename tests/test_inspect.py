"""charrnn.inspect describes exactly the model torch builds; charrnn.views draws it."""

import io
import json
import math
import subprocess
import sys

import pytest
import torch
from rich.console import Console

from charrnn import inspect, reference
from charrnn.config import ModelConfig
from charrnn.inspect import describe, describe_checkpoint
from charrnn.model import CharRNN, make_rnn
from charrnn.views import render_checkpoint, render_inspect

VOCAB, SEQ, BATCH = 11, 4, 3

# Small models of every kind: embedding_dim 5, hidden_size 7, proj_size 3.
CELLS = {
    "rnn-tanh": dict(cell="rnn", nonlinearity="tanh"),
    "rnn-relu": dict(cell="rnn", nonlinearity="relu"),
    "lstm": dict(cell="lstm"),
    "lstm-proj": dict(cell="lstm", proj_size=3),
    "gru": dict(cell="gru"),
}


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


# ----------------------------------------------------------------------------- parameters

@cells
@directions
def test_parameters_are_torchs_own(cell, bidirectional):
    config = small(cell, bidirectional=bidirectional)
    report = run(config)
    expected = [(name, list(p.shape)) for name, p in torch_model(config).named_parameters()]
    assert [(p["name"], p["shape"]) for p in report["parameters"]] == expected
    rnn_names = {"rnn." + name for name, _ in make_rnn(config).named_parameters()}
    assert rnn_names <= {p["name"] for p in report["parameters"]}
    for p in report["parameters"]:
        assert p["numel"] == math.prod(p["shape"])
        assert p["role"] and p["init"]
    assert report["num_parameters"] == torch_model(config).num_parameters()
    assert sum(report["num_parameters_per_layer"].values()) == report["num_parameters"]
    assert list(report["num_parameters_per_layer"]) == [
        "embedding", "rnn layer 0", "rnn layer 1", "head"]


def test_lstm_gate_slices_and_layers():
    config = ModelConfig(cell="lstm", embedding_dim=64, hidden_size=256, num_layers=2)
    params = {p["name"]: p for p in run(config)["parameters"]}
    w = params["rnn.weight_ih_l0"]
    assert w["shape"] == [1024, 64]
    for text in ("0:256 input gate i", "256:512 forget gate f", "512:768 cell candidate g",
                 "768:1024 output gate o"):
        assert text in w["role"]
    assert [(g["gate"], g["rows"]) for g in w["gates"]] == [
        ("i", [0, 256]), ("f", [256, 512]), ("g", [512, 768]), ("o", [768, 1024])]
    assert "embedding_dim = 64" in w["role"]
    assert "previous layer's output" in params["rnn.weight_ih_l1"]["role"]
    assert params["rnn.weight_ih_l1"]["shape"] == [1024, 256]
    assert "entries 0:256 input gate i" in params["rnn.bias_hh_l1"]["role"]
    assert "U(-0.0625, 0.0625)" in w["init"]
    assert params["embedding.weight"]["init"] == "N(0, 1)"
    assert "fan_in = 256" in params["head.weight"]["init"]


def test_gru_gates_and_bidirectional_input_width():
    params = {p["name"]: p for p in run(small("gru", bidirectional=True))["parameters"]}
    w = params["rnn.weight_hh_l1_reverse"]
    assert [g["gate"] for g in w["gates"]] == ["r", "z", "n"]
    assert "0:7 reset gate r" in w["role"] and "14:21 new gate n" in w["role"]
    assert "reverse direction" in w["role"]
    assert "b_hn" in params["rnn.bias_hh_l0"]["role"]
    # layer 1 reads both directions of layer 0: D*H_out = 2*7 = 14 columns.
    assert params["rnn.weight_ih_l1"]["shape"] == [21, 14]
    assert "14 wide" in params["rnn.weight_ih_l1"]["role"]
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

@cells
@directions
@layouts
def test_tensor_shapes_are_what_torch_returns(cell, bidirectional, batch_first):
    config = small(cell, bidirectional=bidirectional)
    report = run(config, batch_first=batch_first)
    model = torch_model(config, batch_first)
    ids = torch.zeros((BATCH, SEQ) if batch_first else (SEQ, BATCH), dtype=torch.long)
    embedded = model.embedding(ids)
    output, state = model.rnn(embedded)
    h_n, c_n = state if cell.startswith("lstm") else (state, None)
    expected = {"input_ids": ids, "embedded": embedded, "h0": h_n, "output": output,
                "h_n": h_n, "logits": model.head(output)}
    if c_n is not None:
        expected.update(c0=c_n, c_n=c_n)
    assert report["tensors"] == {k: list(t.shape) for k, t in expected.items()}
    assert list(report["tensors"]) == list(report["tensor_dims"])
    for name, shape in report["tensors"].items():
        assert len(report["tensor_dims"][name]) == len(shape)
    assert report["tensor_dims"]["embedded"][0] == (
        "N = batch_size" if batch_first else "L = seq_length")


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


# ----------------------------------------------------------------------------- verify

@cells
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@directions
@layouts
def test_verify_passes(cell, num_layers, bidirectional, batch_first):
    report = run(small(cell, num_layers, bidirectional), batch_first, verify=True)
    expected_keys = {"output", "h_n", "c_n"} if cell.startswith("lstm") else {"output", "h_n"}
    assert set(report["verify"]) == expected_keys
    assert all(0 <= diff <= 1e-5 for diff in report["verify"].values())
    assert report["verify_last_step"] == (
        {"forward": True, "reverse": True} if bidirectional else {"forward": True})
    assert report["verify_ok"] is True


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
