"""What a CharRNN is made of, as plain data that ``charrnn inspect`` renders.

``describe(config, ...)`` lists every parameter with its shape, its role in the equations
(down to which rows belong to which gate) and PyTorch's default initialisation; the shape
of every tensor in one real forward pass with the meaning of each dimension; a few notes;
and, with ``verify=True``, a check of PyTorch's recurrent module against the hand-written
equations of ``charrnn.reference``. ``describe_checkpoint(ckpt)`` gathers the facts of a
saved run. Both return JSON-serialisable dicts and print nothing (``charrnn.views`` draws
them).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import warnings
from typing import Any

import torch
from torch import nn

from charrnn import reference
from charrnn.config import ModelConfig
from charrnn.model import CharRNN, make_rnn

# A reference check passes when |reference - torch| <= TOLERANCE * max(1, |torch|max).
TOLERANCE = 1e-5

# PyTorch's gate order inside the packed weight_ih / weight_hh / bias_ih / bias_hh.
GATES: dict[str, list[tuple[str, str]]] = {
    "lstm": [("i", "input gate"), ("f", "forget gate"), ("g", "cell candidate"),
             ("o", "output gate")],
    "gru": [("r", "reset gate"), ("z", "update gate"), ("n", "new gate")],
    "rnn": [],
}

EQUATIONS: dict[str, str] = {
    "rnn": "h_t = {f}(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)",
    "lstm": "c_t = f*c_(t-1) + i*g, h_t = o*tanh(c_t)",
    "gru": "n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), h_t = (1-z)*n + z*h_(t-1)",
}

_RNN_PARAM = re.compile(r"^rnn\.(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


# ----------------------------------------------------------------------------- describe

def describe(config: ModelConfig, *, vocab_size: int, seq_length: int, batch_size: int,
             batch_first: bool = True, verify: bool = False, model: CharRNN | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Parameters, tensor shapes, notes and (optionally) a reference check of a model.

    Without ``model``, builds ``CharRNN(vocab_size, config)`` with its recurrent module
    made by ``make_rnn(config, batch_first=batch_first)``, seeded with ``seed``;
    bidirectional models are allowed here. With ``model`` (e.g. from a checkpoint), that
    model is described and its own config, vocabulary size and layout are used.

    Keys: ``model`` (the config plus vocab_size, batch_first), ``dims`` (N, L, H_in,
    H_cell, H_out, D, num_layers, V), ``parameters`` (name, shape, numel, role, init,
    init_bound, gates), ``num_parameters``, ``num_parameters_per_layer``, ``tensors``
    (name -> shape), ``tensor_dims`` (name -> dimension labels), ``notes``; with
    ``verify``: ``verify`` (max abs diffs), ``verify_tolerance``, ``verify_last_step``,
    ``verify_ok``. A diff passes when it is at most TOLERANCE times the larger of 1 and
    the tensor's largest magnitude (so at most 1e-5 for values within [-1, 1]).
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
    report: dict[str, Any] = {
        "model": {**dataclasses.asdict(config), "vocab_size": vocab_size,
                  "batch_first": batch_first},
        "dims": sizes,
        "parameters": parameters,
        "num_parameters": sum(p["numel"] for p in parameters),
        "num_parameters_per_layer": _per_layer(parameters),
        "tensors": _tensor_shapes(model, sizes, batch_first, seed),
        "tensor_dims": _tensor_dims(config, batch_first),
        "notes": _notes(config, sizes, batch_first),
    }
    if verify:
        report.update(_verify(model.rnn, sizes, batch_first, seed))
    return report


def _build(config: ModelConfig, vocab_size: int, batch_first: bool, seed: int) -> CharRNN:
    """A freshly initialised model, without disturbing the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharRNN(vocab_size, config)
        model.rnn = make_rnn(config, batch_first=batch_first)
    return model


def _sizes(config: ModelConfig, vocab_size: int, seq_length: int, batch_size: int
           ) -> dict[str, int]:
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


# ----------------------------------------------------------------------------- parameters

def _describe_parameter(name: str, p: nn.Parameter, config: ModelConfig,
                        sizes: dict[str, int]) -> dict[str, Any]:
    shape = list(p.shape)
    entry: dict[str, Any] = {"name": name, "shape": shape, "numel": p.numel()}
    match = _RNN_PARAM.match(name)
    if match:
        kind, which, layer, reverse = match.groups()
        role, gates = _rnn_role(kind, which, int(layer), bool(reverse), config, sizes)
        bound = 1 / math.sqrt(config.hidden_size)
        init = (f"U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) = "
                f"U(-{bound:.4g}, {bound:.4g})")
        entry.update(role=role, init=init, init_bound=bound, gates=gates)
    elif name == "embedding.weight":
        role = (f"embedding table: row v is the vector of character id v "
                f"({sizes['V']} characters x embedding_dim {sizes['H_in']}); "
                f"the looked-up rows are the RNN's input x_t")
        if config.tie_weights:
            role += "; also the head's weight (tie_weights), so it is counted once"
        entry.update(role=role, init="N(0, 1)", init_bound=None, gates=[])
    elif name in ("head.weight", "head.bias"):
        fan_in = sizes["D"] * sizes["H_out"]
        bound = 1 / math.sqrt(fan_in)
        if name == "head.weight":
            role = (f"output layer weight: logits = W y + b, one row per character; "
                    f"y is the top layer's output ({_width_text(sizes)} wide)")
        else:
            role = "output layer bias b: one entry per character of the vocabulary"
        init = f"U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = U(-{bound:.4g}, {bound:.4g}), " \
               f"fan_in = {fan_in}"
        entry.update(role=role, init=init, init_bound=bound, gates=[])
    else:  # a parameter this description does not know (a subclass's extra)
        entry.update(role="", init="", init_bound=None, gates=[])
    return entry


def _width_text(sizes: dict[str, int]) -> str:
    """``D*H_out = 2*128 = 256`` or ``H_out = 128`` for one direction."""
    if sizes["D"] == 1:
        return f"H_out = {sizes['H_out']}"
    return f"D*H_out = 2*{sizes['H_out']} = {2 * sizes['H_out']}"


def _rnn_role(kind: str, which: str, layer: int, reverse: bool, config: ModelConfig,
              sizes: dict[str, int]) -> tuple[str, list[dict[str, Any]]]:
    """Words for one recurrent parameter, and its gate slices (rows of the packing)."""
    where = f"layer {layer}" + (", reverse direction" if reverse else "")
    if which == "hr":
        return (f"{where}: projection W_hr, h_t = W_hr (o_t * tanh(c_t)), shrinks "
                f"hidden_size {config.hidden_size} to proj_size {config.proj_size}"), []

    if which == "ih" and kind == "weight":
        if layer == 0:
            source = f"x_t, the embedded character (embedding_dim = {sizes['H_in']} wide)"
        else:
            source = (f"the previous layer's output ({_width_text(sizes)} wide"
                      + (", both directions" if sizes["D"] == 2 else "") + ")")
        what = f"input-to-hidden weight W_ih, applied to {source}"
    elif which == "hh" and kind == "weight":
        what = (f"hidden-to-hidden weight W_hh, applied to h_(t-1) "
                f"({'proj_size' if config.proj_size else 'hidden_size'} = "
                f"{sizes['H_out']} wide)")
    else:
        what = f"{'input' if which == 'ih' else 'hidden'}-to-hidden bias b_{which}"
        if config.cell == "gru" and which == "hh":
            what += " (its n block b_hn sits inside r * (W_hn h + b_hn))"
        elif config.cell == "gru":
            what += " (its n block b_in stays outside the reset gate)"
        else:
            other = "b_hh" if which == "ih" else "b_ih"
            what += f" (added to {other}: only the sum matters)"

    gates = _gate_slices(config.cell, config.hidden_size)
    if not gates:
        f = config.nonlinearity
        return f"{where}: {what}; " + EQUATIONS["rnn"].format(f=f), []
    unit = "rows" if kind == "weight" else "entries"
    slices = ", ".join(f"{g['rows'][0]}:{g['rows'][1]} {g['meaning']} {g['gate']}"
                       for g in gates)
    return f"{where}: {what}; {unit} {slices}", gates


def _gate_slices(cell: str, hidden_size: int) -> list[dict[str, Any]]:
    """[{gate, meaning, rows: [start, stop]}] in PyTorch's packing order."""
    return [{"gate": gate, "meaning": meaning,
             "rows": [k * hidden_size, (k + 1) * hidden_size]}
            for k, (gate, meaning) in enumerate(GATES[cell])]


def _per_layer(parameters: list[dict[str, Any]]) -> dict[str, int]:
    """Parameter counts of the embedding, each recurrent layer and the head."""
    counts: dict[str, int] = {}
    for p in parameters:
        match = _RNN_PARAM.match(p["name"])
        part = f"rnn layer {match.group(3)}" if match else p["name"].split(".")[0]
        counts[part] = counts.get(part, 0) + p["numel"]
    return counts


# ----------------------------------------------------------------------------- tensors

def _tensor_shapes(model: CharRNN, sizes: dict[str, int], batch_first: bool, seed: int
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


def _notes(config: ModelConfig, sizes: dict[str, int], batch_first: bool) -> list[str]:
    D, H, P = sizes["D"], config.hidden_size, config.proj_size
    top = (config.num_layers - 1) * D
    H_out = sizes["H_out"]
    if batch_first:
        last = f"output[:, -1, :{H_out}]" if D == 2 else "output[:, -1]"
    else:
        last = f"output[-1, :, :{H_out}]" if D == 2 else "output[-1]"
    first = f"output[:, 0, {H_out}:]" if batch_first else f"output[0, :, {H_out}:]"
    notes = [
        "output holds the top layer's h at every time step; h_n holds every layer's "
        "(and direction's) h after its last step, so it is what to carry into the next "
        "window.",
        f"Forward direction: {last} (the last time step) equals "
        f"h_n[{top}], the top layer's forward row"
        + (" (h_n[-1])." if D == 1 else "."),
        f"The first dimension of h0/h_n{'/c0/c_n' if config.cell == 'lstm' else ''} "
        f"indexes layer*D + direction (D = {D}); "
        f"h_n.view(num_layers, D, N, H_out) separates layers and directions.",
    ]
    if D == 2:
        notes.append(
            f"Reverse direction: it reads t = L-1 down to 0, so its last step is time "
            f"step 0: {first} equals h_n[{top + 1}] (h_n[-1]). "
            "A bidirectional model sees the future characters, so charrnn train refuses "
            "it; inspect shows it to explain it.")
    if config.num_layers > 1:
        notes.append(
            f"Layer k > 0 reads the previous layer's output ({_width_text(sizes)} wide), "
            f"so weight_ih_l1 has {sizes['D'] * sizes['H_out']} columns"
            + (f"; dropout {config.dropout:g} is applied between layers in training only."
               if config.dropout else "."))
    if P:
        notes.append(
            f"proj_size = {P}: h_t = W_hr (o_t * tanh(c_t)) has {P} features, so "
            f"weight_hh is [4*hidden_size, proj_size] = [{4 * H}, {P}], h0/h_n/output use "
            f"{P}, and c0/c_n keep hidden_size = {H}.")
    if config.cell == "lstm":
        notes.append("LSTM rows are packed i, f, g, o; c_t = f*c_(t-1) + i*g and "
                     "h_t = o*tanh(c_t).")
    elif config.cell == "gru":
        notes.append("GRU rows are packed r, z, n; n = tanh(W_in x + b_in + r*(W_hn h + "
                     "b_hn)) and h_t = (1-z)*n + z*h_(t-1), so b_hn is not interchangeable "
                     "with b_in.")
    notes.append(
        ("batch_first only changes input and output to (N, L, ...)"
         if batch_first else "Seq-first layout: input and output are (L, N, ...)")
        + "; h0/h_n are (D*num_layers, N, H_out) in either layout.")
    return notes


# ----------------------------------------------------------------------------- verify

def _verify(rnn: nn.RNNBase, sizes: dict[str, int], batch_first: bool, seed: int
            ) -> dict[str, Any]:
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

def describe_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The facts of a loaded checkpoint dict worth showing; missing keys become None."""
    vocab = ckpt.get("vocab")
    info: dict[str, Any] = {
        "format_version": ckpt.get("format_version"),
        "charrnn_version": ckpt.get("charrnn_version"),
        "torch_version": ckpt.get("torch_version"),
        "vocab": None if vocab is None else {
            "size": len(vocab),
            "chars": [escape_char(ch) for ch in vocab],
        },
        "model_config": dict(ckpt.get("model_config") or {}),
        "train_config": dict(ckpt.get("train_config") or {}),
        "step": ckpt.get("step"),
        "elapsed": ckpt.get("elapsed"),
        "best_val_loss": ckpt.get("best_val_loss"),
        "val_loss": ckpt.get("val_loss"),
        "num_parameters": _count_state(ckpt.get("model_state")),
        "metrics": [dict(row) for row in ckpt.get("metrics") or []],
        "corpus": dict(ckpt.get("corpus") or {}),
    }
    for key in ("best_val_loss", "val_loss"):
        loss = info[key]
        info[key.replace("loss", "bpc")] = None if loss is None else loss / math.log(2)
    return info


def escape_char(ch: str) -> str:
    """A character as it can be shown on one line: ``\\n``, ``␣`` for space, ``\\x07``."""
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣", "\\": "\\\\"}
    if ch in named:
        return named[ch]
    if ch.isprintable():
        return ch
    return ch.encode("unicode_escape").decode("ascii")


def _count_state(state: dict[str, Any] | None) -> int | None:
    """Distinct parameters in a state dict (a tied matrix is stored, and counted, once)."""
    if not state:
        return None
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in state.values():
        if not isinstance(tensor, torch.Tensor):
            continue
        key = (tensor.data_ptr(), tensor.numel())
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total
