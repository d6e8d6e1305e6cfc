"""A trained model for programs without charrnn: ONNX, TorchScript, or a one-file web page
(``webpage.py``, which runs the model's equations in JavaScript).

ONNX and TorchScript files share one interface, so a program written against one runs
the other (and any exported model, whatever its cell):

    inputs   ids    int64    (batch, time)          character ids
             h      float32  (layers, batch, H_out) hidden state (zeros to start)
             c      float32  (layers, batch, H)     LSTM only: cell state
    outputs  logits float32  (batch, time, vocab)   scores of the next character
             h_out, c_out                           the state after the last step

``time`` = 1 is one step of generation; a longer window reads a prime (or scores a text)
in one call. H is ``hidden_size``, H_out is ``proj_size`` for a projected LSTM and
``hidden_size`` otherwise. The file also carries what a program needs to use it: the
vocabulary as a JSON list of characters (index = id) under ``vocab``, and the cell, its
sizes and the run it came from (``METADATA_KEYS``), as ONNX metadata properties or as
``vocab.json`` and ``meta.json`` in the TorchScript archive.

Before the file is written, ``export`` loads it with its own runtime (onnxruntime;
torch.jit) and compares its logits and state with charrnn's on a window of ids.

    charrnn export runs/<run> -o model.onnx
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charrnn import __version__
from charrnn.data import Vocab
from charrnn.errors import ConfigError
from charrnn.files import atomic_write
from charrnn.model import CharRNN

FORMATS = ("onnx", "torchscript", "html")
# (Not .pt: that is a checkpoint's name here, and outputs never replace a .pt file.)
SUFFIXES = {".onnx": "onnx", ".ts": "torchscript", ".torchscript": "torchscript",
            ".html": "html", ".htm": "html"}
METADATA_KEYS = ("vocab", "cell", "nonlinearity", "num_layers", "hidden_size", "proj_size",
                 "embedding_dim", "tie_weights", "charrnn_version", "step", "val_loss")
TOLERANCE = 1e-5         # the largest difference from charrnn's outputs an export may show,
                         # relative to the largest of them (when that is over 1), beyond
                         # twice torch's own float32 rounding (its distance from float64)
CHECK_CHARS = 256        # characters of the window the check runs
OPSET = 17


@dataclass
class Exported:
    path: Path
    format: str
    bytes: int
    max_difference: float | None   # from charrnn's logits and state; None: not checked
    rounding: float | None         # torch's own float32 outputs from float64 ones, there
    checked_with: str              # the runtime that ran the check, or why none did


def format_for(output: Path, given: str | None) -> str:
    """The format ``--format`` names, else the one ``output``'s suffix implies; a name
    whose suffix says another format than ``--format`` is refused."""
    if str(output) == "-":
        raise ConfigError("--output - would be a file named '-'; an export goes to a file: "
                          "give its name, e.g. -o model.onnx")
    fmt = SUFFIXES.get(output.suffix.lower())
    if given is not None:
        if given not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {given!r}")
        if fmt is not None and fmt != given:
            raise ConfigError(f"the name {output.name} says {fmt} but --format says {given}; "
                              "change the name's ending or leave --format out")
        return given
    if fmt is None:
        usual = {fmt: suffix for suffix, fmt in reversed(SUFFIXES.items())}  # the first of each
        usual = [usual[fmt] for fmt in FORMATS]
        raise ConfigError(f"cannot tell the format from the name {output.name}; give "
                          f"--format ({', '.join(FORMATS)}) or end the name in "
                          f"{' or '.join(usual)}")
    return fmt


def metadata(model: CharRNN, vocab: Vocab, ckpt: dict[str, Any]) -> dict[str, str]:
    """What a program needs beside the weights, as strings (ONNX metadata is text)."""
    c = model.config
    values = dict(vocab=list(vocab.chars), cell=c.cell, nonlinearity=c.nonlinearity,
                  num_layers=c.num_layers, hidden_size=c.hidden_size, proj_size=c.proj_size,
                  embedding_dim=c.embedding_dim, tie_weights=c.tie_weights,
                  charrnn_version=__version__, step=ckpt.get("step"),
                  val_loss=ckpt.get("val_loss"))
    return {key: json.dumps(values[key], ensure_ascii=False) for key in METADATA_KEYS}


def export(model: CharRNN, vocab: Vocab, ckpt: dict[str, Any], output: Path, fmt: str
           ) -> Exported:
    """Write ``model`` to ``output`` in ``fmt``, whole or not at all, once its runtime has
    run it like the model (ONNX, TorchScript)."""
    if model.config.bidirectional:
        raise ConfigError("a bidirectional model cannot generate text, so it has no "
                          "export; train a one-directional model")
    model = model.float().eval()
    meta = metadata(model, vocab, ckpt)
    if fmt == "html":
        from charrnn import webpage

        data = webpage.page(model, vocab, title=f"charrnn: {model.config.describe()}",
                            meta=webpage.checkpoint_meta(ckpt)).encode("utf-8")
    elif fmt == "onnx":
        data = onnx_bytes(model, meta)
    else:
        data = torchscript_bytes(model, meta)
    difference, rounding, runtime = check(model, vocab, data, fmt)
    with atomic_write(output, fix="choose another file with --output") as out:
        out.write(data)
    return Exported(output, fmt, len(data), difference, rounding, runtime)


# --------------------------------------------------------------- the exported module


class _Stack(nn.Module):
    """``CharRNN`` with the export interface: embedding -> recurrent stack -> head, the
    state passed in and out as plain tensors (dropout is off in an export)."""

    def __init__(self, model: CharRNN, rnn: nn.Module) -> None:
        super().__init__()
        self.embedding = model.embedding
        self.rnn = rnn
        self.head = model.head


class _LSTMExport(_Stack):
    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h_out, c_out) = self.rnn(self.embedding(ids), (h, c))  # (B, T) -> (B, T, H_out)
        return self.head(out), h_out, c_out                          # (B, T, H_out) -> (B, T, V)


class _Export(_Stack):
    def forward(self, ids: torch.Tensor, h: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out, h_out = self.rnn(self.embedding(ids), h)                # (B, T) -> (B, T, H)
        return self.head(out), h_out                                 # (B, T, H) -> (B, T, V)


class _ProjectedLSTM(nn.Module):
    """A projected LSTM stack written as a loop over time: ONNX's own LSTM operator has
    no projection, and this loop becomes an ONNX ``Loop`` that takes any length.
    Per layer and step: gates = W_ih x + b_ih + W_hh h + b_hh, split i, f, g, o;
    c = sigmoid(f) c + sigmoid(i) tanh(g); h = W_hr (sigmoid(o) tanh(c))."""

    def __init__(self, rnn: nn.LSTM) -> None:
        super().__init__()
        layers = range(rnn.num_layers)
        self.weight_ih = nn.ParameterList([getattr(rnn, f"weight_ih_l{k}") for k in layers])
        self.weight_hh = nn.ParameterList([getattr(rnn, f"weight_hh_l{k}") for k in layers])
        self.weight_hr = nn.ParameterList([getattr(rnn, f"weight_hr_l{k}") for k in layers])
        self.bias = nn.ParameterList([nn.Parameter(getattr(rnn, f"bias_ih_l{k}").detach()
                                                   + getattr(rnn, f"bias_hh_l{k}").detach())
                                      for k in layers])

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h0, c0 = state
        hs, cs = [], []
        k = 0
        for w_ih, w_hh, w_hr, bias in zip(self.weight_ih, self.weight_hh, self.weight_hr,
                                          self.bias):
            h, c = h0[k], c0[k]                                      # (B, P), (B, H)
            inputs = F.linear(x, w_ih, bias)                         # (B, T, I) -> (B, T, 4H)
            outs = []
            for t in range(x.size(1)):
                i, f, g, o = (inputs[:, t] + F.linear(h, w_hh)).chunk(4, 1)  # 4 x (B, H)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = F.linear(torch.sigmoid(o) * torch.tanh(c), w_hr)        # (B, H) -> (B, P)
                outs.append(h)
            x = torch.stack(outs, 1)                                 # T x (B, P) -> (B, T, P)
            hs.append(h)
            cs.append(c)
            k += 1
        return x, (torch.stack(hs), torch.stack(cs))                 # (L, B, P), (L, B, H)


def exportable(model: CharRNN, *, for_onnx: bool = False) -> nn.Module:
    """The model with the export interface (a ``torch.jit`` script module)."""
    if model.config.cell == "lstm":
        rnn = _ProjectedLSTM(model.rnn) if for_onnx and model.config.proj_size else model.rnn
        module = _LSTMExport(model, rnn)
    else:
        module = _Export(model, model.rnn)
    with quiet():
        return torch.jit.script(module.eval())


def example_inputs(model: CharRNN, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``ids`` (B, T) and a zero state in the export interface's order."""
    c = model.config
    h = torch.zeros(c.num_layers, ids.size(0), c.proj_size or c.hidden_size)
    if c.cell == "lstm":
        return ids, h, torch.zeros(c.num_layers, ids.size(0), c.hidden_size)
    return ids, h


def names(model: CharRNN) -> tuple[list[str], list[str]]:
    """The input and output names of the export interface."""
    if model.config.cell == "lstm":
        return ["ids", "h", "c"], ["logits", "h_out", "c_out"]
    return ["ids", "h"], ["logits", "h_out"]


# ------------------------------------------------------------------------ the formats


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No notices from torch.jit and the ONNX exporter (both in maintenance) on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def require(module: str, what: str) -> None:
    """A one-line error naming the extra to install when ``module`` is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs the {module} package; install it with "
                          "pip install 'charrnn-cli[export]'") from None


def onnx_bytes(model: CharRNN, meta: dict[str, str]) -> bytes:
    """The ONNX model: ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` become ONNX's own recurrent
    operators (a projected LSTM a ``Loop``), with a free batch size and length."""
    require("onnx", "ONNX export")
    import onnx

    inputs, outputs = names(model)
    axes = {name: {1: "batch"} for name in inputs[1:] + outputs[1:]}
    axes.update(ids={0: "batch", 1: "time"}, logits={0: "batch", 1: "time"})
    buffer = io.BytesIO()
    # torch's TorchScript-based exporter: it maps the recurrent modules onto ONNX's
    # operators in well under a second. (The newer torch.export-based one took 8 s for a
    # small LSTM here, and wrote a file onnxruntime rejects for a projected one.)
    with quiet():
        torch.onnx.export(exportable(model, for_onnx=True),
                          example_inputs(model, torch.zeros(1, 2, dtype=torch.int64)),
                          buffer, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name, proto.producer_version = "charrnn", __version__
    proto.doc_string = ("character-level language model: ids (batch, time) and state in, "
                        "logits (batch, time, vocab) and state out; vocabulary under "
                        "metadata 'vocab'")
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def torchscript_bytes(model: CharRNN, meta: dict[str, str]) -> bytes:
    """The TorchScript archive: the script module, with ``vocab.json`` and ``meta.json``
    (every other metadata key) as extra files."""
    others = {key: json.loads(value) for key, value in meta.items() if key != "vocab"}
    buffer = io.BytesIO()
    with quiet():
        torch.jit.save(exportable(model), buffer, _extra_files={
            "vocab.json": meta["vocab"], "meta.json": json.dumps(others, ensure_ascii=False)})
    return buffer.getvalue()


def run_export(data: bytes, fmt: str, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """The outputs of the exported file ``data`` on ``inputs``, run by its runtime."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
        return session.run(None, feed)
    with quiet():
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return [t.numpy() for t in module(*inputs)]


def check(model: CharRNN, vocab: Vocab, data: bytes, fmt: str
          ) -> tuple[float | None, float | None, str]:
    """The largest difference between the exported file's outputs and the model's on a
    window of the vocabulary's characters (two sequences, from a non-zero state), the
    largest difference of the model's own float32 outputs from float64 ones there, and
    the runtime that ran the file; a difference beyond ``TOLERANCE`` is an error. (A web
    page is run in a browser by the tests.)"""
    if fmt == "html":
        return None, None, "a browser"
    if fmt == "onnx":
        require("onnxruntime", "checking the ONNX export")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(len(vocab), (2, CHECK_CHARS), generator=generator)
    state = [torch.randn(t.shape, generator=generator) * 0.5
             for t in example_inputs(model, ids)[1:]]
    inputs = (ids, *state)
    expected = outputs(model, inputs)
    exact = outputs(copy.deepcopy(model).double(), tuple(t.double() if t.is_floating_point()
                                                         else t for t in inputs))
    got = run_export(data, fmt, inputs)
    difference = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    rounding = max(float((e.double() - x).abs().max()) for e, x in zip(expected, exact))
    scale = max(1.0, *(float(e.abs().max()) for e in expected))
    runtime = "onnxruntime" if fmt == "onnx" else "torch.jit.load"
    if not difference <= TOLERANCE * scale + 2 * rounding:
        raise ConfigError(f"the {fmt} export differs from the model by {difference:.2e} "
                          f"under {runtime}, on outputs up to {scale:.3g} and with torch's "
                          f"own float32 rounding at {rounding:.1e}, so it was not written; "
                          "this is a bug in charrnn: please report it")
    return difference, rounding, runtime


def outputs(model: CharRNN, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The model's logits and state on ``inputs`` of the export interface."""
    ids, *state = inputs
    with torch.no_grad():
        logits, hidden = model(ids, tuple(state) if len(state) == 2 else state[0])
    return [logits, *(hidden if isinstance(hidden, tuple) else (hidden,))]
