"""What a CharRNN is made of, as plain data that ``charrnn inspect`` renders.

``describe(config, ...)`` lists every parameter with its shape, a short role and PyTorch's
default initialisation; the cell's equations with the real sizes substituted and which
parameter rows hold which gate; the cost of one character (FLOPs forward and in training,
memory for weights, gradients and optimiser state); the shape of every tensor in one real
forward pass with the meaning of each dimension; a few notes; and, with ``verify=True``,
a check of PyTorch's recurrent module against the hand-written equations of
``charrnn.reference``. ``describe_checkpoint(ckpt)`` gathers the facts of a saved run.
Both return JSON-serialisable dicts and print nothing (``charrnn.views`` draws them).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from charrnn import reference
from charrnn.checkpoint import count_parameters, model_from_checkpoint
from charrnn.config import OPTIMIZERS, ModelConfig, TrainConfig, build
from charrnn.data import Vocab, escape_char  # a vocabulary shown as text
from charrnn.errors import DataError
from charrnn.device import check_fits
from charrnn.model import CharRNN, make_rnn, parameter_count
from charrnn.optim import make_optimizer
from charrnn.reports import (CheckpointInfo, CorpusRecord, Costs, Dims, EquationSection,
                             GateRows, InspectModel, InspectReport, ParameterRow,
                             Verification)
from charrnn.scoring import LN2

# The example forward pass of a model built from flags: L steps, N sequences, V characters
# (tiny-shakespeare's).
EXAMPLE_L, EXAMPLE_N, EXAMPLE_V = 5, 3, 65
MAX_EXAMPLE = 100_000   # L or N of the example pass: more says nothing and takes long

# A reference check passes when |reference - torch| <= TOLERANCE * max(1, |torch|max).
TOLERANCE = 1e-5

# PyTorch's gate order inside the packed weight_ih / weight_hh / bias_ih / bias_hh, with
# each gate's activation in the equations.
GATES: dict[str, list[tuple[str, str, str]]] = {
    "lstm": [("i", "input gate", "σ"), ("f", "forget gate", "σ"),
             ("g", "cell candidate", "tanh"), ("o", "output gate", "σ")],
    "gru": [("r", "reset gate", "σ"), ("z", "update gate", "σ"), ("n", "new gate", "tanh")],
    "rnn": [],
}

_RNN_PARAM = re.compile(r"^rnn\.(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


# ----------------------------------------------------------------------------- describe

def describe(config: ModelConfig, *, vocab_size: int, seq_length: int, batch_size: int,
             batch_first: bool = True, verify: bool = False, model: CharRNN | None = None,
             train_config: TrainConfig | None = None, seed: int = 0) -> InspectReport:
    """Parameters, equations, costs, tensor shapes, notes and (optionally) a reference
    check of a model.

    Without ``model``, builds ``CharRNN(vocab_size, config)`` with its recurrent module
    made by ``make_rnn(config, batch_first=batch_first)``, seeded with ``seed``;
    bidirectional models are allowed here. With ``model`` (e.g. from a checkpoint), that
    model is described and its own config, vocabulary size and layout are used.
    ``train_config`` names the optimiser whose state is measured (default: AdamW, the
    training default).

    Keys: ``model`` (the config plus vocab_size, batch_first), ``dims`` (N, L, H_in,
    H_cell, H_out, D, num_layers, V), ``parameters`` (name, shape, numel, role, init,
    init_bound, gates), ``num_parameters``, ``num_parameters_per_layer``, ``equations``
    (sections of [equation, comment] lines), ``costs`` (FLOPs per character, memory in
    bytes), ``tensors`` (name -> shape), ``tensor_dims`` (name -> dimension labels),
    ``notes``; with ``verify``: ``verify`` (max abs diffs), ``verify_tolerance``,
    ``verify_last_step``, ``verify_ok``. A diff passes when it is at most TOLERANCE times
    the larger of 1 and the tensor's largest magnitude (so at most 1e-5 for values within
    [-1, 1]).
    """
    if model is None:
        model = _build(config, vocab_size, batch_first, seed)
    else:
        config = getattr(model, "config", config)
        vocab_size = getattr(model, "vocab_size", vocab_size)
        batch_first = model.rnn.batch_first
    sizes = _sizes(config, vocab_size, seq_length, batch_size)

    parameters = [_describe_parameter(name, p, config, sizes)
                  for name, p in model.named_parameters()]
    report: InspectReport = {
        "model": cast(InspectModel, {**dataclasses.asdict(config), "vocab_size": vocab_size,
                                     "batch_first": batch_first}),
        "dims": sizes,
        "parameters": parameters,
        "num_parameters": model.num_parameters(),
        "num_parameters_per_layer": _per_layer(parameters),
        "equations": equations(config, sizes),
        "costs": _costs(model, config, sizes, train_config or TrainConfig()),
        "tensors": _tensor_shapes(model, sizes, batch_first, seed),
        "tensor_dims": _tensor_dims(config, batch_first),
        "notes": _notes(config, sizes, batch_first),
    }
    if verify:
        report.update(_verify(model.rnn, sizes, batch_first, seed))
    return report


def _build(config: ModelConfig, vocab_size: int, batch_first: bool, seed: int) -> CharRNN:
    """A freshly initialised model, without disturbing the global random state."""
    params = parameter_count(vocab_size, config)
    check_fits(8 * params, torch.device("cpu"), f"building this model ({params:,} "
               "parameters)", "make it smaller (--hidden-size, --num-layers)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharRNN(vocab_size, config)
        model.rnn = make_rnn(config, batch_first=batch_first)
    return model


def _sizes(config: ModelConfig, vocab_size: int, seq_length: int, batch_size: int
           ) -> Dims:
    """The letters used in shapes, with their values."""
    return {
        "N": batch_size,                                # batch_size
        "L": seq_length,                                # seq_length
        "H_in": config.embedding_dim,                   # the first layer's input size
        "H_cell": config.hidden_size,                   # hidden_size (the LSTM's c too)
        "H_out": config.proj_size or config.hidden_size,  # h's size
        "D": 2 if config.bidirectional else 1,          # directions
        "num_layers": config.num_layers,
        "V": vocab_size,
    }


def _layer_input(layer: int, sizes: Dims) -> int:
    """Width of what layer ``layer`` reads: the embedding, or both directions below."""
    return sizes["H_in"] if layer == 0 else sizes["D"] * sizes["H_out"]


# ----------------------------------------------------------------------------- parameters

def _describe_parameter(name: str, p: nn.Parameter, config: ModelConfig,
                        sizes: Dims) -> ParameterRow:
    # As they stay for a parameter this description does not know (a subclass's extra):
    role, init = "", ""
    bound: float | None = None
    gates: list[GateRows] = []
    match = _RNN_PARAM.match(name)
    if match:
        kind, which, layer, reverse = match.groups()
        bound = 1 / math.sqrt(config.hidden_size)
        role = _rnn_role(kind, which, int(layer), bool(reverse), config, sizes)
        init = f"U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) = U(-{bound:.4g}, {bound:.4g})"
        gates = [] if which == "hr" else _gate_slices(config.cell, config.hidden_size)
    elif name == "embedding.weight":
        role = "row v = the vector of character id v; the rows looked up are x_t"
        if config.tie_weights:
            role += "; also the head's weight (tied), counted once"
        init = "N(0, 1)"
    elif name in ("head.weight", "head.bias"):
        fan_in = sizes["D"] * sizes["H_out"]
        bound = 1 / math.sqrt(fan_in)
        role = (f"logits_t = W y_t + b, y_t = the top layer's output [{fan_in}]"
                if name == "head.weight" else "b: one entry per character")
        init = f"U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = U(-{bound:.4g}, {bound:.4g}), " \
               f"fan_in = {fan_in}"
    return {"name": name, "shape": list(p.shape), "numel": p.numel(), "role": role,
            "init": init, "init_bound": bound, "gates": gates}


def _rnn_role(kind: str, which: str, layer: int, reverse: bool, config: ModelConfig,
              sizes: Dims) -> str:
    """One or two lines for a recurrent parameter: what it multiplies, which gates."""
    where = f"layer {layer}" + (" reverse" if reverse else "")
    H, H_out = config.hidden_size, sizes["H_out"]
    if which == "hr":
        return f"{where} projection W_hr: h_t = W_hr (o_t ⊙ tanh c_t), {H} -> {H_out}"
    gates = GATES[config.cell]
    letter = "W" if kind == "weight" else "b"
    if gates:
        packed = "[" + "; ".join(f"{letter}_{which[0]}{g}" for g, _, _ in gates) + "]"
        per_gate = f", {H} {'rows' if kind == 'weight' else 'entries'} per gate"
    else:
        packed, per_gate = f"{letter}_{which}", ""
    if kind == "weight":
        source = f"x_t[{_layer_input(layer, sizes)}]" if which == "ih" else f"h_{{t-1}}[{H_out}]"
        return f"{where} {packed} × {source}{per_gate}"
    if config.cell == "gru":
        extra = "; b_hn is inside r_t ⊙ (W_hn h + b_hn)" if which == "hh" else \
            "; b_in is outside r_t"
    else:
        extra = f"; only its sum with b_{'hh' if which == 'ih' else 'ih'} matters"
    return f"{where} {packed}{per_gate}{extra}"


def _gate_slices(cell: str, hidden_size: int) -> list[GateRows]:
    """[{gate, meaning, rows: [start, stop]}] in PyTorch's packing order."""
    return [{"gate": gate, "meaning": meaning,
             "rows": [k * hidden_size, (k + 1) * hidden_size]}
            for k, (gate, meaning, _) in enumerate(GATES[cell])]


def _per_layer(parameters: list[ParameterRow]) -> dict[str, int]:
    """Parameter counts of the embedding, each recurrent layer and the head."""
    counts: dict[str, int] = {}
    for p in parameters:
        match = _RNN_PARAM.match(p["name"])
        part = f"rnn layer {match.group(3)}" if match else p["name"].split(".")[0]
        counts[part] = counts.get(part, 0) + p["numel"]
    return counts


# ----------------------------------------------------------------------------- equations

def equations(config: ModelConfig, sizes: Dims) -> list[EquationSection]:
    """The cell's equations with the real sizes, the gate packing, and the stacking.

    Sections of ``{"title", "lines": [[equation, comment], ...]}``; a vector's size is
    written ``x_t[64]``, a matrix's ``W_ih[256×64]``.
    """
    each = ", each direction" if sizes["D"] == 2 else ""
    layers = [(0, f"layer 0{each}: x_t is the embedded character")]
    if config.num_layers > 1:
        above = "layer 1" if config.num_layers == 2 else f"layers 1 to {config.num_layers - 1}"
        below = "both directions of the layer below" if sizes["D"] == 2 else "the layer below"
        layers.append((1, f"{above}{each}: x_t is the output of {below}"))
    sections: list[EquationSection] = [
        {"title": title, "lines": _cell_lines(config, sizes, _layer_input(k, sizes))}
        for k, title in layers]
    sections.append({"title": "packing: which parameter holds which gate",
                     "lines": _packing_lines(config, sizes)})
    sections.append({"title": "stacking: output, h_n and the head",
                     "lines": _stack_lines(config, sizes)})
    return sections


def _cell_lines(config: ModelConfig, sizes: Dims, n_in: int) -> list[list[str]]:
    """One time step of one layer and direction, for an input ``n_in`` wide."""
    H, h = config.hidden_size, sizes["H_out"]

    def affine(gate: str, i: str = "ih", r: str = "hh") -> str:
        return (f"W_{i}{gate}[{H}×{n_in}] x_t[{n_in}] + b_{i}{gate}[{H}] + "
                f"W_{r}{gate}[{H}×{h}] h_{{t-1}}[{h}] + b_{r}{gate}[{H}]")

    if config.cell == "rnn":
        f = config.nonlinearity
        return [[f"h_t = {f}({affine('', 'ih', 'hh')})", f"h_t[{H}]"]]
    if config.cell == "lstm":
        lines = [[f"{g}_t = {act}({affine(g, 'i', 'h')})", meaning]
                 for g, meaning, act in GATES["lstm"]]
        lines.append(["c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t", f"cell state c_t[{H}]"])
        if config.proj_size:
            lines.append([f"h_t = W_hr[{h}×{H}] (o_t ⊙ tanh(c_t))",
                          f"h_t[{h}]: proj_size {h} shrinks h, so W_h* read h_{{t-1}}[{h}]"])
        else:
            lines.append(["h_t = o_t ⊙ tanh(c_t)", f"h_t[{H}]"])
        return lines
    # GRU: the reset gate scales W_hn h + b_hn, bias included.
    r, z, _ = GATES["gru"]
    return [
        [f"r_t = σ({affine('r', 'i', 'h')})", r[1]],
        [f"z_t = σ({affine('z', 'i', 'h')})", z[1]],
        [f"n_t = tanh(W_in[{H}×{n_in}] x_t[{n_in}] + b_in[{H}] + "
         f"r_t ⊙ (W_hn[{H}×{H}] h_{{t-1}}[{H}] + b_hn[{H}]))", "new gate (candidate)"],
        ["h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}", f"h_t[{H}]"],
    ]


def _packing_lines(config: ModelConfig, sizes: Dims) -> list[list[str]]:
    """Each packed parameter = its gate blocks stacked by rows, in PyTorch's order."""
    H, h = config.hidden_size, sizes["H_out"]
    gates = [g for g, _, _ in GATES[config.cell]]
    rows = (len(gates) or 1) * H
    packed = [("weight_ih_l0", f"[{rows}×{sizes['H_in']}]", "W_i")]
    if config.num_layers > 1:
        packed.append(("weight_ih_l{k>0}", f"[{rows}×{_layer_input(1, sizes)}]", "W_i"))
    packed += [("weight_hh_l{k}", f"[{rows}×{h}]", "W_h"), ("bias_ih_l{k}", f"[{rows}]", "b_i"),
               ("bias_hh_l{k}", f"[{rows}]", "b_h")]
    lines = []
    for name, shape, letter in packed:
        if gates:
            blocks = "; ".join(letter + g for g in gates)
            spans = ", ".join(f"{j * H}:{(j + 1) * H} {g}" for j, g in enumerate(gates))
            lines.append([f"{name} {shape}", f"= [{blocks}], rows {spans}"])
        else:  # one block: W_ih, W_hh, b_ih, b_hh
            lines.append([f"{name} {shape}", f"= {letter}h"])
    if config.proj_size:
        lines.append([f"weight_hr_l{{k}} [{h}×{H}]", "= W_hr, the projection (LSTM only)"])
    if gates:
        second, meaning, _ = GATES[config.cell][1]
        lines.append([f"weight_ih_l0[{H}:{2 * H}]",
                      f"= W_i{second}, the {meaning}; .chunk({len(gates)}) cuts any packed "
                      "parameter into its gates"])
    if config.cell == "gru":
        lines.append(["W_hr (GRU)", "the reset gate's block of weight_hh, not a projection"])
    if sizes["D"] == 2:
        lines.append(["..._reverse", "the reverse direction's own copy of each, same shapes"])
    return lines


def _stack_lines(config: ModelConfig, sizes: Dims) -> list[list[str]]:
    D, h, n, V = sizes["D"], sizes["H_out"], config.num_layers, sizes["V"]
    top = n - 1
    lines = []
    if D == 2:
        lines.append(["reverse direction", "same equations, own weights, t = L-1 down to 0"])
        lines.append(["y_t = [h_t forward ; h_t reverse]",
                      f"y_t[{2 * h}], what the next layer and the head read"])
    lines.append(["output[t]", f"= y_t of the top layer (layer {top}), for every t"])
    rows = [f"{layer * D + d} = layer {layer}" + ((" forward", " reverse")[d] if D == 2 else "")
            for layer in range(n) for d in range(D)]
    lines.append(["h_n[layer*D + direction]",
                  f"D*num_layers = {D * n} row{'s' if D * n > 1 else ''}: " + ", ".join(rows)])
    lines.append(["h_n row", "= that layer and direction's h after its last step: "
                  + ("forward t = L-1, reverse t = 0" if D == 2 else "t = L-1")])
    lines.append([f"output[L-1][:{h}]" if D == 2 else "output[L-1]", f"= h_n[{top * D}]"])
    if D == 2:
        lines.append([f"output[0][{h}:]", f"= h_n[{top * D + 1}]"])
    if config.cell == "lstm":
        lines.append(["c_n", f"the same rows for c, {config.hidden_size} wide"
                      + (f" (h_n is {h} wide: proj_size)" if config.proj_size else "")])
    lines.append([f"logits_t = W[{V}×{D * h}] y_t[{D * h}] + b[{V}]",
                  "p(next character) = softmax(logits_t)"])
    return lines


# ----------------------------------------------------------------------------- costs

def _costs(model: CharRNN, config: ModelConfig, sizes: Dims,
           train_config: TrainConfig) -> Costs:
    """FLOPs per character and memory in bytes.

    FLOPs count the matrix products only, 2 per multiply-add, as
    ``torch.utils.flop_counter`` does: each weight matrix is used once per character
    and direction. Biases, gate activations and the softmax add little (under 1% for
    the default model). Training is forward + backward, and backward does two products
    the size of each forward one (the gradients of its input and of its weight): 3x.
    """
    D, H, h = sizes["D"], config.hidden_size, sizes["H_out"]
    rows = (len(GATES[config.cell]) or 1) * H
    per_part = {"embedding": 0}                       # a lookup, no arithmetic
    for layer in range(config.num_layers):
        products = rows * _layer_input(layer, sizes) + rows * h  # W_ih x + W_hh h
        if config.proj_size:
            products += h * H                                     # W_hr (o * tanh c)
        per_part[f"rnn layer {layer}"] = 2 * D * products
    per_part["head"] = 2 * sizes["V"] * D * h
    forward = sum(per_part.values())

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "flops_per_char": {"forward": forward, "training": 3 * forward, "per_part": per_part},
        "memory_bytes": {"weights": weights, "gradients": weights,
                         "optimizer_state": _optimizer_state_bytes(model, train_config),
                         "optimizer": train_config.optimizer,
                         "dtype": str(next(model.parameters()).dtype).replace("torch.", "")},
    }


def _optimizer_state_bytes(model: CharRNN, train_config: TrainConfig) -> int:
    """Bytes of state the training optimiser keeps: measured by building it the way
    ``train`` does, on a copy of the model, and taking one step with zero gradients."""
    twin = copy.deepcopy(model).cpu()
    for p in twin.parameters():
        p.grad = torch.zeros_like(p)
    optimizer = make_optimizer(twin, train_config)
    optimizer.step()
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if isinstance(t, torch.Tensor))


# ----------------------------------------------------------------------------- tensors

def _tensor_shapes(model: CharRNN, sizes: Dims, batch_first: bool, seed: int
                   ) -> dict[str, list[int]]:
    """Shapes of one real forward pass, exactly as torch returns them."""
    N, L, rows = sizes["N"], sizes["L"], sizes["D"] * sizes["num_layers"]
    first = next(model.parameters())
    g = torch.Generator().manual_seed(seed)
    ids_shape = (N, L) if batch_first else (L, N)
    ids = torch.randint(sizes["V"], ids_shape, generator=g).to(first.device)
    h0 = torch.zeros(rows, N, sizes["H_out"], dtype=first.dtype, device=first.device)
    c0 = torch.zeros(rows, N, sizes["H_cell"], dtype=first.dtype, device=first.device)
    is_lstm = isinstance(model.rnn, nn.LSTM)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")              # e.g. "LSTM with projections ..."
            embedded = model.embedding(ids)              # (N, L) -> (N, L, H_in), or seq-first
            if is_lstm:
                output, (h_n, c_n) = model.rnn(embedded, (h0, c0))  # -> (.., D*H_out)
            else:
                output, h_n = model.rnn(embedded, h0)    # (N, L, H_in) -> (N, L, D*H_out)
            logits = model.head(model.drop(output))      # (.., D*H_out) -> (.., V)
    finally:
        model.train(was_training)

    shapes = {"input_ids": ids, "embedded": embedded, "h0": h0}
    if is_lstm:
        shapes["c0"] = c0
    shapes.update(output=output, h_n=h_n)
    if is_lstm:
        shapes["c_n"] = c_n
    shapes["logits"] = logits
    return {name: list(t.shape) for name, t in shapes.items()}


def _tensor_dims(config: ModelConfig, batch_first: bool) -> dict[str, list[str]]:
    """Each tensor's dimensions in words, in the order torch lays them out."""
    D = 2 if config.bidirectional else 1
    seq = ["N = batch_size", "L = seq_length"] if batch_first else \
          ["L = seq_length", "N = batch_size"]
    h_out = "H_out = proj_size" if config.proj_size else "H_out = hidden_size"
    state = [f"D*num_layers = {D}*{config.num_layers}", "N = batch_size"]
    dims = {
        "input_ids": seq,
        "embedded": seq + ["H_in = embedding_dim"],
        "h0": state + [h_out],
    }
    if config.cell == "lstm":
        dims["c0"] = state + ["H_cell = hidden_size"]
    dims["output"] = seq + [f"D*H_out = {D}*{h_out.split(' = ')[1]}"]
    dims["h_n"] = state + [h_out]
    if config.cell == "lstm":
        dims["c_n"] = state + ["H_cell = hidden_size"]
    dims["logits"] = seq + ["V = vocab_size"]
    return dims


def _notes(config: ModelConfig, sizes: Dims, batch_first: bool) -> list[str]:
    D, H, P, n = sizes["D"], config.hidden_size, config.proj_size, config.num_layers
    top = (n - 1) * D
    H_out = sizes["H_out"]
    if batch_first:
        last = f"output[:, -1, :{H_out}]" if D == 2 else "output[:, -1]"
    else:
        last = f"output[-1, :, :{H_out}]" if D == 2 else "output[-1]"
    first = f"output[:, 0, {H_out}:]" if batch_first else f"output[0, :, {H_out}:]"
    rows = ", ".join(f"{layer * D + d} layer {layer}" + ((" fwd", " rev")[d] if D == 2 else "")
                     for layer in range(n) for d in range(D))
    notes = [
        "output holds the top layer's h at every time step; h_n holds every layer's "
        "(and direction's) h after its last step: the state to carry into the next window.",
        f"{last} (the last time step) equals h_n[{top}], the top layer's forward row"
        + (" (h_n[-1])." if D == 1 else "."),
    ]
    if D == 2:
        notes.append(
            f"The reverse direction reads t = L-1 down to 0, so its last step is t = 0: "
            f"{first} equals h_n[{top + 1}] (h_n[-1]). It sees the future, so charrnn "
            "train refuses it; inspect shows it to explain it.")
    notes.append(
        f"The first dimension of h0/h_n{'/c0/c_n' if config.cell == 'lstm' else ''} "
        f"indexes layer*D + direction (D = {D}): {rows}; "
        "h_n.view(num_layers, D, N, H_out) separates them.")
    if n > 1:
        notes.append(
            f"Layer k > 0 reads the layer below ({D * H_out} wide), so weight_ih_l1 has "
            f"{D * H_out} columns"
            + (f"; dropout {config.dropout:g} between layers in training only."
               if config.dropout else "."))
    if P:
        notes.append(
            f"proj_size = {P}: h_t = W_hr (o_t ⊙ tanh c_t) has {P} features, so weight_hh "
            f"is [{4 * H}, {P}], h0/h_n/output use {P}, and c0/c_n keep hidden_size = {H}.")
    notes.append(
        ("batch_first only changes input and output to (N, L, ...)"
         if batch_first else "Seq-first layout: input and output are (L, N, ...)")
        + "; h0/h_n are (D*num_layers, N, H_out) in either layout.")
    notes.append(
        f"Init: every rnn.* weight and bias U(-k, k), k = 1/sqrt(hidden_size) = "
        f"{1 / math.sqrt(H):.4g}; embedding N(0, 1); head U(±1/sqrt(fan_in)). "
        "--equations writes out the cell with these sizes.")
    return notes


# ----------------------------------------------------------------------------- verify

def _verify(rnn: nn.RNNBase, sizes: Dims, batch_first: bool, seed: int
            ) -> Verification:
    """Compare ``reference.forward`` with the module on random input, h0 and c0."""
    rnn = copy.deepcopy(rnn).float().cpu().eval()
    is_lstm = isinstance(rnn, nn.LSTM)
    N, L, rows = sizes["N"], sizes["L"], sizes["D"] * sizes["num_layers"]
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((N, L, sizes["H_in"]) if batch_first else (L, N, sizes["H_in"]),
                    generator=g)
    h0 = torch.randn(rows, N, sizes["H_out"], generator=g)
    hx = (h0, torch.randn(rows, N, sizes["H_cell"], generator=g)) if is_lstm else h0

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        output, state = rnn(x, hx)
        ref_output, ref_state = reference.forward(rnn, x, hx)

    pairs = {"output": (output, ref_output)}
    if is_lstm:
        pairs.update(h_n=(state[0], ref_state[0]), c_n=(state[1], ref_state[1]))
    else:
        pairs["h_n"] = (state, ref_state)
    diffs = {name: (a - b).abs().max().item() for name, (a, b) in pairs.items()}
    close = all(diffs[name] <= TOLERANCE * max(1.0, a.abs().max().item())
                for name, (a, _) in pairs.items())

    # output vs h_n: the forward direction ends at the last step, the reverse one at 0.
    h_n = state[0] if is_lstm else state
    out = output if batch_first else output.transpose(0, 1)   # -> (N, L, D*H_out)
    H, top = sizes["H_out"], (sizes["num_layers"] - 1) * sizes["D"]
    last_step = {"forward": torch.equal(out[:, -1, :H], h_n[top])}
    if sizes["D"] == 2:
        last_step["reverse"] = torch.equal(out[:, 0, H:], h_n[top + 1])

    return {"verify": diffs, "verify_tolerance": TOLERANCE,
            "verify_last_step": last_step,
            "verify_ok": bool(close and all(last_step.values()))}


# ----------------------------------------------------------------------------- checkpoint
def describe_trained(ckpt: dict[str, Any], path: str | Path, *, seq_length: int | None = None,
                     batch_size: int | None = None, verify: bool = False,
                     corpus: str | None = None) -> InspectReport:
    """``describe`` of a checkpoint's model, its forward pass shaped like the run's own
    windows unless ``seq_length`` / ``batch_size`` say otherwise, with what
    ``describe_checkpoint`` finds in the file under ``"checkpoint"``."""
    model, vocab = model_from_checkpoint(ckpt, path)
    trained = _typed(ckpt.get("train_config"), dict) or {}
    optimizer = trained.get("optimizer") if trained.get("optimizer") in OPTIMIZERS else None
    trained = {k: v for k, v in trained.items() if k in ("seq_length", "batch_size")
               and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_EXAMPLE}
    report = describe(model.config, vocab_size=len(vocab),
                      seq_length=seq_length or trained.get("seq_length", EXAMPLE_L),
                      batch_size=batch_size or trained.get("batch_size", EXAMPLE_N),
                      batch_first=True, verify=verify, model=model,
                      train_config=build("train", {"optimizer": optimizer}) if optimizer else None)
    report["checkpoint"] = {**describe_checkpoint(ckpt, corpus=corpus), "path": str(path)}
    return report


def describe_checkpoint(ckpt: dict[str, Any], corpus: str | None = None) -> CheckpointInfo:
    """The facts of a loaded checkpoint dict worth showing; missing keys, and values of
    a type charrnn never writes, become None (or empty).

    With ``corpus`` (a text), the vocabulary gets ``counts``: how often each character
    occurs in it, in id order."""
    vocab = ckpt.get("vocab")
    metrics = ckpt.get("metrics")
    best, last = _typed(ckpt.get("best_val_loss"), float), _typed(ckpt.get("val_loss"), float)
    info: CheckpointInfo = {
        "format_version": _typed(ckpt.get("format_version"), int),
        "charrnn_version": _typed(ckpt.get("charrnn_version"), str),
        "torch_version": _typed(ckpt.get("torch_version"), str),
        "vocab": None if vocab is None else {
            "size": len(vocab),
            "chars": [escape_char(ch) for ch in vocab],
        },
        "model_config": dict(_typed(ckpt.get("model_config"), dict) or {}),
        "train_config": dict(_typed(ckpt.get("train_config"), dict) or {}),
        "step": _typed(ckpt.get("step"), int),
        "elapsed": _typed(ckpt.get("elapsed"), float),
        "best_val_loss": best,
        "val_loss": last,
        "num_parameters": count_parameters(ckpt.get("model_state")),
        "metrics": [{k: v for k, v in row.items() if isinstance(v, (int, float))}
                    for row in (metrics if isinstance(metrics, list) else [])
                    if isinstance(row, dict)],
        "corpus": cast(CorpusRecord, {
            k: v for k, v in (_typed(ckpt.get("corpus"), dict) or {}).items()
            if isinstance(v, (str, int)) or (isinstance(v, list) and all(
                isinstance(item, str) for item in v))}),
        "best_val_bpc": None if best is None else best / LN2,
        "val_bpc": None if last is None else last / LN2,
    }
    if vocab and corpus is not None and info["vocab"] is not None:
        info["vocab"]["counts"] = char_counts(Vocab(vocab), corpus)
    return info


def _typed(value: Any, kind: type) -> Any:
    """``value`` if it is a ``kind`` (an int counts as a float; a bool as neither)."""
    if isinstance(value, bool):
        return None
    if kind is float and isinstance(value, int):
        return float(value)
    return value if isinstance(value, kind) else None


def char_counts(vocab: Vocab, text: str) -> list[int]:
    """How often each vocabulary character occurs in ``text``, in id order."""
    try:
        ids = vocab.encode(text, what="the corpus")
    except DataError as e:
        raise DataError(f"{e}; give the text the model was trained on") from None
    return np.bincount(ids, minlength=len(vocab)).tolist()
