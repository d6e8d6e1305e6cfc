// The page's program. It reads the spec and the weights, then waits for Generate (or
// runs at once with ?run=1). All arithmetic is on JS numbers (float64).
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
// top-k and top-p are spelled as the command line spells them, or with an underscore.
const query = new URLSearchParams(location.search);
for (const [dashed, name] of [["top-k", "top_k"], ["top-p", "top_p"]]) {
  if (query.has(dashed) && !query.has(name)) query.set(name, query.get(dashed));
}
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
