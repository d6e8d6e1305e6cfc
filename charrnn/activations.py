"""What the neurons of a trained model do, character by character, over a text.

    text --Vocab.encode--> ids --Stepper, one character at a time--> every layer's h
    (and an LSTM's tanh(c)) after each character, and p(next character)

``record`` runs the model; ``SIGNALS`` are simple facts about each position of a text
(inside quotes, position in the line, indent, bracket depth) and ``correlations`` ranks
neurons against one, as in Karpathy, Johnson and Fei-Fei's "Visualizing and
Understanding Recurrent Networks". ``activation_report`` gathers the chosen neurons and
the predictions as plain data for ``charrnn.views`` (terminal), ``charrnn.html_page``
and ``--json``. Nothing here prints.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from charrnn.data import Vocab, load_text
from charrnn.errors import ConfigError, DataError
from charrnn.model import CharRNN
from charrnn.reports import ActivationReport, NeuronRow, PredictionRow, Signal
from charrnn.sample import Stepper, zero_states

# Longer texts are cut to their first MAX_CHARS characters (a page is plenty to read).
MAX_CHARS = 10_000

# Neurons shown when neither --neuron nor --top is given.
DEFAULT_TOP = 5

# Next-character predictions kept at each position.
TOP_PREDICTIONS = 5

STATES = {"h": "h_t, the layer's output", "c": "tanh(c_t), the LSTM's squashed cell state"}


# ----------------------------------------------------------------------------- the text

def read_text(value: str) -> tuple[str, str | None]:
    """``(text, path)``: the file ``value`` names, or ``value`` itself as the text.

    A value is a file name when such a file exists, or when it has no space or newline
    and looks like a path (a ``/`` in it, or an extension such as ``.txt``); a missing
    one is then an error rather than a text to read."""
    if not value:
        raise DataError("the activation text is empty; give some text or a text file")
    path = Path(value)
    if _is_folder(path):
        raise DataError(f"{value} is a folder; give one text file, or text to read that is not "
                        "the name of a folder (e.g. with a space in it)")
    if _is_file(path) or _looks_like_path(value):
        if not path.exists():
            raise DataError(f"activation text file {value} does not exist; give an existing "
                            "file, or the text itself (text with a space is never a file name)")
        return load_text(path, what="activation text file"), str(path)
    return value, None


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, or a NUL: it is text
        return False


def _looks_like_path(value: str) -> bool:
    if any(ch.isspace() for ch in value):
        return False
    return "/" in value or "\\" in value or re.search(r"\.[A-Za-z0-9]{1,5}$", value) is not None


# ----------------------------------------------------------------------------- signals

def _since_line_start(values: np.ndarray, newline: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` that restarts after every newline (the newline itself
    still belongs to the line it ends)."""
    total = np.cumsum(values)
    # The running total just before each line begins, carried forward along the line.
    before = np.where(newline, total, 0)
    before = np.concatenate([[0], np.maximum.accumulate(before)[:-1]])
    return total - before


def _quote(chars: np.ndarray) -> np.ndarray:
    """1 inside a quotation: from an opening " (or “) up to its closing one."""
    straight = np.cumsum(chars == '"') % 2
    curly = np.cumsum(chars == "“") - np.cumsum(chars == "”")
    return ((straight + (curly > 0)) > 0).astype(np.float64)


def _line_position(chars: np.ndarray) -> np.ndarray:
    """Characters since the line began: 0 for its first character."""
    return _since_line_start(np.ones(len(chars)), chars == "\n") - 1


def _indent(chars: np.ndarray) -> np.ndarray:
    """Spaces and tabs before the first other character of the current line so far."""
    newline = chars == "\n"
    blank = (chars == " ") | (chars == "\t")
    seen_text = _since_line_start((~blank & ~newline).astype(np.float64), newline) > 0
    return _since_line_start((blank & ~seen_text).astype(np.float64), newline)


def _brackets(chars: np.ndarray) -> np.ndarray:
    """Nesting depth of ( [ { after each character (a closing one counts down)."""
    opens = np.isin(chars, list("([{")).astype(np.float64)
    closes = np.isin(chars, list(")]}")).astype(np.float64)
    return np.cumsum(opens - closes)


SIGNALS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "quote": ("1 inside double quotes, else 0", _quote),
    "line-position": ("characters since the line began", _line_position),
    "indent": ("leading spaces of the line so far", _indent),
    "brackets": ("nesting depth of ( [ {", _brackets),
}


def signal(name: str, text: str) -> np.ndarray:
    """The signal ``name`` at each character of ``text`` (after reading it): (T,)."""
    chars = np.array(list(text))
    return SIGNALS[name][1](chars).astype(np.float64)


# ----------------------------------------------------------------------------- running

@dataclass
class Recording:
    """Everything the model computed at each of the T characters of a text."""

    h: list[np.ndarray]          # per layer (T, H_out): h_t after reading character t
    c: list[np.ndarray] | None   # LSTM only, per layer (T, hidden_size): tanh(c_t)
    probs: np.ndarray            # (T, V): p(character t+1 | characters 0..t)


@torch.no_grad()
def record(model: CharRNN, ids: np.ndarray) -> Recording:
    """Run ``model`` over ``ids`` from a zero state, one character at a time with
    ``Stepper`` (the fused cells on the trained weights), keeping every layer's state."""
    was_training = model.training
    model.eval()
    try:
        stepper = Stepper(model)
        device = next(model.parameters()).device
        states = zero_states(model, 1, device)
        steps = torch.as_tensor(ids.astype(np.int64), device=device).view(-1, 1)  # (T, 1)
        h, c, logits = [], [], []
        for idx in steps:
            out, states = stepper.step(idx, states)          # (1,) -> (1, V)
            logits.append(out[0])
            if stepper.mode == "LSTM":
                h.append(torch.stack([s[0][0] for s in states]))               # (layers, H_out)
                c.append(torch.stack([torch.tanh(s[1][0]) for s in states]))  # (layers, H)
            else:
                h.append(torch.stack([s[0] for s in states]))                  # (layers, H)
    finally:
        model.train(was_training)
    h_all = torch.stack(h, dim=1).float().cpu().numpy()     # T x (layers, H) -> (layers, T, H)
    c_all = torch.stack(c, dim=1).float().cpu().numpy() if c else None
    probs = torch.stack(logits).float().softmax(dim=-1).cpu().numpy()     # T x (V,) -> (T, V)
    return Recording(h=list(h_all), c=None if c_all is None else list(c_all), probs=probs)


def correlations(acts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Pearson correlation of each neuron (column of ``acts``, (T, H)) with ``values``
    (T,); 0 for a neuron that never changes. (T, H), (T,) -> (H,)"""
    acts = acts.astype(np.float64)
    mean = acts.mean(axis=0)                                 # (T, H) -> (H,)
    a = acts - mean                                          # (T, H)
    v = values - values.mean()                               # (T,)
    norms = np.sqrt((a * a).sum(axis=0) * (v * v).sum())     # (H,)
    # Rounding leaves a constant neuron tiny residuals; they must not correlate.
    moves = a.std(axis=0) > 1e-9 * np.maximum(1.0, np.abs(mean))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * v[:, None]).sum(axis=0) / norms             # (T, H) -> (H,)
    return np.where(moves, np.nan_to_num(r, nan=0.0), 0.0)


# ----------------------------------------------------------------------------- report

def activation_report(model: CharRNN, vocab: Vocab, text: str, *, layer: int | None = None,
                      neurons: list[int] | None = None, top: int | None = None,
                      signal_name: str | None = None, state: str = "h",
                      source: str | None = None) -> ActivationReport:
    """The chosen neurons' activation at every character of ``text``, and the model's
    top next-character predictions there.

    ``layer`` defaults to the top one; ``neurons`` picks neurons by index, ``top`` the K
    most correlated with ``signal_name`` (by |r|), or without a signal the K whose
    activation varies most (by standard deviation). ``state`` is ``h`` or, for an LSTM,
    ``c`` (shown as tanh(c)). Bad choices raise ``ConfigError``, a text with characters
    the model never saw ``DataError``. Texts longer than MAX_CHARS are cut.
    """
    config = model.config
    layer = _check_choices(config, layer, neurons, top, signal_name, state)
    truncated_from = len(text) if len(text) > MAX_CHARS else None
    text = text[:MAX_CHARS]
    try:
        ids = vocab.encode(text, what="the activation text")
    except DataError as e:
        raise DataError(f"{e}; remove or replace them (the model knows only the characters "
                        "of its training text)") from None

    recording = record(model, ids)
    acts = (recording.h if state == "h" else recording.c)[layer]      # (T, width)
    width = acts.shape[1]
    bad = [n for n in neurons or [] if not 0 <= n < width]
    if bad:
        raise ConfigError(f"--neuron {bad[0]} is out of range: layer {layer}'s {state} has "
                          f"{width} neurons; give 0 to {width - 1}")

    r = None
    signal_report: Signal | None = None     # the report's "signal": what r correlates with
    if signal_name is not None:
        values = signal(signal_name, text)
        if np.ptp(values) == 0:
            raise ConfigError(
                f"the signal {signal_name} ({SIGNALS[signal_name][0]}) never changes over "
                "this text; give a text where it does, or another --signal "
                f"({', '.join(SIGNALS)})")
        r = correlations(acts, values)
        signal_report = {"name": signal_name, "meaning": SIGNALS[signal_name][0],
                         "values": values.tolist()}
    if neurons:
        chosen, ranked_by = list(neurons), "index"
    else:
        score = np.abs(r) if r is not None else acts.std(axis=0)
        # Stable sort, highest first: ties keep the lower index first.
        chosen = np.argsort(-score, kind="stable")[:min(top or DEFAULT_TOP, width)].tolist()
        ranked_by = "correlation" if r is not None else "std"

    return {
        "text": text,
        "source": source,
        "truncated_from": truncated_from,
        "model": {"cell": config.cell, "nonlinearity": config.nonlinearity,
                  "num_layers": config.num_layers, "hidden_size": config.hidden_size,
                  "proj_size": config.proj_size, "vocab_size": len(vocab)},
        "layer": layer,
        "state": state,
        "state_meaning": STATES[state],
        "width": width,
        "ranked_by": ranked_by,
        "signal": signal_report,
        "neurons": [_neuron(acts[:, n], n, None if r is None else r[n]) for n in chosen],
        "predictions": _predictions(recording.probs, ids, vocab),
        "bits_per_char": _bits_per_char(recording.probs, ids),
    }


def _check_choices(config, layer: int | None, neurons: list[int] | None, top: int | None,
                   signal_name: str | None, state: str) -> int:
    """The layer to read, after checking every choice that does not need the text."""
    if layer is None:
        layer = config.num_layers - 1
    if not 0 <= layer < config.num_layers:
        raise ConfigError(f"--layer {layer} is out of range: the model has {config.num_layers} "
                          f"layer(s); give 0 to {config.num_layers - 1}")
    if state not in STATES:
        raise ConfigError(f"--state must be h or c, got {state!r}")
    if state == "c" and config.cell != "lstm":
        raise ConfigError(f"--state c needs an LSTM (this model is a {config.cell}, which "
                          "has no cell state); use --state h")
    if neurons and top is not None:
        raise ConfigError("--neuron and --top exclude each other; give one")
    if top is not None and top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    if signal_name is not None and signal_name not in SIGNALS:
        close = difflib.get_close_matches(signal_name, list(SIGNALS), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"--signal must be one of {', '.join(SIGNALS)}, got "
                          f"{signal_name!r}{hint}")
    return layer


def _neuron(values: np.ndarray, index: int, r: float | None) -> NeuronRow:
    return {"index": int(index), "r": None if r is None else float(r),
            "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "values": values.astype(np.float64).tolist()}


def _predictions(probs: np.ndarray, ids: np.ndarray, vocab: Vocab) -> list[PredictionRow]:
    """At each position: the character read, the one that follows (None at the end),
    the probability the model gave it, and the TOP_PREDICTIONS likeliest characters."""
    k = min(TOP_PREDICTIONS, probs.shape[1])
    best = np.argsort(-probs, axis=1, kind="stable")[:, :k]          # (T, V) -> (T, k)
    chars = vocab.chars
    rows: list[PredictionRow] = []
    for t, row in enumerate(best):
        following = int(ids[t + 1]) if t + 1 < len(ids) else None
        rows.append({
            "char": chars[ids[t]],
            "next": None if following is None else chars[following],
            "p_next": None if following is None else float(probs[t, following]),
            "top": [[chars[j], float(probs[t, j])] for j in row],
        })
    return rows


def _bits_per_char(probs: np.ndarray, ids: np.ndarray) -> float | None:
    """Mean -log2 p(next character) over the text: how well the model predicts it."""
    if len(ids) < 2:
        return None
    p = probs[np.arange(len(ids) - 1), ids[1:].astype(np.int64)]   # (T-1,)
    return float(-np.log2(np.maximum(p, 1e-30)).mean())
