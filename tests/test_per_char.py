"""`charrnn eval --per-char FILE` and `--html FILE`: every scored character's
log-probability, rank and top guesses, in text order, adding up to the reported total;
checked here against a plain torch pass over the text."""

from __future__ import annotations

import csv
import json
import math
import re
from html import escape, unescape
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn import html_page, per_char
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.scoring import STREAM_CHARS, stream_plan

from helpers import run

SHORT = 3_000            # one stream
LONG = 3 * STREAM_CHARS + 500   # several streams (3)


@pytest.fixture(scope="module")
def texts(small_text, tmp_path_factory):
    """A short and a long stretch of the tiny run's own training text (so every
    character is in its vocabulary)."""
    text = small_text.read_text(encoding="utf-8")
    folder = tmp_path_factory.mktemp("per_char")
    short, long = folder / "short.txt", folder / "long.txt"
    short.write_text(text[:SHORT], encoding="utf-8")
    long.write_text(text[5_000:5_000 + LONG], encoding="utf-8")
    assert len(stream_plan(LONG)) > 1 and len(stream_plan(SHORT)) == 1
    return short, long


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def score(tiny_run, text: Path, capsys, *flags: str) -> dict:
    code, out, err = run(["eval", str(tiny_run), str(text), "--json", "-q", *flags], capsys)
    assert code == 0, err
    return json.loads(out)


def vocab_size(tiny_run) -> int:
    return len(model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))[1])


def plain_log_probs(tiny_run, text: str) -> tuple[np.ndarray, np.ndarray, str]:
    """log p(character t | characters before it) for t = 1..n-1 from one forward pass over
    the whole text from a zero state, and the (n-1, V) log-probabilities; the vocabulary."""
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    model.eval()
    ids = torch.from_numpy(vocab.encode(text).astype(np.int64))
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])                                  # (1, n-1, V)
        logp = logits[0].float().log_softmax(dim=-1)                       # (n-1, V)
    picked = logp.gather(-1, ids[1:, None])[:, 0]
    return picked.double().numpy(), logp.double().numpy(), vocab.chars


# ----------------------------------------------------------------------------- values

def test_logprobs_ranks_and_top_match_a_plain_torch_pass(tiny_run, texts, tmp_path, capsys):
    short, _ = texts
    out = tmp_path / "short.jsonl"
    total = score(tiny_run, short, capsys, "--per-char", str(out))
    rows = read_jsonl(out)
    text = short.read_text(encoding="utf-8")
    expected, logp, chars = plain_log_probs(tiny_run, text)
    assert len(rows) == len(text) - 1 == total["scored"]
    assert [r["pos"] for r in rows] == list(range(1, len(text)))
    assert [r["char"] for r in rows] == list(text[1:])
    assert [r["id"] for r in rows] == [chars.index(c) for c in text[1:]]
    got = np.array([r["logprob"] for r in rows])
    assert np.abs(got - expected).max() < 1e-5
    assert (got <= 0).all()

    probs = np.exp(logp)
    near_ties = 0
    for t, row in enumerate(rows):
        p = probs[t]
        true = row["id"]
        order = sorted(range(len(chars)), key=lambda j: -p[j])       # by hand: likeliest first
        rank = 1 + sum(1 for j in order if p[j] > p[true])
        if row["rank"] != rank or [c for c, _ in row["top"]] != [chars[j] for j in order[:5]]:
            # Only where two probabilities are too close for two passes to agree on.
            assert np.sort(np.abs(np.diff(np.sort(p))))[0] < 1e-6, (t, row, rank)
            near_ties += 1
            continue
        assert [q for _, q in row["top"]] == pytest.approx([p[j] for j in order[:5]],
                                                           rel=1e-4, abs=1e-6)
    assert near_ties < len(rows) // 100
    assert sum(1 for r in rows if r["rank"] == 1) > 0


def test_several_streams_come_back_in_text_order_and_add_up_to_the_total(
        tiny_run, texts, tmp_path, capsys):
    _, long = texts
    out = tmp_path / "long.jsonl"
    total = score(tiny_run, long, capsys, "--per-char", str(out))
    plain = score(tiny_run, long, capsys)
    rows = read_jsonl(out)
    text = long.read_text(encoding="utf-8")
    assert "".join(r["char"] for r in rows) == text[1:]
    assert [r["pos"] for r in rows] == list(range(1, len(text)))
    assert total["scored"] == len(rows)
    assert abs(sum(r["logprob"] for r in rows)
               + total["nats_per_char"] * total["scored"]) < 1e-6
    # The per-character pass is the same number as the plain one, to float rounding.
    assert total["nats_per_char"] == pytest.approx(plain["nats_per_char"], rel=1e-6)
    size = vocab_size(tiny_run)
    assert all(1 <= r["rank"] <= size and len(r["top"]) == 5 for r in rows)


def test_csv_holds_the_same_rows_as_json_lines(tiny_run, texts, tmp_path, capsys):
    _, long = texts
    lines, table = tmp_path / "s.jsonl", tmp_path / "s.csv"
    score(tiny_run, long, capsys, "--per-char", str(lines))
    score(tiny_run, long, capsys, "--per-char", str(table))
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == per_char.COLUMNS
        rows = [{"pos": int(r["pos"]), "char": r["char"], "id": int(r["id"]),
                 "logprob": float(r["logprob"]), "rank": int(r["rank"]),
                 "top": json.loads(r["top"])} for r in reader]
    assert rows == read_jsonl(lines)
    assert any(r["char"] == "\n" for r in rows) and any(r["char"] == "," for r in rows)


def test_max_chars_writes_exactly_the_characters_scored(tiny_run, texts, tmp_path, capsys):
    _, long = texts
    out = tmp_path / "some.jsonl"
    total = score(tiny_run, long, capsys, "--per-char", str(out), "--max-chars", "9000")
    rows = read_jsonl(out)
    assert total["scored"] == len(rows) == 9000
    positions = [r["pos"] for r in rows]
    assert positions == sorted(set(positions)) and positions[0] == 1
    text = long.read_text(encoding="utf-8")
    assert all(text[r["pos"]] == r["char"] for r in rows)
    assert abs(sum(r["logprob"] for r in rows) + total["nats_per_char"] * 9000) < 1e-6
    one = tmp_path / "one.jsonl"
    assert score(tiny_run, long, capsys, "--per-char", str(one), "--max-chars", "1")[
        "scored"] == len(read_jsonl(one)) == 1


def test_skip_unknown_positions_refer_to_the_kept_text(tiny_run, texts, tmp_path, capsys):
    short, _ = texts
    clean = short.read_text(encoding="utf-8")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(clean[:100] + "é€" + clean[100:], encoding="utf-8")
    kept, whole = tmp_path / "kept.jsonl", tmp_path / "whole.jsonl"
    score(tiny_run, mixed, capsys, "--per-char", str(kept), "--skip-unknown")
    score(tiny_run, short, capsys, "--per-char", str(whole))
    assert read_jsonl(kept) == read_jsonl(whole)


def test_top_is_adjustable(tiny_run, texts, tmp_path, capsys):
    short, _ = texts
    none, every = tmp_path / "none.jsonl", tmp_path / "every.jsonl"
    score(tiny_run, short, capsys, "--per-char", str(none), "--top", "0")
    score(tiny_run, short, capsys, "--per-char", str(every), "--top", "1000")
    assert all(r["top"] == [] for r in read_jsonl(none))
    rows = read_jsonl(every)
    size = vocab_size(tiny_run)
    assert all(len(r["top"]) == size for r in rows)                 # the whole vocabulary
    assert all(sum(q for _, q in r["top"]) == pytest.approx(1.0, abs=1e-4) for r in rows)
    # The whole ranking: the true character stands at its rank (the first of a tie).
    for r in rows:
        at = r["top"][r["rank"] - 1]
        assert at[0] == r["char"] or at[1] == pytest.approx(math.exp(r["logprob"]), rel=1e-6)


def test_dash_writes_the_records_to_stdout_and_the_score_to_stderr(tiny_run, texts,
                                                                   capsys):
    short, _ = texts
    code, out, err = run(["eval", str(tiny_run), str(short), "--per-char", "-"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == SHORT - 1 and "".join(r["char"] for r in rows) == \
        short.read_text(encoding="utf-8")[1:]
    assert "nats/char" in err and f"({SHORT - 1:,} characters scored)" in err
    code, out, err = run(["eval", str(tiny_run), str(short), "--per-char", "-", "-q"], capsys)
    assert code == 0 and err == "" and len(out.splitlines()) == SHORT - 1


# ----------------------------------------------------------------------------- the page

def test_html_page_shows_every_character_with_its_guesses(tiny_run, texts, tmp_path,
                                                          capsys):
    short, _ = texts
    page, lines = tmp_path / "page.html", tmp_path / "rows.jsonl"
    code, out, err = run(["eval", str(tiny_run), str(short), "--html", str(page),
                          "--per-char", str(lines)], capsys)
    assert code == 0, err
    assert f"wrote {page}" in err and "shows the first" not in err
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html and "http" not in html and "src=" not in html
    assert "<link" not in html
    nats = float(out.split()[0])
    assert f"{nats:.4f} nats/char" in html and str(tiny_run / "best.pt") in html
    assert str(short) in html
    rows = read_jsonl(lines)
    for r in rows:
        tip = html_page.prediction_tip(r["char"], math.exp(r["logprob"]), r["top"],
                                       note=f", {-r['logprob']:.3f} nats, rank {r['rank']}")
        assert f'title="{escape(tip)}"' in html
    tips = [unescape(t) for t in re.findall(r'<span style="[^"]*" title="(p\([^"]*)"', html)]
    assert len(tips) == len(rows)
    assert "first character: context only" in html


def test_a_long_text_is_cut_on_the_page_and_said_so(tiny_run, texts, tmp_path, capsys,
                                                    monkeypatch):
    _, long = texts
    monkeypatch.setattr(per_char, "HTML_MAX_CHARS", 500)
    page = tmp_path / "cut.html"
    code, _, err = run(["eval", str(tiny_run), str(long), "--html", str(page)], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "shows the first 500 of" in line]
    assert len(notes) == 1
    html = page.read_text(encoding="utf-8")
    assert "this page shows the first 500 of the" in html
    assert len(re.findall(r'title="p\(', html)) == 500


def test_max_chars_gaps_are_marked_on_the_page(tiny_run, texts, tmp_path, capsys):
    _, long = texts
    page = tmp_path / "gaps.html"
    code, _, err = run(["eval", str(tiny_run), str(long), "--html", str(page),
                        "--max-chars", "9000", "-q"], capsys)
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    assert len(re.findall(r'title="p\(', html)) == 9000
    assert html.count('class="gap"') == len(stream_plan(LONG, 9000)) - 1


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("flags, expected", [
    (["--per-char", "{d}/same.html", "--html", "{d}/same.html"], "name the same file"),
    (["--per-char", "-", "--json"], "drop --json"),
    (["--per-char", "{d}/no/dir/x.jsonl"], "does not exist"),
    (["--html", "{d}"], "is a directory"),
    (["--html", "-"], "--html writes a file"),
    (["--per-char", "{text}"], "would replace the file being read"),
    (["--per-char", "{run}/best.pt"], "would replace a run's checkpoint"),
    (["--html", "{run}/metrics.csv"], "would replace a run's metrics.csv"),
    (["--top", "3"], "--top needs --per-char FILE or --html FILE"),
    (["--html", "{d}/p.html", "--top", "-1"], "--top must be at least 0"),
])
def test_bad_outputs_are_one_line_errors(tiny_run, texts, tmp_path, capsys, flags, expected):
    short, _ = texts
    flags = [f.format(d=tmp_path, text=short, run=tiny_run) for f in flags]
    code, out, err = run(["eval", str(tiny_run), str(short), "-q", *flags], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_interrupted_eval_leaves_the_old_files_whole(tiny_run, texts, tmp_path, capsys,
                                                        monkeypatch):
    _, long = texts
    lines, page = tmp_path / "rows.jsonl", tmp_path / "page.html"
    lines.write_text("old records\n")
    page.write_text("old page\n")
    calls = []

    def interrupted(self, pos, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(per_char._Page, "write", interrupted)
    code, out, _ = run(["eval", str(tiny_run), str(long), "-q", "--per-char", str(lines),
                        "--html", str(page)], capsys)
    assert code == 130 and out == ""
    assert lines.read_text() == "old records\n" and page.read_text() == "old page\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html", "rows.jsonl"]


def test_an_unwritable_folder_is_a_one_line_error(tiny_run, texts, tmp_path, capsys,
                                                  monkeypatch):
    short, _ = texts

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(per_char.tempfile, "TemporaryDirectory", refused)
    code, out, err = run(["eval", str(tiny_run), str(short), "-q", "--per-char",
                          str(tmp_path / "x.jsonl")], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: cannot write --per-char") and "Permission denied" in err
    assert len(err.strip().splitlines()) == 1
