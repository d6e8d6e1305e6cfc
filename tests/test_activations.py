"""charrnn.activations runs a trained model over a text and ranks its neurons; views and
html_page draw the result; ``charrnn inspect --activations`` ties them together."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from rich.console import Console

from charrnn import activations, drawing, html_page, views
from charrnn.activations import activation_report, correlations, read_text, record, signal
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.cli import main
from charrnn.config import ModelConfig
from charrnn.data import Vocab
from charrnn.errors import CharRNNError, ConfigError, DataError
from charrnn.model import CharRNN

# Only characters of tiny-shakespeare, which has no quotes or brackets.
TEXT = "ROMEO:\nGood morrow, sir.\n  How now? aside.\n\nJULIET:\nO, Romeo, Romeo!\n"


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The tiny trained LSTM (2x32) and its vocabulary."""
    return model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))


def untrained(cell: str = "gru", **extra) -> tuple[CharRNN, Vocab]:
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    config = ModelConfig(cell=cell, embedding_dim=6, hidden_size=5, num_layers=2, **extra)
    return CharRNN(len(vocab), config).eval(), vocab


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


# ----------------------------------------------------------------------------- the text

def test_read_text_takes_text_or_a_file(tmp_path):
    assert read_text("to be, or not") == ("to be, or not", None)
    assert read_text("ROMEO:") == ("ROMEO:", None)
    path = tmp_path / "speech.txt"
    path.write_text("\ufeffO Romeo\n", encoding="utf-8")
    assert read_text(str(path)) == ("O Romeo\n", str(path))
    assert read_text("x" * 5000) == ("x" * 5000, None)       # too long for a file name


@pytest.mark.parametrize("value, message", [
    ("missing.txt", "activation text file missing.txt does not exist; give an existing file"),
    ("no/such/file", "activation text file no/such/file does not exist"),
    ("", "the activation text is empty"),
])
def test_read_text_errors(value, message):
    with pytest.raises(DataError, match=re.escape(message)):
        read_text(value)


def test_read_text_refuses_a_folder(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="is a folder; give one text file"):
        read_text(str(tmp_path))
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="^data is a folder"):    # not the text "data"
        read_text("data")


# ----------------------------------------------------------------------------- signals

def test_signals_by_hand():
    text = 'ab\n  c"d(e"\n'
    #       a  b  \n ␣  ␣  c  "  d  (  e  "  \n
    assert signal("line-position", text).tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert signal("indent", text).tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    assert signal("quote", text).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    assert signal("brackets", text).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert signal("brackets", "([x])").tolist() == [1, 2, 2, 1, 0]
    assert signal("quote", "a “b” c").tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert signal("indent", "\n\t x\n").tolist() == [0, 1, 2, 2, 2]


def test_correlations_are_pearsons():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(50, 4))
    acts[:, 2] = 0.3                                          # a neuron that never moves
    values = rng.normal(size=50)
    r = correlations(acts, values)
    for j in (0, 1, 3):
        assert r[j] == pytest.approx(np.corrcoef(acts[:, j], values)[0, 1])
    assert r[2] == 0.0
    assert correlations(values[:, None] * 2 + 1, values)[0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- record

def test_record_matches_the_whole_module(trained):
    """Stepper, one character at a time, gives what nn.LSTM gives over the whole text."""
    model, vocab = trained
    text = "First Citizen:\nBefore we proceed"
    ids = vocab.encode(text)
    rec = record(model, ids)
    batch = torch.as_tensor(ids.astype(np.int64))[None]       # (1, T)
    with torch.no_grad():
        logits, (h_n, c_n) = model(batch)
        out, _ = model.rnn(model.embedding(batch))
    T, H = len(text), model.config.hidden_size
    assert [a.shape for a in rec.h] == [(T, H), (T, H)]
    assert np.allclose(rec.h[1], out[0].numpy(), atol=1e-5)  # top layer = output
    assert np.allclose(rec.h[0][-1], h_n[0, 0].numpy(), atol=1e-5)
    assert np.allclose(rec.c[1][-1], torch.tanh(c_n[1, 0]).numpy(), atol=1e-5)
    assert np.allclose(rec.probs, logits[0].softmax(-1).numpy(), atol=1e-5)
    assert not model.training


@pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")
@pytest.mark.parametrize("cell, extra", [("gru", {}), ("rnn", {"nonlinearity": "relu"}),
                                         ("lstm", {"proj_size": 3})])
def test_record_other_cells(cell, extra):
    model, vocab = untrained(cell, **extra)
    rec = record(model, vocab.encode(TEXT))
    h_out = extra.get("proj_size") or 5
    assert [a.shape for a in rec.h] == [(len(TEXT), h_out)] * 2
    assert (rec.c is not None) == (cell == "lstm")
    with torch.no_grad():
        out, _ = model.rnn(model.embedding(torch.as_tensor(vocab.encode(TEXT)[None]
                                                           .astype(np.int64))))
    assert np.allclose(rec.h[1], out[0].numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- report

def test_report_ranks_by_correlation(trained):
    model, vocab = trained
    text = TEXT * 3
    report = activation_report(model, vocab, text, top=4, signal_name="line-position")
    assert report["layer"] == 1 and report["state"] == "h" and report["width"] == 32
    assert report["ranked_by"] == "correlation" and len(report["neurons"]) == 4
    acts = record(model, vocab.encode(text)).h[1]
    values = signal("line-position", text)
    r_all = [np.corrcoef(acts[:, j], values)[0, 1] for j in range(32)]
    best = sorted(range(32), key=lambda j: -abs(r_all[j]))[:4]
    assert [n["index"] for n in report["neurons"]] == best
    for n in report["neurons"]:
        assert n["r"] == pytest.approx(r_all[n["index"]], abs=1e-6)
        assert n["values"] == pytest.approx(acts[:, n["index"]].tolist(), abs=1e-6)
        assert n["min"] == pytest.approx(min(n["values"]))
    assert report["signal"]["values"] == values.tolist()
    json.dumps(report)


def test_report_defaults_chosen_neurons_and_cell_state(trained):
    model, vocab = trained
    report = activation_report(model, vocab, TEXT)
    assert report["ranked_by"] == "std" and report["signal"] is None
    stds = [n["std"] for n in report["neurons"]]
    assert len(stds) == activations.DEFAULT_TOP and stds == sorted(stds, reverse=True)
    chosen = activation_report(model, vocab, TEXT, layer=0, neurons=[3, 0], state="c",
                               signal_name="indent")
    assert [n["index"] for n in chosen["neurons"]] == [3, 0]
    assert chosen["ranked_by"] == "index" and chosen["neurons"][0]["r"] is not None
    cells = record(model, vocab.encode(TEXT)).c[0]
    assert chosen["neurons"][0]["values"] == pytest.approx(cells[:, 3].tolist(), abs=1e-6)
    assert all(-1 <= v <= 1 for v in chosen["neurons"][0]["values"])    # tanh(c)
    assert len(activation_report(model, vocab, TEXT, top=999)["neurons"]) == 32


def test_predictions_and_bits_per_char(trained):
    model, vocab = trained
    report = activation_report(model, vocab, TEXT)
    probs = record(model, vocab.encode(TEXT)).probs
    rows = report["predictions"]
    assert len(rows) == len(TEXT)
    for t, row in enumerate(rows):
        assert row["char"] == TEXT[t]
        top = [p for _, p in row["top"]]
        assert len(top) == activations.TOP_PREDICTIONS and top == sorted(top, reverse=True)
        assert top[0] == pytest.approx(probs[t].max())
        if t + 1 < len(TEXT):
            assert row["next"] == TEXT[t + 1]
            assert row["p_next"] == pytest.approx(probs[t, vocab.chars.index(TEXT[t + 1])])
    assert rows[-1]["next"] is None and rows[-1]["p_next"] is None
    expected = np.mean([-np.log2(r["p_next"]) for r in rows[:-1]])
    assert report["bits_per_char"] == pytest.approx(expected, rel=1e-5)


def test_long_texts_are_cut(trained, monkeypatch):
    model, vocab = trained
    monkeypatch.setattr(activations, "MAX_CHARS", 10)
    report = activation_report(model, vocab, TEXT)
    assert report["text"] == TEXT[:10] and report["truncated_from"] == len(TEXT)
    assert len(report["neurons"][0]["values"]) == 10


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(layer=2), ConfigError, "--layer 2 is out of range: the model has 2 layer(s); "
                                 "give 0 to 1"),
    (dict(layer=-1), ConfigError, "--layer -1 is out of range"),
    (dict(neurons=[5, 32]), ConfigError, "--neuron 32 is out of range: layer 1's h has 32 "
                                         "neurons; give 0 to 31"),
    (dict(neurons=[1], top=3), ConfigError, "--neuron and --top exclude each other"),
    (dict(top=0), ConfigError, "--top must be at least 1"),
    (dict(signal_name="quotes"), ConfigError, "did you mean 'quote'?"),
    (dict(state="x"), ConfigError, "--state must be h or c"),
    (dict(signal_name="brackets", text="no brackets here"), ConfigError,
     "the signal brackets (nesting depth of ( [ {) never changes over this text"),
    (dict(text="Romeo ü€"), DataError, "the activation text has 2 character(s) not in the "
                                       "model's vocabulary: ü €; remove or replace them"),
])
def test_report_errors(trained, kwargs, error, message):
    model, vocab = trained
    text = kwargs.pop("text", TEXT)
    with pytest.raises(error, match=re.escape(message)):
        activation_report(model, vocab, text, **kwargs)


def test_cell_state_needs_an_lstm():
    model, vocab = untrained("gru")
    with pytest.raises(ConfigError, match="--state c needs an LSTM .* use --state h"):
        activation_report(model, vocab, TEXT, state="c")


# ----------------------------------------------------------------------------- drawing

def test_colour_scale():
    assert drawing.activation_rgb(0.0) == drawing.NEUTRAL
    assert drawing.activation_rgb(1.0) == drawing.POSITIVE
    assert drawing.activation_rgb(-3.0) == drawing.NEGATIVE              # clipped
    assert drawing.activation_rgb(2.0, scale=4.0) == drawing.activation_rgb(0.5)
    half = drawing.activation_rgb(-0.5)
    assert all(min(n, t) <= c <= max(n, t)
               for c, n, t in zip(half, drawing.NEUTRAL, drawing.NEGATIVE))
    assert drawing.probability_rgb(1.0) == drawing.LIKELY
    assert drawing.probability_rgb(0.0) == drawing.UNLIKELY
    assert drawing.ink(drawing.NEUTRAL) == "#000000" and drawing.ink((0, 0, 90)) == "#ffffff"


def test_terminal_view_colours_each_character(trained):
    model, vocab = trained
    report = activation_report(model, vocab, TEXT, neurons=[7], signal_name="line-position")
    buffer = io.StringIO()
    views.render_activations(report, Console(file=buffer, width=100, color_system="truecolor",
                                             force_terminal=True), predictions=True)
    out = buffer.getvalue()
    neuron = report["neurons"][0]
    scale = drawing.neuron_scale(neuron)
    for t in (0, 10, 30):                      # the character drawn on its neuron's colour
        r, g, b = drawing.activation_rgb(neuron["values"][t], scale)
        assert f"48;2;{r};{g};{b}m{TEXT[t]}" in out
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "neuron 7 of layer 1 h · r " in plain and "with line-position" in plain
    assert "ROMEO:↵" in plain
    assert "predictions: the 5 likeliest next characters after each one" in plain
    assert re.search(r"\n *0 +R +O +0\.\d{3}", plain)            # t=0: R, then O


def test_html_page(trained, tmp_path):
    model, vocab = trained
    text = TEXT + "<b>&</b>"
    vocab_text = Vocab.from_text(text)
    report = activation_report(CharRNN(len(vocab_text), model.config).eval(), vocab_text,
                               text, top=2, signal_name="line-position")
    path = html_page.write_page(report, tmp_path / "neurons.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http" not in page          # self-contained
    assert "&lt;b&gt;&amp;&lt;/b&gt;" not in page                 # drawn one span per char
    spans = re.findall(r'<span style="background:#([0-9a-f]{6});color:#[0-9a-f]{6}"'
                       r'(?: title="([^"]*)")?>([^<]*)</span>', page)
    per_block = len(text)
    assert len(spans) == 5 + 3 * per_block           # legend, 2 neurons, predictions
    first = report["neurons"][0]
    scale = drawing.neuron_scale(first)
    block = spans[5:5 + per_block]
    for t in (0, 6, len(text) - 1):
        assert block[t][0] == "{:02x}{:02x}{:02x}".format(
            *drawing.activation_rgb(first["values"][t], scale))
        assert block[t][1] == f"{first['values'][t]:+.3f}"
    assert [s[2] for s in block[-8:]] == ["&lt;", "b", "&gt;", "&amp;", "&lt;", "/", "b",
                                          "&gt;"]
    predicted = spans[5 + 2 * per_block:]
    assert predicted[1][1].startswith(f"p(O) = {report['predictions'][0]['p_next']:.3f}")


def test_html_path_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; give a file name"):
        html_page.check_path(tmp_path)
    with pytest.raises(ConfigError, match="does not exist; create it"):
        html_page.check_path(tmp_path / "no" / "page.html")
    assert issubclass(ConfigError, CharRNNError)


# ----------------------------------------------------------------------------- the command

def test_cli_activations_in_the_terminal_json_and_html(tiny_run, tmp_path, capsys):
    text_file = tmp_path / "speech.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    code, out, err = run_cli(["inspect", str(tiny_run), "--activations", str(text_file),
                              "--signal", "line-position", "--top", "2", "--layer", "0",
                              "--predictions"], capsys)
    assert code == 0, err
    assert "neurons ranked by |r|, the correlation with line-position" in out
    assert "layer 0 h_t, the layer's output" in out and "speech.txt" in out
    assert "predictions" in out and f"read the neurons of {tiny_run / 'best.pt'}" in err

    code, out, err = run_cli(["inspect", str(tiny_run / "best.pt"), "--activations",
                              "O Romeo, Romeo!", "--neuron", "4", "--neuron", "9",
                              "--state", "c", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["text"] == "O Romeo, Romeo!" and report["source"] is None
    assert [n["index"] for n in report["neurons"]] == [4, 9] and report["state"] == "c"
    assert report["checkpoint"].endswith("best.pt") and err == ""

    page = tmp_path / "page.html"
    code, out, err = run_cli(["inspect", str(tiny_run), "--activations", TEXT,
                              "--html", str(page)], capsys)
    assert code == 0, err
    assert out == "" and f"wrote {page}" in err
    assert page.read_text(encoding="utf-8").count("<h2>neuron ") == activations.DEFAULT_TOP


@pytest.mark.parametrize("argv, expected", [
    (["{run}", "--activations", "{text}", "--neuron", "99"], "--neuron 99 is out of range"),
    (["{run}", "--activations", "{text}", "--layer", "7"], "--layer 7 is out of range"),
    (["{run}", "--activations", "{d}/missing.txt"], "missing.txt does not exist"),
    (["{run}", "--activations", "Romeo ü€"], "2 character(s) not in the model's vocabulary: "
                                             "ü €; remove or replace them"),
    (["{run}", "--activations", "{text}", "--html", "{d}/no/dir/page.html"],
     "does not exist; create it"),
    (["{run}", "--activations", "{text}", "--html", "{d}"], "is a directory"),
    (["{run}", "--activations", "{text}", "--html", "-"], "--html writes a file, not stdout"),
    (["{run}", "--activations", "{text}", "--signal", "indent"], "never changes over this"),
    (["{run}", "--activations", "{text}", "--verify"], "--verify does not go with"),
    (["{run}", "--activations", "{text}", "--hidden-size", "8"], "the checkpoint fixes"),
    (["{run}", "--neuron", "3"], "--neuron needs --activations TEXT_OR_FILE"),
    (["--html", "{d}/page.html"], "--html needs --activations"),
    (["--corpus", "{text}"], "--corpus counts a checkpoint's vocabulary"),
    (["{run}", "--corpus", "{d}/missing.txt"], "corpus file"),
])
def test_cli_errors_are_one_line(argv, expected, tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)       # no runs/ here: without a checkpoint, inspect has none
    text_file = tmp_path / "plain.txt"
    text_file.write_text("no quotes in here", encoding="utf-8")
    args = ["inspect"] + [a.format(run=tiny_run, text=text_file, d=tmp_path) for a in argv]
    code, out, err = run_cli(args, capsys)
    assert code == 1, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert expected in " ".join(err.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]    # nothing written


def test_cli_vocabulary_counts(tiny_run, small_text, capsys):
    code, out, err = run_cli(["inspect", str(tiny_run), "--corpus", str(small_text),
                              "--json"], capsys)
    assert code == 0, err
    vocab = json.loads(out)["checkpoint"]["vocab"]
    text = small_text.read_text(encoding="utf-8")
    assert sum(vocab["counts"]) == len(text)
    assert vocab["counts"][vocab["chars"].index("e")] == text.count("e")
