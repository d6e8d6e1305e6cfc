"""A trained model as one self-contained web page that generates text in the browser.

``page(model, vocab, title=..., meta=...)`` returns the HTML: the weights as base64 of
little-endian float32 (a tied matrix once), the vocabulary as JSON, and hand-written
JavaScript that runs the model's own equations (embedding, each layer's RNN / LSTM /
GRU cell in PyTorch's gate order, the linear head) in float64, then greedy, tempered,
top-k and top-p choice with a seeded generator. Greedy output equals ``charrnn sample
--greedy``: the weights are torch's float32 values exactly, the logits equal those of the
model in float64 to about 1e-14 and those of torch's float32 arithmetic to about 1e-6,
so the two could part only where the two likeliest characters score the same to 1e-6.
No network: a Content-Security-Policy forbids every fetch. URL settings
(``?prime=ROMEO:&len=200&greedy=1&seed=7&temperature=0.8&top_k=5&top_p=0.9&run=1``) fill
the controls; ``run=1`` generates at once, into ``#output`` (``data-done="1"`` when done).
"""

from __future__ import annotations

import base64
import json
import math
from html import escape
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from charrnn import __version__
from charrnn.data import Vocab
from charrnn.errors import ConfigError
from charrnn.model import CharRNN
from charrnn.sample import default_prime


def page(model: CharRNN, vocab: Vocab, *, title: str, meta: dict[str, Any]) -> str:
    """The whole page as a string. ``meta`` holds facts about the run to show beside the
    model's own description, e.g. ``{"val_loss": 1.49, "step": 2400}`` (``val_loss`` in
    nats per character; other keys are shown as they are)."""
    if model.rnn.bidirectional:
        raise ConfigError("a bidirectional model cannot generate text, so it has no web "
                          "page; export a model trained with charrnn train")
    if len(vocab) != model.vocab_size:
        raise ValueError(f"vocabulary of {len(vocab)} characters for a model of "
                         f"{model.vocab_size}")
    spec, blob = _weights(model)
    spec.update(vocab=list(vocab.chars), default_prime=default_prime(vocab))
    rows = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>"
                   for k, v in _description(model, vocab, meta, len(blob)))
    return _part("page.html").format(
        title=escape(title), style=_part("page.css"), rows=rows, version=escape(__version__),
        spec=_script_json(spec), weights=base64.b64encode(blob).decode("ascii"),
        script=_part("page.js"))


def checkpoint_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a page shows about the run a checkpoint came from: its validation loss,
    step and training text, where the checkpoint has them."""
    meta: dict[str, Any] = {}
    loss = ckpt.get("val_loss", ckpt.get("best_val_loss"))
    if isinstance(loss, (int, float)):
        meta["val_loss"] = float(loss)
    if isinstance(ckpt.get("step"), int):
        meta["step"] = ckpt["step"]
    corpus = ckpt.get("corpus")
    if isinstance(corpus, dict):
        paths = corpus.get("paths") or ([corpus["path"]] if corpus.get("path") else [])
        if paths:
            meta["trained on"] = ", ".join(Path(str(p)).name for p in paths)
    return meta


# --------------------------------------------------------------------------- parts

def _weights(model: CharRNN) -> tuple[dict[str, Any], bytes]:
    """Every tensor the page needs, as one float32 little-endian blob, and the spec that
    says where each one starts (in floats) and its shape. A tensor that is another's
    (a tied head) is stored once and both names point at it."""
    chunks: list[bytes] = []
    placed: dict[tuple[int, int, tuple[int, ...]], dict[str, Any]] = {}
    size = 0

    def put(t: torch.Tensor | None) -> dict[str, Any] | None:
        nonlocal size
        if t is None:
            return None
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in placed:
            data = t.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4")
            placed[key] = {"offset": size, "shape": list(t.shape)}
            chunks.append(data.tobytes())
            size += data.size
        return placed[key]

    rnn = model.rnn
    layers = [{name: put(getattr(rnn, f"{name}_l{k}", None))
               for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
              for k in range(rnn.num_layers)]
    spec = {"cell": model.config.cell, "nonlinearity": model.config.nonlinearity,
            "hidden_size": model.config.hidden_size, "proj_size": model.config.proj_size,
            "embedding": put(model.embedding.weight), "layers": layers,
            "head_weight": put(model.head.weight), "head_bias": put(model.head.bias)}
    return spec, b"".join(chunks)


def _description(model: CharRNN, vocab: Vocab, meta: dict[str, Any],
                 weight_bytes: int) -> list[tuple[str, str]]:
    c = model.config
    cell = f"RNN ({c.nonlinearity})" if c.cell == "rnn" else c.cell.upper()
    layers = f"{c.num_layers} layer{'s' if c.num_layers > 1 else ''}"
    sizes = f"hidden {c.hidden_size}, embedding {c.embedding_dim}"
    sizes += f", projection {c.proj_size}" if c.proj_size else ""
    rows = [("model", f"{cell}, {layers}, {sizes}"
             + (", head tied to the embedding" if c.tie_weights else "")),
            ("parameters", f"{model.num_parameters():,} ({weight_bytes / 2**20:.2f} MiB "
                           "float32)"),
            ("vocabulary", f"{len(vocab)} characters")]
    for key, value in meta.items():
        if value is None:
            continue
        if key == "val_loss":
            rows.append(("validation loss", f"{value:.4f} nats/char "
                         f"({value / math.log(2):.4f} bits/char)"))
        else:
            shown = (f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"
                     if isinstance(value, int) and not isinstance(value, bool) else str(value))
            rows.append((key.replace("_", " "), shown))
    return rows


def _script_json(value: Any) -> str:
    """JSON to put inside a <script> element: ASCII only, and no '<', '>' or '&', so
    that no text in it (a vocabulary holding '</script>' or '<!--') can end the element."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _part(name: str) -> str:
    """One part of the page (``page.html``, ``page.css``, ``page.js``), shipped in
    ``charrnn/web/`` beside this module."""
    return (files("charrnn") / "web" / name).read_text(encoding="utf-8")
