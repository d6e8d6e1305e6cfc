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
    return TEMPLATE.format(
        title=escape(title), style=STYLE, rows=rows, version=escape(__version__),
        spec=_script_json(spec), weights=base64.b64encode(blob).decode("ascii"),
        script=SCRIPT)


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


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style></head><body>
<header><h1>{title}</h1>
<p class="lede">A character-level language model, running in this page: no server, \
no network. Give it a beginning and it writes on, one character at a time.</p></header>
<main>
<section class="card" aria-label="model"><dl class="facts">{rows}</dl>
<details><summary>the characters it knows</summary><div id="vocab" class="vocab"></div>\
</details></section>
<form id="controls" class="card" autocomplete="off">
<label class="prime">Prime text <span class="hint">(empty: start from the beginning of \
a line)</span><textarea id="prime" rows="2" spellcheck="false"></textarea></label>
<div class="row">
<label>Length<input id="len" type="number" min="0" max="1000000" step="1" value="500">\
</label>
<label>Temperature<input id="temperature" type="number" min="0" step="0.05" value="1">\
</label>
<label>Top-k<input id="top_k" type="number" min="1" step="1" placeholder="all"></label>
<label>Top-p<input id="top_p" type="number" min="0" max="1" step="0.05" \
placeholder="1"></label>
<label>Seed<input id="seed" type="number" min="0" step="1" placeholder="random"></label>
<label class="check"><input id="greedy" type="checkbox"> Greedy</label>
</div>
<div class="row buttons"><button id="generate" type="submit">Generate</button>
<button id="stop" type="button" disabled>Stop</button>
<span id="status" class="status" aria-live="polite"></span></div>
</form>
<p id="message" class="message" role="alert" hidden></p>
<pre id="text" class="card"><span id="prime-echo" class="prime-echo"></span>\
<span id="output"></span></pre>
</main>
<footer>charrnn {version} · weights stored as float32, computed in float64 · \
greedy output equals <code>charrnn sample --greedy</code></footer>
<script type="application/json" id="spec">{spec}</script>
<script type="application/octet-stream" id="weights">{weights}</script>
<script>{script}</script>
</body></html>
"""

STYLE = """
:root { --ink: #1d2330; --muted: #667085; --line: #e3e6ec; --card: #ffffff;
        --page: #f5f6f8; --field: #ffffff; --edge: #c9ced8; --accent: #2f5fd0;
        --accent-ink: #ffffff; --warn: #a4262c; }
@media (prefers-color-scheme: dark) {
  :root { --ink: #e6e8ee; --muted: #9aa3b5; --line: #323848; --card: #1b1f2a;
          --page: #12151c; --field: #12151c; --edge: #4a5266; --accent: #6d95f2;
          --accent-ink: #0d1220; --warn: #ff8a8f; } }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: var(--ink); background: var(--page); line-height: 1.45; }
header, main, footer { max-width: 960px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 22px; }
h1 { font-size: 22px; margin: 0 0 4px; font-weight: 650; overflow-wrap: anywhere; }
.lede { color: var(--muted); margin: 0 0 14px; font-size: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 12px 16px; margin: 0 0 14px; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 32px; margin: 0; }
.facts dt { color: var(--muted); font-size: 12px; }
.facts dd { margin: 0; font-size: 14px; overflow-wrap: anywhere; }
details { margin-top: 6px; font-size: 13px; }
summary { cursor: pointer; color: var(--muted); }
.vocab { display: flex; flex-wrap: wrap; gap: 3px; margin-top: 6px; }
.vocab span { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
              border: 1px solid var(--line); border-radius: 3px; min-width: 1.7em;
              text-align: center; padding: 0 3px; }
label { display: flex; flex-direction: column; font-size: 12.5px; color: var(--muted);
        gap: 3px; }
.hint { font-size: 12px; }
.prime { display: block; }
textarea, input[type=number] { font: 14px ui-monospace, "DejaVu Sans Mono", Menlo,
        Consolas, monospace; color: var(--ink); background: var(--field);
        border: 1px solid var(--edge); border-radius: 5px; padding: 6px 8px; }
textarea:focus, input:focus { outline: 2px solid var(--accent); outline-offset: -1px; }
textarea { width: 100%; resize: vertical; margin-top: 3px; }
input[type=number] { width: 110px; }
.row { display: flex; flex-wrap: wrap; gap: 12px 16px; align-items: flex-end;
       margin-top: 10px; }
label.check { flex-direction: row; align-items: center; gap: 6px; font-size: 14px;
              color: var(--ink); padding-bottom: 7px; }
button { font: inherit; font-size: 14px; border-radius: 5px; padding: 7px 18px;
         border: 1px solid var(--accent); cursor: pointer; }
#generate { background: var(--accent); color: var(--accent-ink); font-weight: 600; }
#stop { background: transparent; color: var(--accent); }
button:disabled { opacity: 0.45; cursor: default; }
input:disabled { opacity: 0.45; }
.status { color: var(--muted); font-size: 13px; }
.message { color: var(--warn); border: 1px solid var(--warn); border-radius: 6px;
           padding: 8px 12px; font-size: 14px; }
pre { font: 14px/1.55 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
      white-space: pre-wrap; overflow-wrap: anywhere; min-height: 120px; }
.prime-echo { font-weight: 700; color: var(--accent); }
footer { color: var(--muted); font-size: 12px; padding-bottom: 24px; }
code { font-size: 12px; }
"""

# The page's program. It reads the spec and weights, then waits for Generate (or runs
# at once with ?run=1). All arithmetic is on JS numbers (float64).
SCRIPT = r"""
"use strict";
(function () {
const $ = (id) => document.getElementById(id);
const spec = JSON.parse($("spec").textContent);
const vocab = spec.vocab;                 // id -> one character (one code point)
const ids = new Map(vocab.map((ch, i) => [ch, i]));
const V = vocab.length;

// ---- weights: base64 of little-endian float32, all tensors in one array
const W = (function decode(text) {
  const bin = atob(text.trim());
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  if (new Uint8Array(new Uint32Array([1]).buffer)[0] === 1) {
    return new Float32Array(bytes.buffer);        // this machine is little-endian too
  }
  const view = new DataView(bytes.buffer), out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
})($("weights").textContent);
function tensor(t) {
  if (!t) return null;
  const size = t.shape.reduce((a, b) => a * b, 1);
  return { data: W.subarray(t.offset, t.offset + size), rows: t.shape[0],
           cols: t.shape.length > 1 ? t.shape[1] : 1 };
}

// y = A x + b for A (rows, cols) stored row by row (PyTorch's (out, in) layout):
// each row is read once, front to back. b may be null.
function affine(A, x, b, y) {
  const a = A.data, rows = A.rows, cols = A.cols, bias = b ? b.data : null;
  for (let r = 0, base = 0; r < rows; r++, base += cols) {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, c = 0;
    for (; c + 3 < cols; c += 4) {
      s0 += a[base + c] * x[c];         s1 += a[base + c + 1] * x[c + 1];
      s2 += a[base + c + 2] * x[c + 2]; s3 += a[base + c + 3] * x[c + 3];
    }
    for (; c < cols; c++) s0 += a[base + c] * x[c];
    y[r] = (s0 + s1) + (s2 + s3) + (bias ? bias[r] : 0);
  }
}
const sigmoid = (v) => 1 / (1 + Math.exp(-v));

// ---- the model: embedding -> layers -> head
const H = spec.hidden_size, P = spec.proj_size || 0, cell = spec.cell;
const relu = spec.nonlinearity === "relu";
const gates = { lstm: 4, gru: 3, rnn: 1 }[cell];
const embedding = tensor(spec.embedding);
const E = embedding.cols;
const layers = spec.layers.map((w) => ({
  ih: tensor(w.weight_ih), hh: tensor(w.weight_hh), bih: tensor(w.bias_ih),
  bhh: tensor(w.bias_hh), hr: tensor(w.weight_hr),
  gi: new Float64Array(gates * H), gh: new Float64Array(gates * H),
  m: new Float64Array(H),
}));
const headW = tensor(spec.head_weight), headB = tensor(spec.head_bias);
const Hout = P || H;
const x0 = new Float64Array(E);
const logits = new Float64Array(V);

function zeroStates() {   // per layer: h (H_out) and, for an LSTM, c (H)
  return layers.map(() => ({ h: new Float64Array(Hout),
                             c: cell === "lstm" ? new Float64Array(H) : null }));
}

// One time step: character id and per-layer states (updated in place); fills `logits`
// with the scores of the next character when withHead.
function step(id, states, withHead) {
  const row = embedding.data.subarray(id * E, id * E + E);
  for (let j = 0; j < E; j++) x0[j] = row[j];    // (E,) the character's embedding
  let x = x0;
  for (let k = 0; k < layers.length; k++) {
    const L = layers[k], s = states[k], gi = L.gi, gh = L.gh, h = s.h;
    affine(L.ih, x, L.bih, gi);                  // W_ih x + b_ih  (gates*H,)
    affine(L.hh, h, L.bhh, gh);                  // W_hh h + b_hh  (gates*H,)
    if (cell === "lstm") {                       // gate rows i, f, g, o
      const c = s.c, m = L.m;
      for (let j = 0; j < H; j++) {
        const i = sigmoid(gi[j] + gh[j]);
        const f = sigmoid(gi[H + j] + gh[H + j]);
        const g = Math.tanh(gi[2 * H + j] + gh[2 * H + j]);
        const o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
        c[j] = f * c[j] + i * g;
        m[j] = o * Math.tanh(c[j]);
      }
      if (L.hr) affine(L.hr, m, null, h);        // h = W_hr (o * tanh(c))  (H,) -> (P,)
      else h.set(m);
    } else if (cell === "gru") {                 // gate rows r, z, n
      for (let j = 0; j < H; j++) {
        const r = sigmoid(gi[j] + gh[j]);
        const z = sigmoid(gi[H + j] + gh[H + j]);
        const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
        h[j] = (1 - z) * n + z * h[j];
      }
    } else {
      for (let j = 0; j < H; j++) {
        const v = gi[j] + gh[j];
        h[j] = relu ? (v > 0 ? v : 0) : Math.tanh(v);
      }
    }
    x = h;
  }
  if (withHead) affine(headW, x, headB, logits);  // (H_out,) -> (V,)
}

// ---- choice of the next character
// sfc32 (Chris Doty-Humphrey's Small Fast Counting generator, 128 bits of state),
// seeded through splitmix32 so that nearby seeds give unrelated streams.
function makeRandom(seed) {
  let s = seed >>> 0;
  function splitmix() {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
  let a = splitmix(), b = splitmix(), c = splitmix(), d = splitmix();
  function next32() {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  }
  for (let i = 0; i < 12; i++) next32();
  return () => ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992;
}

function argmax(v) {         // the first of equal maxima, as torch.argmax
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

const scaled = new Float64Array(V);
function choose(o) {
  if (o.greedy) return argmax(logits);
  const top = logits[argmax(logits)];
  for (let i = 0; i < V; i++) scaled[i] = (logits[i] - top) / o.temperature;
  if (o.topK !== null && o.topK < V) {   // keep the k largest (and ties with the k-th)
    const kth = Array.from(scaled).sort((p, q) => q - p)[o.topK - 1];
    for (let i = 0; i < V; i++) if (scaled[i] < kth) scaled[i] = -Infinity;
  }
  let total = 0;
  const p = new Float64Array(V);
  for (let i = 0; i < V; i++) { p[i] = Math.exp(scaled[i]); total += p[i]; }
  if (o.topP !== null && o.topP < 1) {  // drop a character once those above it reach top_p
    const order = Array.from(p.keys()).sort((i, j) => p[j] - p[i] || i - j);
    let before = 0, kept = 0;
    for (const i of order) {
      const share = p[i] / total;
      if (before >= o.topP) p[i] = 0; else kept += p[i];
      before += share;
    }
    total = kept;
  }
  let u = o.random() * total, last = 0;
  for (let i = 0; i < V; i++) {
    if (p[i] <= 0) continue;
    last = i;
    u -= p[i];
    if (u < 0) return i;
  }
  return last;               // u reached the end by rounding: the last possible one
}

// ---- the page
const output = $("output"), echo = $("prime-echo"), message = $("message");
const status = $("status"), go = $("generate"), stopButton = $("stop");
const field = $;

function shown(ch) {         // a visible name for a character in a message or a list
  const names = { "\n": "newline", "\r": "carriage return", "\t": "tab", " ": "space" };
  const code = "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return names[ch] ? names[ch] + " (" + code + ")" : "\u201c" + ch + "\u201d (" + code + ")";
}

(function listVocabulary() {
  const glyph = { "\n": "\u21b5", "\t": "\u21e5", " ": "\u2423", "\r": "\u240d" };
  const box = $("vocab");
  for (const ch of vocab) {
    const span = document.createElement("span");
    span.textContent = glyph[ch] || ch;
    span.title = shown(ch);
    box.appendChild(span);
  }
})();

function say(text) {
  message.textContent = text;
  message.hidden = !text;
}

// The settings in the controls, checked; throws an Error with a message for the user.
function readSettings() {
  const number = (name, what, check) => {
    const bad = field(name).dataset.bad;      // a value from the address that is no number
    if (bad !== undefined) throw new Error(what + " The address gives " + name + "=" + bad + ".");
    const raw = field(name).value.trim();
    if (raw === "") return null;
    const v = Number(raw);
    if (!Number.isFinite(v) || !check(v)) throw new Error(what);
    return v;
  };
  const whole = (v) => Number.isInteger(v);
  const greedy = field("greedy").checked;
  const length = number("len", "Length must be a whole number from 0 to 1000000.",
                        (v) => whole(v) && v >= 0 && v <= 1000000);
  const o = { greedy: greedy, length: length === null ? 500 : length, temperature: 1,
              topK: null, topP: null, seed: null };
  if (!greedy) {             // the draw's settings (greedy ignores them)
    o.temperature = number("temperature", "Temperature must be a number above 0.",
                           (v) => v > 0) ?? 1;
    o.topK = number("top_k", "Top-k must be a whole number of at least 1.",
                    (v) => whole(v) && v >= 1);
    o.topP = number("top_p", "Top-p must be a number above 0 and at most 1.",
                    (v) => v > 0 && v <= 1);
    o.seed = number("seed", "Seed must be a whole number from 0 to 4294967295.",
                    (v) => whole(v) && v >= 0 && v <= 4294967295);
  }
  // The address's prime as it is, while the box shows it: a text box turns \r into \n.
  const boxed = field("prime").value;
  const typed = addressPrime !== null && boxed === addressPrime.replace(/\r\n?/g, "\n")
    ? addressPrime : boxed;
  const prime = typed === "" ? spec.default_prime : typed;
  const chars = Array.from(prime);           // code points, not UTF-16 units
  const unknown = [...new Set(chars.filter((ch) => !ids.has(ch)))];
  if (unknown.length) {
    throw new Error("The prime has " + unknown.length + " character" +
                    (unknown.length > 1 ? "s" : "") + " this model never saw: " +
                    unknown.slice(0, 20).map(shown).join(", ") +
                    (unknown.length > 20 ? " and " + (unknown.length - 20) + " more" : "") +
                    ". Remove or replace " +
                    (unknown.length > 1 ? "them" : "it") + " and generate again.");
  }
  o.typed = typed;
  o.primeIds = chars.map((ch) => ids.get(ch));
  return o;
}

let job = null;            // the generation under way, if any
const channel = new MessageChannel();   // a macrotask without setTimeout's 4 ms clamp
channel.port1.onmessage = () => {
  try {
    work();
  } catch (e) {             // a fault of the page itself: say so rather than hang
    say("Generation failed: " + e);
    output.dataset.error = "1";
    if (job) { job.o.length = job.made; finish(job, false); }
  }
};
const later = () => channel.port2.postMessage(null);

function start() {
  stop();
  output.textContent = "";
  echo.textContent = "";
  delete output.dataset.done;
  delete output.dataset.error;
  let o;
  try {
    o = readSettings();
  } catch (e) {
    say(e.message);
    output.dataset.error = "1";
    status.textContent = "";
    return;
  }
  say("");
  if (!o.greedy && o.seed === null) {
    o.seed = crypto.getRandomValues(new Uint32Array(1))[0];
  }
  o.random = o.greedy ? null : makeRandom(o.seed);
  echo.textContent = o.typed;
  output.dataset.seed = o.greedy ? "" : String(o.seed);
  job = { o: o, states: zeroStates(), warm: 0, made: 0, id: o.primeIds.at(-1),
          t0: performance.now() };
  go.disabled = true;
  stopButton.disabled = false;
  later();
}

// Steps until about 25 ms have passed, shows what they made, and yields to the page.
function work() {
  const j = job;
  if (!j) return;
  const o = j.o, ids0 = o.primeIds, deadline = performance.now() + 25;
  let text = "";
  while (j.made < o.length && performance.now() < deadline) {
    if (j.warm < ids0.length - 1) {          // warm up on the prime, all but its last
      step(ids0[j.warm++], j.states, false);
      continue;
    }
    step(j.id, j.states, true);
    j.id = choose(o);
    text += vocab[j.id];
    j.made++;
  }
  if (text) output.appendChild(document.createTextNode(text));
  if (j.made < o.length) {
    status.textContent = "generating\u2026 " + j.made.toLocaleString() + " / " +
                         o.length.toLocaleString();
    later();
  } else {
    finish(j);
  }
}

function finish(j, done = true) {
  const ms = performance.now() - j.t0;
  job = null;
  output.dataset.ms = ms.toFixed(1);
  output.dataset.chars = String(j.made);
  if (done) output.dataset.done = "1";
  const rate = ms > 0 ? ", " + Math.round(j.made / ms * 1000).toLocaleString() + " chars/s"
                      : "";
  status.textContent = j.made.toLocaleString() + " characters in " +
                       (ms / 1000).toFixed(2) + " s" + rate +
                       (j.o.greedy ? ", greedy" : ", seed " + j.o.seed);
  go.disabled = false;
  stopButton.disabled = true;
}

function stop() {
  if (job) {
    job.o.length = job.made;
    finish(job);
  }
}

function syncGreedy() {
  const on = field("greedy").checked;
  for (const name of ["temperature", "top_k", "top_p", "seed"]) field(name).disabled = on;
}

$("controls").addEventListener("submit", (e) => { e.preventDefault(); start(); });
stopButton.addEventListener("click", stop);
field("greedy").addEventListener("change", syncGreedy);
field("prime").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); start(); }
});

// For the console and for tests: the vocabulary, and the next-character scores
// (logits) after reading `text` from a zero state.
window.charrnn = Object.freeze({
  vocab: vocab.slice(),
  logits(text) {
    const chars = Array.from(text), states = zeroStates();
    if (!chars.length || !chars.every((ch) => ids.has(ch))) {
      throw new Error("logits needs some text made of the vocabulary's characters");
    }
    chars.forEach((ch, t) => step(ids.get(ch), states, t === chars.length - 1));
    return Array.from(logits);
  },
});

// ---- settings from the address: ?prime=...&len=...&greedy=1&seed=...&run=1
const query = new URLSearchParams(location.search);
const addressPrime = query.get("prime");
for (const name of ["prime", "len", "temperature", "top_k", "top_p", "seed"]) {
  if (!query.has(name)) continue;
  const given = query.get(name);
  field(name).value = given;
  if (name !== "prime" && given.trim() !== "" && field(name).value === "") {
    field(name).dataset.bad = given;    // a number box drops what it cannot read: say so
    field(name).addEventListener("input", () => delete field(name).dataset.bad,
                                 { once: true });
  }
}
const yes = (v) => ["1", "true", "yes", "on"].includes((v || "").toLowerCase());
if (query.has("greedy")) field("greedy").checked = yes(query.get("greedy"));
syncGreedy();
if (yes(query.get("run"))) start();
})();
"""
