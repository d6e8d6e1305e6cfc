"""Every path that scores text, on a model that is not the plain default: two recurrent
layers with dropout 0.3 between them and before the head, the embedding matrix tied to the
head, and (for the LSTM) a projection of h. Each number is checked against a reference
written here with plain torch modules rebuilt from the checkpoint's state dict, in
float64, with no dropout: validation during training (metrics.csv and the checkpoints),
``eval --json``, ``eval --per-char``, ``inspect`` (``--activations`` and ``--verify``),
greedy ``sample``, and the ONNX and TorchScript exports. The library functions are also
handed the model in training mode, as training hands it over: they must switch dropout off
themselves (and back on after)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.config import ModelConfig, TrainConfig
from charrnn.train import train

from helpers import run, tiny_configs

# The models under test: dropout on, tied weights, a projected LSTM and a GRU.
MODELS = {
    "lstm-proj-tied": dict(cell="lstm", embedding_dim=16, hidden_size=48, proj_size=16,
                           num_layers=2, dropout=0.3, tie_weights=True),
    "gru-tied": dict(cell="gru", embedding_dim=32, hidden_size=32, num_layers=2, dropout=0.3,
                     tie_weights=True),
}

# How far charrnn's float32 numbers may lie from the float64 reference. float32 keeps 24
# bits, a relative 6e-8 per rounding; measured here, the mean loss over the 6,000
# held-out characters lies within 4e-8 nats of float64 and the logits and log-softmax
# (up to about 5 in size) within 1.3e-6, while dropout left on moves the loss by 0.07 to
# 0.26 nats. The bounds leave 10 to 200 times the measured rounding for other CPUs and
# other summation orders (onnxruntime's kernels), and stay far below any dropout.
LOSS_TOL = 1e-5       # mean nats per character
LOGPROB_TOL = 2e-5    # one character's log-probability, a logit, a neuron's value
PROB_TOL = 1e-5       # a probability (6 significant digits are written: 5e-7 for p < 1)


class Reference:
    """A checkpoint's network rebuilt from its state dict with plain torch modules, in
    float64 and without dropout: ids -> nn.Embedding -> nn.LSTM (proj_size) / nn.GRU
    (dropout 0) -> nn.Linear, whose weight is the embedding matrix when the weights are
    tied. It reads the file with torch.load alone."""

    def __init__(self, path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        c, state = ckpt["model_config"], ckpt["model_state"]
        self.config, self.chars = c, ckpt["vocab"]
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        width = c["proj_size"] or c["hidden_size"]             # what the head reads
        self.embedding = nn.Embedding(len(self.chars), c["embedding_dim"])
        self.embedding.load_state_dict({"weight": state["embedding.weight"]})
        rnn_state = {k.removeprefix("rnn."): v for k, v in state.items() if k.startswith("rnn.")}
        self.rnn = self._rnn(c["embedding_dim"], c["num_layers"])
        self.rnn.load_state_dict(rnn_state)
        # The same stack as one single-layer module per layer, to read each layer's states.
        self.layers = []
        for k in range(c["num_layers"]):
            layer = self._rnn(c["embedding_dim"] if k == 0 else width, 1)
            layer.load_state_dict({name.rpartition("_l")[0] + "_l0": v
                                   for name, v in rnn_state.items()
                                   if name.rpartition("_l")[2] == str(k)})
            self.layers.append(layer)
        self.head = nn.Linear(width, len(self.chars))
        tied = state["embedding.weight"] if c["tie_weights"] else state["head.weight"]
        self.head.load_state_dict({"weight": tied, "bias": state["head.bias"]})
        for module in (self.embedding, self.rnn, self.head, *self.layers):
            module.double().eval()

    def _rnn(self, input_size: int, num_layers: int) -> nn.Module:
        c = self.config
        common = dict(input_size=input_size, hidden_size=c["hidden_size"],
                      num_layers=num_layers, batch_first=True, dropout=0.0)
        if c["cell"] == "lstm":
            return nn.LSTM(proj_size=c["proj_size"], **common)
        assert c["cell"] == "gru", c["cell"]
        return nn.GRU(**common)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index[ch] for ch in text], dtype=torch.int64)

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, state=None):
        """(B, T) ids, from a zero state (or ``state``) -> (B, T, V) logits, final state."""
        out, state = self.rnn(self.embedding(ids), state)
        return self.head(out), state

    def log_probs(self, text: str) -> torch.Tensor:
        """(T - 1, V): ln p of every character after each prefix of ``text``."""
        logits, _ = self.logits(self.encode(text)[None, :-1])
        return logits[0].log_softmax(dim=-1)

    def loss(self, text: str) -> float:
        """Mean cross entropy in nats per character of characters 1.. given those before,
        in one call from a zero state."""
        logits, _ = self.logits(self.encode(text)[None, :-1])
        return F.cross_entropy(logits[0], self.encode(text)[1:]).item()

    @torch.no_grad()
    def states(self, text: str) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Each layer's h (T, H_out) after every character, each LSTM layer's tanh(c)
        (T, H), both layer by layer and a character at a time, and p(next) (T, V)."""
        x = self.embedding(self.encode(text)[None])            # (1, T, E)
        hs, cs = [], []
        for layer in self.layers:
            state, outs, cells = None, [], []
            for t in range(x.size(1)):
                y, state = layer(x[:, t:t + 1], state)
                outs.append(y[0, 0])
                if self.config["cell"] == "lstm":
                    cells.append(torch.tanh(state[1][0, 0]))
            x = torch.stack(outs)[None]
            hs.append(x[0])
            if cells:
                cs.append(torch.stack(cells))
        return hs, cs, self.head(x[0]).softmax(dim=-1)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", params=list(MODELS))
def trained(request, small_text, tmp_path_factory):
    """(run folder, the text it trained on): the model of the parameter, trained 20 steps
    on 60,000 characters, evaluated at steps 10 and 20, each kept as step-N.pt."""
    out = tmp_path_factory.mktemp("runs") / request.param
    _, config = tiny_configs(out=str(out), save_every=10)
    train(small_text, ModelConfig(**MODELS[request.param]), config, progress=False)
    return out, small_text.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def held_out(trained, tmp_path_factory):
    """The run's validation text, the last tenth of its text, written to a file."""
    _, text = trained
    cut = int(len(text) * (1 - TrainConfig().val_fraction))
    path = tmp_path_factory.mktemp("held-out") / "val.txt"
    path.write_text(text[cut:], encoding="utf-8")
    return path


def _model(path):
    """charrnn's own model of a checkpoint, in training mode (dropout on), as training
    hands it to the library, and its vocabulary."""
    model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    return model.train(), vocab


# ----------------------------------------------------------------------------- loading

def test_a_loaded_model_computes_the_reference_logits(trained, held_out):
    """``model_from_checkpoint``, which every command scores with, gives a model in eval
    mode whose logits and final state over a window of the held-out text are the
    reference's, and whose head shares the embedding's matrix."""
    run_dir, _ = trained
    model, _ = model_from_checkpoint(load_checkpoint(run_dir / "best.pt"), run_dir / "best.pt")
    assert not model.training
    assert model.head.weight is model.embedding.weight
    ref = Reference(run_dir / "best.pt")
    ids = ref.encode(held_out.read_text(encoding="utf-8")[:500])[None]
    with torch.no_grad():
        logits, state = model(ids)
    expected, expected_state = ref.logits(ids)
    assert (logits.double() - expected).abs().max().item() < LOGPROB_TOL
    for got, want in zip(state if isinstance(state, tuple) else (state,),
                         expected_state if isinstance(expected_state, tuple)
                         else (expected_state,)):
        assert (got.double() - want).abs().max().item() < LOGPROB_TOL


# ----------------------------------------------------------------------------- validation

def test_validation_during_training_is_the_reference_loss_on_the_held_out_tenth(
        trained, held_out):
    """Each metrics.csv row's val_loss (steps 10 and 20), and the val_loss that last.pt,
    best.pt and step-N.pt carry, is the reference's mean cross entropy over the held-out
    text with that step's weights; the text is short enough to be scored as one stream."""
    from charrnn.scoring import stream_plan

    run_dir, _ = trained
    text = held_out.read_text(encoding="utf-8")
    assert len(stream_plan(len(text))) == 1            # one pass over it, from a zero state
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == [10, 20]
    for row in rows:
        step_file = run_dir / f"step-{row['step']}.pt"
        expected = Reference(step_file).loss(text)
        assert abs(float(row["val_loss"]) - expected) < LOSS_TOL, row
        saved = torch.load(step_file, weights_only=True)
        assert abs(saved["val_loss"] - expected) < LOSS_TOL
    for name in ("last.pt", "best.pt"):
        saved = torch.load(run_dir / name, weights_only=True)
        assert abs(saved["val_loss"] - Reference(run_dir / name).loss(text)) < LOSS_TOL, name


def test_scoring_a_model_in_training_mode_switches_dropout_off_and_back_on(trained, held_out):
    """``scoring.evaluate`` of the model in training mode (as training calls it) gives the
    reference's loss, twice over (no dropout draws), and leaves the model training."""
    from charrnn.scoring import evaluate

    run_dir, _ = trained
    text = held_out.read_text(encoding="utf-8")
    model, vocab = _model(run_dir / "last.pt")
    ids = vocab.encode(text)
    losses = [evaluate(model, ids, torch.device("cpu")) for _ in range(2)]
    assert model.training
    expected = Reference(run_dir / "last.pt").loss(text)
    assert all(abs(loss - expected) < LOSS_TOL for loss in losses), (losses, expected)


# ----------------------------------------------------------------------------- eval

def test_eval_json_is_the_reference_loss(trained, held_out, tmp_path, capsys):
    """``charrnn eval CHECKPOINT TEXT --json`` on the held-out text and on a stretch of the
    training text: nats per character is the reference's cross entropy, bits and
    perplexity follow from it, and every character but the first is scored."""
    run_dir, text = trained
    other = tmp_path / "stretch.txt"
    other.write_text(text[1000:4000], encoding="utf-8")
    for path in (held_out, other):
        code, out, err = run(["eval", str(run_dir / "best.pt"), str(path), "--json", "-q"],
                             capsys)
        assert code == 0, err
        score = json.loads(out)
        content = path.read_text(encoding="utf-8")
        expected = Reference(run_dir / "best.pt").loss(content)
        assert score["scored"] == len(content) - 1
        assert abs(score["nats_per_char"] - expected) < LOSS_TOL, (score, expected)
        assert abs(score["bits_per_char"] - expected / math.log(2)) < 2 * LOSS_TOL
        assert math.isclose(score["perplexity"], math.exp(expected), rel_tol=2 * LOSS_TOL)


def test_eval_per_char_logprobs_are_the_reference_log_softmax(trained, held_out, tmp_path,
                                                              capsys):
    """``eval --per-char``: each record's logprob is the reference's log-softmax at its
    character given all before it, the records add up to minus the total, the rank counts
    the characters the reference finds likelier, and the top guesses carry the reference's
    probabilities, likeliest first."""
    run_dir, _ = trained
    records = tmp_path / "chars.jsonl"
    code, out, err = run(["eval", str(run_dir / "best.pt"), str(held_out), "--per-char",
                          str(records), "--top", "3", "--json", "-q"], capsys)
    assert code == 0, err
    score = json.loads(out)
    rows = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines()]
    text = held_out.read_text(encoding="utf-8")
    ref = Reference(run_dir / "best.pt")
    logp = ref.log_probs(text)                                       # (T - 1, V)
    assert [row["pos"] for row in rows] == list(range(1, len(text)))
    assert "".join(row["char"] for row in rows) == text[1:]
    targets = ref.encode(text)[1:]
    assert [row["id"] for row in rows] == targets.tolist()
    got = torch.tensor([row["logprob"] for row in rows], dtype=torch.float64)
    expected = logp.gather(1, targets[:, None])[:, 0]
    assert (got - expected).abs().max().item() < LOGPROB_TOL
    assert abs(-got.sum().item() - score["nats_per_char"] * score["scored"]) < 1e-6 * len(rows)
    assert abs(-expected.mean().item() - score["nats_per_char"]) < LOSS_TOL
    for row, lp, target, true in zip(rows, logp, targets, expected):
        others = lp.clone()
        others[target] = -math.inf                      # the character itself never counts
        # Characters within float32 rounding of the true one may fall either side of it.
        assert (1 + (others > true + LOGPROB_TOL).sum().item() <= row["rank"]
                <= 1 + (others > true - LOGPROB_TOL).sum().item()), row
        probs = lp.exp()
        third = probs.topk(3).values[-1].item()
        top_probs = [p for _, p in row["top"]]
        assert top_probs == sorted(top_probs, reverse=True)
        for ch, p in row["top"]:
            assert abs(p - probs[ref.index[ch]].item()) < PROB_TOL, row
            assert p > third - PROB_TOL, row


# ----------------------------------------------------------------------------- inspect

def test_inspect_activations_are_the_reference_states_and_predictions(trained, held_out,
                                                                      tmp_path, capsys):
    """``inspect --activations FILE --json``: every neuron of every layer (h, and tanh(c)
    of an LSTM) at every character, each position's p(next character) and top five, and
    the bits per character are the reference's; ``activation_report`` on the model in
    training mode gives the same and leaves it training."""
    from charrnn.activations import activation_report

    run_dir, _ = trained
    text = held_out.read_text(encoding="utf-8")[:300]
    scene = tmp_path / "scene.txt"
    scene.write_text(text, encoding="utf-8")
    ref = Reference(run_dir / "best.pt")
    hs, cs, probs = ref.states(text)
    model, vocab = _model(run_dir / "best.pt")
    cases = [("h", k, h) for k, h in enumerate(hs)] + [("c", k, c) for k, c in enumerate(cs)]
    for state, layer, expected in cases:
        width = expected.shape[1]
        code, out, err = run(["inspect", str(run_dir / "best.pt"), "--activations", str(scene),
                              "--layer", str(layer), "--state", state, "--top", str(width),
                              "--json"], capsys)
        assert code == 0, err
        library = activation_report(model, vocab, text, layer=layer, state=state, top=width)
        assert model.training
        for report in (json.loads(out), library):
            assert sorted(n["index"] for n in report["neurons"]) == list(range(width))
            for neuron in report["neurons"]:
                got = torch.tensor(neuron["values"], dtype=torch.float64)
                assert (got - expected[:, neuron["index"]]).abs().max().item() < LOGPROB_TOL
            p_next = [row["p_next"] for row in report["predictions"][:-1]]
            targets = ref.encode(text)[1:]
            want = probs[:-1].gather(1, targets[:, None])[:, 0]
            assert (torch.tensor(p_next, dtype=torch.float64) - want).abs().max() < PROB_TOL
            for row, p in zip(report["predictions"], probs):
                fifth = p.topk(5).values[-1].item()
                for ch, q in row["top"]:
                    assert abs(q - p[ref.index[ch]].item()) < PROB_TOL and q > fifth - PROB_TOL
            bits = -want.log2().mean().item()
            assert abs(report["bits_per_char"] - bits) < LOSS_TOL / math.log(2)


def test_inspect_verify_and_the_checkpoints_losses(trained, held_out, capsys):
    """``inspect CHECKPOINT --verify --json`` passes its check of the recurrent module
    against the written-out equations and reports the checkpoint's val loss, which is the
    reference's; ``describe(..., verify=True)`` of the model in training mode passes too
    (the check must run without dropout) and leaves the model training."""
    from charrnn.inspect import describe

    run_dir, _ = trained
    code, out, err = run(["inspect", str(run_dir / "best.pt"), "--verify", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    expected = Reference(run_dir / "best.pt").loss(held_out.read_text(encoding="utf-8"))
    assert report["verify_ok"], report["verify"]
    assert abs(report["checkpoint"]["val_loss"] - expected) < LOSS_TOL
    assert abs(report["checkpoint"]["val_bpc"] - expected / math.log(2)) < 2 * LOSS_TOL
    model, vocab = _model(run_dir / "best.pt")
    described = describe(model.config, vocab_size=len(vocab), seq_length=7, batch_size=3,
                         verify=True, model=model)
    assert described["verify_ok"], described["verify"]
    assert model.training


# ----------------------------------------------------------------------------- sample

def test_greedy_sampling_takes_the_reference_argmax_at_every_step(trained, held_out, capsys):
    """``sample --greedy --prime P``: every new character is the reference's likeliest
    after the prime and the characters drawn before it (a near tie within float32
    rounding may go either way); ``generate(..., greedy=True)`` on the model in training
    mode draws the same text for each of three samples and leaves it training."""
    from charrnn.sample import generate

    run_dir, _ = trained
    prime = held_out.read_text(encoding="utf-8")[:120]
    length = 150
    code, out, err = run(["sample", str(run_dir / "best.pt"), "--greedy", "--prime", prime,
                          "--len", str(length)], capsys)
    assert code == 0, err
    assert out.startswith(prime) and len(out) == len(prime) + length
    ref = Reference(run_dir / "best.pt")
    logits, _ = ref.logits(ref.encode(out[:-1])[None])          # each prefix -> next
    steps = logits[0, len(prime) - 1:]                            # (length, V)
    chosen = ref.encode(out[len(prime):])
    picked = steps.gather(1, chosen[:, None])[:, 0]
    assert (picked >= steps.max(dim=1).values - LOGPROB_TOL).all()
    model, vocab = _model(run_dir / "best.pt")
    assert generate(model, vocab, length, prime=prime, greedy=True,
                    num_samples=3) == [out[len(prime):]] * 3
    assert model.training


def test_greedy_after_a_close_call_takes_the_reference_choice_in_training_mode(trained,
                                                                             held_out):
    """``generate(..., greedy=True)`` on the model in training mode (as training draws its
    progress samples), from the 24 primes of the held-out text (40 characters each) after
    which the reference's two likeliest characters lie closest, yet at least 2e-4 apart in
    logits (ten times the tolerance): each of eight samples takes the reference's likeliest
    character, and the model is left training; so does each turn of a ``Session`` (``sample
    -i``) handed the model in training mode. Dropout left on while the prime is read would
    tip a good share of these close calls the other way."""
    from charrnn.sample import Sampling, Session, generate

    run_dir, _ = trained
    text = held_out.read_text(encoding="utf-8")
    ref = Reference(run_dir / "best.pt")
    starts = range(0, len(text) - 40, 7)
    logits, _ = ref.logits(torch.stack([ref.encode(text[s:s + 40]) for s in starts]))
    best = logits[:, -1].topk(2)                                   # after each prime
    margin = best.values[:, 0] - best.values[:, 1]
    margin[margin < 10 * LOGPROB_TOL] = math.inf                   # too close to call
    model, vocab = _model(run_dir / "best.pt")
    for k in margin.argsort()[:24].tolist():
        prime = text[starts[k]:starts[k] + 40]
        expected = ref.chars[best.indices[k, 0]]
        assert generate(model, vocab, 1, prime=prime, greedy=True,
                        num_samples=8) == [expected] * 8, prime
    assert model.training
    # ``sample -i``: a Session takes the model as it is handed over, for its whole life.
    session = Session(_model(run_dir / "best.pt")[0], vocab, length=1,
                      sampling=Sampling(greedy=True))
    for k in margin.argsort()[:24].tolist():
        prime = text[starts[k]:starts[k] + 40]
        assert "".join(session.turn(prime)) == ref.chars[best.indices[k, 0]], prime


# ----------------------------------------------------------------------------- export

def _run_export(path, fmt: str, ids: torch.Tensor, state: list[torch.Tensor]):
    """The exported file's logits and final state on ``ids`` from ``state``."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feed = dict(zip(names, [ids.numpy(), *(s.float().numpy() for s in state)]))
        return [torch.from_numpy(np.asarray(o)) for o in session.run(None, feed)]
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return list(module(ids, *(s.float() for s in state)))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_compute_the_reference_logits_and_state(fmt, trained, held_out, tmp_path,
                                                        capsys):
    """``charrnn export --json`` to TorchScript and ONNX, and ``export`` of the model in
    training mode: the differences each reports from its own check are float32 rounding,
    and run by torch.jit / onnxruntime on two windows of the held-out text from a zero
    state, each file gives the reference's logits and final state; so does the script
    module ``exportable`` makes of the model in training mode, run in torch."""
    if fmt == "onnx" and not (importlib.util.find_spec("onnx")
                              and importlib.util.find_spec("onnxruntime")):
        pytest.skip("onnx and onnxruntime are not installed")
    from charrnn.export import export as export_model
    from charrnn.export import exportable

    run_dir, _ = trained
    suffix = {"torchscript": ".ts", "onnx": ".onnx"}[fmt]
    cli_file, library_file = tmp_path / f"cli{suffix}", tmp_path / f"library{suffix}"
    code, out, err = run(["export", str(run_dir / "best.pt"), "-o", str(cli_file), "--json"],
                         capsys)
    assert code == 0, err
    model, vocab = _model(run_dir / "best.pt")
    result = export_model(model, vocab, load_checkpoint(run_dir / "best.pt"), library_file, fmt)
    # The figures export reports from its own check (file against model, model against
    # float64) are float32 rounding, not dropout.
    reported = json.loads(out)
    for difference, rounding in ((reported["max_difference"], reported["float32_rounding"]),
                                 (result.max_difference, result.rounding)):
        assert difference < LOGPROB_TOL and rounding < LOGPROB_TOL, (difference, rounding)

    ref = Reference(run_dir / "best.pt")
    text = held_out.read_text(encoding="utf-8")
    ids = torch.stack([ref.encode(text[:200]), ref.encode(text[1000:1200])])   # (2, 200)
    c = ref.config
    layers, width = c["num_layers"], c["proj_size"] or c["hidden_size"]
    zero = [torch.zeros(layers, 2, width, dtype=torch.float64)]
    if c["cell"] == "lstm":
        zero.append(torch.zeros(layers, 2, c["hidden_size"], dtype=torch.float64))
    logits, state = ref.logits(ids, tuple(zero) if len(zero) == 2 else zero[0])
    expected = [logits, *(state if isinstance(state, tuple) else (state,))]
    # The script module that becomes the file, built from the model in training mode.
    module = exportable(_model(run_dir / "best.pt")[0], for_onnx=fmt == "onnx")
    with torch.no_grad():
        direct = list(module(ids, *(z.float() for z in zero)))
    for got in (*(_run_export(path, fmt, ids, zero) for path in (cli_file, library_file)),
                direct):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            assert (g.double() - e).abs().max().item() < LOGPROB_TOL
