"""The web page: its JavaScript runs the model in a real browser (headless Chromium)
and must generate what ``charrnn sample --greedy`` generates, character for character.

Every page check runs in one Chromium launch: a harness page holds each case in an
iframe and, once every frame has finished (``data-done`` or ``data-error`` on its
#output), writes what it read from them as JSON into its own DOM, which
``--dump-dom`` prints when the virtual time budget has run out (virtual time only
advances while the page is idle, so the budget bounds a hang, not the work).
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn.config import ModelConfig
from charrnn.data import Vocab
from charrnn.errors import ConfigError
from charrnn.model import CharRNN
from charrnn.webpage import page

from helpers import SHAKESPEARE, run, save_model

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


# CI installs Chromium and sets CHARRNN_REQUIRE_BROWSER=1: there a missing browser fails.
needs_browser = pytest.mark.skipif(
    find_browser() is None and not os.environ.get("CHARRNN_REQUIRE_BROWSER"),
    reason=f"no Chromium-based browser ({', '.join(BROWSERS)}) on PATH")


def export_page(checkpoint: Path, target: Path) -> Path:
    """``charrnn export CHECKPOINT -o TARGET.html``, in this process."""
    from charrnn.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(checkpoint), "-o", str(target)])
    assert exit_info.value.code == 0
    return target


# The models whose greedy page output is compared with `charrnn sample --greedy`.
KINDS = {
    "rnn-tanh": dict(cell="rnn", nonlinearity="tanh"),
    "rnn-relu": dict(cell="rnn", nonlinearity="relu"),
    "lstm": dict(cell="lstm"),
    "lstm-proj": dict(cell="lstm", proj_size=12),
    "gru-3-layers": dict(cell="gru", num_layers=3),
    "lstm-tied-1-layer": dict(cell="lstm", num_layers=1, embedding_dim=32, tie_weights=True),
}
PRIMES = ("First", "You are")
LOGITS_TEXT = "jabbed\nhigh\nbadge"
# Random models (weights scaled up) whose page logits are compared with torch's.
LOGIT_KINDS = {
    "rnn-tanh": dict(cell="rnn", nonlinearity="tanh"),
    "rnn-relu": dict(cell="rnn", nonlinearity="relu"),
    "lstm": dict(cell="lstm"),
    "lstm-proj-tied": dict(cell="lstm", proj_size=8, embedding_dim=8, tie_weights=True),
    "gru": dict(cell="gru"),
}
# A vocabulary that breaks naive embedding: markup, quotes, backslashes, a line
# separator, and characters outside the BMP (two UTF-16 units each in JavaScript).
ODD_TEXT = ("<b>Rom&eo</b> said \"</script><!--\" & 'it\\'s'\n"
            "\U0001F600 sings \U0001D11E; caf\u00e9\u2028\tna\u00efve </SCRIPT >\n")
# A model whose recurrent weights are zero predicts softmax(LOGITS) after any text, so
# its samples are independent draws from one known distribution.
CONSTANT_CHARS = "abcdefgh"
LOGITS = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0]
TIED_LOGITS = [0.5, 1.0, 3.0, 3.0, 3.0, -1.0, 0.0, 2.0]   # greedy takes the first 3.0
UNKNOWN_PRIME = "Zebra \U0001F993 and zebra"
# A text with Windows line ends, and a prime that ends in a carriage return (which a
# page's text box would turn into a newline).
CRLF_TEXT = "First Citizen:\r\nBefore we proceed any further,\r\nhear me speak.\r\n\r\n"
CRLF_PRIME = "First Citizen:\r"
DRAWS = [dict(), dict(temperature=0.5), dict(top_k=3), dict(top_p=0.6),
         dict(temperature=2.0, top_k=5, top_p=0.95)]


def save(model: CharRNN, vocab: Vocab, path: Path) -> Path:
    return save_model(model, vocab.chars, path, val_loss=1.25, step=60)


def trained(text: str, steps: int = 60, **config) -> tuple[CharRNN, Vocab]:
    """A small CharRNN fitted for a few dozen Adam steps to ``text`` (a short passage
    repeated), so that its greedy text is varied rather than one repeated character."""
    torch.manual_seed(0)
    vocab = Vocab.from_text(text)
    data = torch.as_tensor(vocab.encode(text * (8000 // len(text) + 1)).astype("int64"))
    model = CharRNN(len(vocab), ModelConfig(**{**dict(embedding_dim=16, hidden_size=32,
                                                      num_layers=2), **config}))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 33, (16,), generator=g)
        windows = torch.stack([data[s:s + 33] for s in starts])            # (16, 33)
        logits, _ = model(windows[:, :-1])                                 # (16, 32, V)
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), windows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vocab


def scaled_random(chars: str, **config) -> tuple[CharRNN, Vocab]:
    """A random CharRNN with its weights scaled up threefold, so that its logits depend
    strongly on every weight and every character read."""
    torch.manual_seed(5)
    vocab = Vocab.from_text(chars)
    model = CharRNN(len(vocab), ModelConfig(**{**dict(embedding_dim=8, hidden_size=16,
                                                      num_layers=2), **config}))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval(), vocab


def constant_model(logits: list[float]) -> tuple[CharRNN, Vocab]:
    model = CharRNN(len(CONSTANT_CHARS), ModelConfig(cell="lstm", embedding_dim=4,
                                                     hidden_size=4, num_layers=1))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("rnn.", "head.weight")):
                p.zero_()
        model.head.bias.copy_(torch.tensor(logits))
    return model.eval(), Vocab(CONSTANT_CHARS)


def url(page_path: Path, **settings) -> str:
    return page_path.as_uri() + "?" + urlencode(settings, quote_via=quote)


HARNESS = """<!doctype html><meta charset="utf-8"><body>
<pre id="results"></pre><pre id="pending"></pre><script>
const jobs = JOBS;
const frames = jobs.map((job) => {
  const f = document.createElement("iframe");
  f.src = job.src;
  document.body.appendChild(f);
  return f;
});
function read(job, frame) {
  const w = frame.contentWindow, d = frame.contentDocument;
  if (!d || !w.charrnn) return null;                 // not loaded yet
  const out = d.getElementById("output"), message = d.getElementById("message");
  if (job.wait && !out.dataset.done && !out.dataset.error) return null;
  return { text: out.textContent, done: out.dataset.done || null,
           error: out.dataset.error || null, chars: out.dataset.chars || null,
           seed: out.dataset.seed || null, ms: out.dataset.ms || null,
           message: message.hidden ? "" : message.textContent,
           resources: w.performance.getEntriesByType("resource").length,
           vocab: Array.from(w.charrnn.vocab),
           listed: d.querySelectorAll("#vocab span").length,
           logits: job.logits ? w.charrnn.logits(job.logits) : null };
}
function poll() {
  const results = {}, pending = [];
  jobs.forEach((job, i) => {
    let r;
    try { r = read(job, frames[i]); } catch (e) { r = { failure: String(e) }; }
    if (r) results[job.name] = r; else pending.push(job.name);
  });
  document.getElementById("pending").textContent = pending.join("\\n");
  if (pending.length) setTimeout(poll, 20);
  else document.getElementById("results").textContent = JSON.stringify(results);
}
poll();
</script></body>
"""


def run_in_browser(folder: Path, jobs: list[dict]) -> dict[str, dict]:
    """Open every job's page (``src``) in one Chromium launch; what each frame showed.
    ``wait`` jobs are read once generation has ended, ``logits`` jobs also return the
    page's logits after that text."""
    harness = folder / "harness.html"
    data = json.dumps(jobs, ensure_ascii=True).replace("<", "\\u003c")
    harness.write_text(HARNESS.replace("JOBS", data), encoding="utf-8")
    done = subprocess.run(
        [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={folder / 'profile'}", "--allow-file-access-from-files",
         "--virtual-time-budget=60000", "--dump-dom", harness.as_uri()],
        capture_output=True, text=True, encoding="utf-8", timeout=600)
    found = re.search(r'<pre id="results">(.*?)</pre><pre id="pending">(.*?)</pre>',
                      done.stdout, re.S)
    assert found, f"no DOM from the browser: {done.stdout[-500:]} {done.stderr[-2000:]}"
    assert found[1], f"pages that never finished: {html.unescape(found[2])}"
    shown = json.loads(html.unescape(found[1]))
    failed = {name: r["failure"] for name, r in shown.items() if "failure" in r}
    assert not failed, f"pages that could not be read: {failed}"
    return shown


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict:
    """The models, their checkpoints and pages, and what the browser made of them."""
    folder = tmp_path_factory.mktemp("webpage")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # models this small gain nothing from a second thread
    try:
        return _pages(folder)
    finally:
        torch.set_num_threads(threads)


def _pages(folder: Path) -> dict:
    passage = SHAKESPEARE.read_text(encoding="utf-8")[:400]
    made, jobs = {}, []

    def add(name: str, model: CharRNN, vocab: Vocab) -> Path:
        checkpoint = save(model, vocab, folder / name / "best.pt")
        made[name] = (model, vocab, checkpoint, export_page(checkpoint, folder / f"{name}.html"))
        return made[name][3]

    for name, config in KINDS.items():
        path = add(name, *trained(passage, **config))
        for i, prime in enumerate(PRIMES):
            jobs.append(dict(name=f"{name}/{i}", wait=True,
                             src=url(path, prime=prime, len=200, greedy=1, run=1)))
    path = add("odd", *trained(ODD_TEXT, steps=80))
    jobs.append(dict(name="odd", wait=True,
                     src=url(path, prime="\U0001F600", len=200, greedy=1, run=1)))
    jobs.append(dict(name="top-k-as-the-command-spells-it", wait=True,   # ?top-k=1: greedy
                     src=url(made["lstm"][3], prime=PRIMES[0], len=200, seed=5, run=1,
                             **{"top-k": 1})))
    jobs.append(dict(name="default-prime", wait=True,
                     src=url(made["lstm"][3], prime="", len=120, greedy="true", run=1)))
    for name, config in LOGIT_KINDS.items():
        path = add(f"random-{name}", *scaled_random("abcdefghij\n", **config))
        jobs.append(dict(name=f"logits/{name}", wait=False, src=url(path),
                         logits=LOGITS_TEXT))
    rnn = made["rnn-relu"][3]
    for name, seed in (("seed-a", 7), ("seed-b", 7), ("seed-c", 8)):
        jobs.append(dict(name=name, wait=True,
                         src=url(rnn, prime="First", len=200, seed=seed, run=1)))
    jobs.append(dict(name="unknown", wait=True,
                     src=url(rnn, prime=UNKNOWN_PRIME, len=50, run=1)))
    jobs.append(dict(name="bad-temperature", wait=True,
                     src=url(rnn, prime="First", temperature="0", run=1)))
    jobs.append(dict(name="bad-address", wait=True,
                     src=url(rnn, prime="First", len="abc", run=1)))
    path = add("crlf", *trained(CRLF_TEXT))
    jobs.append(dict(name="crlf", wait=True,
                     src=url(path, prime=CRLF_PRIME, len=200, greedy=1, run=1)))
    path = add("constant", *constant_model(LOGITS))
    for i, setting in enumerate(DRAWS):
        jobs.append(dict(name=f"draws/{i}", wait=True,
                         src=url(path, prime="a", len=20_000, seed=3, run=1, **setting)))
    path = add("tie", *constant_model(TIED_LOGITS))
    jobs.append(dict(name="tie", wait=True, src=url(path, prime="a", len=30, greedy=1, run=1)))
    return dict(models=made, browser=run_in_browser(folder, jobs) if find_browser() else None)


def sample_command(checkpoint: Path, capsys, *flags: str) -> str:
    code, out, err = run(["sample", str(checkpoint), *flags], capsys)
    assert code == 0, err
    return out


# ----------------------------------------------------------------------- in the browser

@needs_browser
@pytest.mark.parametrize("kind", KINDS)
def test_greedy_page_text_equals_the_sample_command(pages, kind, capsys):
    _, _, checkpoint, _ = pages["models"][kind]
    for i, prime in enumerate(PRIMES):
        shown = pages["browser"][f"{kind}/{i}"]
        expected = sample_command(checkpoint, capsys, "--greedy", "--prime", prime,
                                  "--len", "200")
        assert expected.startswith(prime)
        assert shown["done"] == "1" and shown["chars"] == "200"
        assert shown["text"] == expected[len(prime):]
        assert len(set(shown["text"])) >= 8   # varied text, not one repeated character


@needs_browser
def test_the_address_takes_top_k_spelled_as_the_command_line_spells_it(pages, capsys):
    _, _, checkpoint, _ = pages["models"]["lstm"]
    shown = pages["browser"]["top-k-as-the-command-spells-it"]
    expected = sample_command(checkpoint, capsys, "--greedy", "--prime", PRIMES[0],
                              "--len", "200")
    assert shown["done"] == "1" and shown["text"] == expected[len(PRIMES[0]):]


@needs_browser
@pytest.mark.parametrize("kind", LOGIT_KINDS)
def test_page_logits_equal_the_models(pages, kind):
    model, vocab, _, _ = pages["models"][f"random-{kind}"]
    ids = torch.as_tensor(vocab.encode(LOGITS_TEXT).astype("int64"))[None]  # (1, T)
    with torch.no_grad():
        single = model(ids)[0][0, -1].double().numpy()                       # (V,)
        double = copy.deepcopy(model).double()(ids)[0][0, -1].numpy()        # (V,)
    got = np.array(pages["browser"][f"logits/{kind}"]["logits"])
    assert got.shape == double.shape and np.abs(double).max() > 1.0
    # The page computes in float64 from the float32 weights: the model's equations in
    # float64 to rounding, and torch's float32 arithmetic to float32's precision.
    assert np.allclose(got, double, rtol=1e-10, atol=1e-10)
    assert np.allclose(got, single, rtol=1e-4, atol=1e-4 * np.abs(single).max())


@needs_browser
def test_a_vocabulary_of_markup_quotes_and_astral_characters_round_trips(pages, capsys):
    model, vocab, checkpoint, _ = pages["models"]["odd"]
    shown = pages["browser"]["odd"]
    assert shown["vocab"] == list(vocab.chars) and shown["listed"] == len(vocab)
    expected = sample_command(checkpoint, capsys, "--greedy", "--prime", "\U0001F600",
                              "--len", "200")
    assert shown["done"] == "1" and shown["text"] == expected[1:]
    assert {"<", "&", "\"", "\U0001D11E"} <= set(shown["text"])


@needs_browser
def test_greedy_takes_the_first_of_equal_scores_as_the_sample_command_does(pages, capsys):
    checkpoint = pages["models"]["tie"][2]
    expected = sample_command(checkpoint, capsys, "--greedy", "--prime", "a", "--len", "30")
    assert expected == "a" + CONSTANT_CHARS[TIED_LOGITS.index(max(TIED_LOGITS))] * 30
    assert pages["browser"]["tie"]["text"] == expected[1:]


@needs_browser
def test_an_empty_prime_starts_where_the_sample_command_does(pages, capsys):
    _, vocab, checkpoint, _ = pages["models"]["lstm"]
    assert "\n" in vocab.chars
    expected = sample_command(checkpoint, capsys, "--greedy", "--len", "120")
    assert pages["browser"]["default-prime"]["text"] == expected


@needs_browser
def test_the_same_seed_draws_the_same_text_and_another_seed_other_text(pages):
    _, vocab, _, _ = pages["models"]["rnn-relu"]
    a, b, c = (pages["browser"][name] for name in ("seed-a", "seed-b", "seed-c"))
    assert a["done"] == b["done"] == c["done"] == "1"
    assert len(a["text"]) == len(c["text"]) == 200 and set(a["text"]) <= set(vocab.chars)
    assert a["text"] == b["text"] and a["text"] != c["text"]
    assert (a["seed"], c["seed"]) == ("7", "8")
    assert a["chars"] == "200" and float(a["ms"]) >= 0


def expected_draws(temperature=1.0, top_k=None, top_p=None) -> np.ndarray:
    """softmax(LOGITS / temperature) cut to the top k, then to the smallest set of most
    likely characters whose probabilities reach top_p, renormalised."""
    p = np.exp(np.array(LOGITS) / temperature)
    p /= p.sum()
    order = np.argsort(-p)
    keep = np.zeros(len(p), dtype=bool)
    keep[order[:top_k or len(p)]] = True
    if top_p is not None:
        q = np.where(keep, p, 0) / p[keep].sum()
        mass = 0.0
        for i in order:
            if mass >= top_p:
                keep[i] = False
            mass += q[i]
    return np.where(keep, p, 0) / p[keep].sum()


@needs_browser
@pytest.mark.parametrize("i", range(len(DRAWS)))
def test_draws_follow_the_tempered_truncated_distribution(pages, i):
    text = pages["browser"][f"draws/{i}"]["text"]
    assert len(text) == 20_000
    for ch, p in zip(CONSTANT_CHARS, expected_draws(**DRAWS[i])):
        freq = text.count(ch) / len(text)
        if p == 0:
            assert freq == 0, (ch, DRAWS[i])
        else:     # within 5 standard errors
            assert abs(freq - p) < 5 * np.sqrt(p * (1 - p) / len(text)), (ch, freq, p)


@needs_browser
def test_prime_characters_outside_the_vocabulary_are_named_and_nothing_is_generated(pages):
    _, vocab, _, _ = pages["models"]["rnn-relu"]
    shown = pages["browser"]["unknown"]
    assert shown["text"] == "" and shown["done"] is None and shown["error"] == "1"
    unknown = vocab.unknown(UNKNOWN_PRIME)
    assert "Z" in unknown and "\U0001F993" in unknown
    assert f"has {len(unknown)} characters this model never saw" in shown["message"]
    for ch in unknown:      # the zebra as one character U+1F993, not two UTF-16 halves
        assert f"\u201c{ch}\u201d (U+{ord(ch):04X})" in shown["message"]
    bad = pages["browser"]["bad-temperature"]
    assert bad["error"] == "1" and bad["text"] == ""
    assert bad["message"] == "Temperature must be a number above 0."
    # A number box drops what it cannot read; the page says so instead of using 500.
    bad = pages["browser"]["bad-address"]
    assert bad["error"] == "1" and bad["text"] == ""
    assert bad["message"].endswith("The address gives len=abc.")


@needs_browser
def test_a_prime_from_the_address_keeps_its_carriage_returns(pages, capsys):
    checkpoint = pages["models"]["crlf"][2]
    expected = sample_command(checkpoint, capsys, "--greedy", "--prime", CRLF_PRIME,
                              "--len", "200")
    shown = pages["browser"]["crlf"]
    assert shown["done"] == "1" and shown["text"] == expected[len(CRLF_PRIME):]
    assert "\r" in shown["text"]


@needs_browser
def test_pages_load_nothing_from_outside(pages):
    assert all(shown["resources"] == 0 for shown in pages["browser"].values())


# ----------------------------------------------------------------------- the HTML itself

def test_the_page_is_one_file_that_names_no_outside_resource(pages):
    text = pages["models"]["odd"][3].read_text(encoding="utf-8")
    assert not re.search(r"\b(?:src|href|action)\s*=|url\(|@import|https?:", text, re.I)
    assert "default-src 'none'" in text                  # the browser refuses any fetch
    # The vocabulary's '</script>' and '<!--' stay inside their JSON: three script
    # elements, and the spec parses back to the vocabulary.
    assert text.count("<script") == 3 and text.lower().count("</script>") == 3
    spec = re.search(r'<script type="application/json" id="spec">(.*?)</script>', text, re.S)
    assert json.loads(spec[1])["vocab"] == list(pages["models"]["odd"][1].chars)


def test_size_is_the_float32_weights_in_base64_and_a_tied_matrix_is_stored_once():
    vocab = Vocab("".join(chr(c) for c in range(32, 97)))            # 65 characters
    sizes = {}
    for tied in (False, True):
        torch.manual_seed(0)
        config = ModelConfig(cell="lstm", num_layers=2, hidden_size=256, embedding_dim=256,
                             tie_weights=tied)
        model = CharRNN(len(vocab), config)
        weight_bytes = 4 * model.num_parameters()
        sizes[tied] = len(page(model, vocab, title="t", meta={}).encode("utf-8"))
        assert weight_bytes * 4 / 3 < sizes[tied] < 1.5 * weight_bytes
    # Untied adds one (V, E) float32 matrix: 4/3 of its bytes in base64.
    assert abs(sizes[False] - sizes[True] - 65 * 256 * 4 * 4 / 3) < 100


def test_the_description_shows_the_model_and_the_run():
    model, vocab = scaled_random("ab<c>", cell="lstm", proj_size=4)
    text = page(model, vocab, title="<my> model", meta={"val_loss": 1.5, "corpus": "x&y"})
    assert "<title>&lt;my&gt; model</title>" in text
    assert f"{model.num_parameters():,}" in text and "5 characters" in text
    assert "1.5000 nats/char" in text and f"{1.5 / np.log(2):.4f} bits/char" in text
    assert "x&amp;y" in text and "projection 4" in text


def test_refusals_are_one_line_errors(tmp_path, capsys):
    model, vocab = scaled_random("ab", bidirectional=True)
    with pytest.raises(ConfigError, match="bidirectional"):
        page(model, vocab, title="t", meta={})
    model, vocab = scaled_random("ab")
    checkpoint = save(model, vocab, tmp_path / "run" / "best.pt")
    code, out, err = run(["export", str(checkpoint), "-o", str(tmp_path / "no" / "p.html")],
                         capsys)
    assert code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(["export", str(checkpoint), "-o", str(tmp_path / "page.htm")], capsys)
    assert code == 0, err
    assert (tmp_path / "page.htm").read_text(encoding="utf-8").startswith("<!doctype html>")
