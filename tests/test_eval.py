"""`charrnn eval`: scoring any text gives back the training run's own val loss on its
held-out text, reports characters outside the vocabulary, and fails in one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from charrnn import scoring
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.data import load_text
from charrnn.files import read_metrics
from charrnn.scoring import evaluate

from helpers import child_env, run


@pytest.fixture(scope="module")
def held_out(small_text, tmp_path_factory):
    """The tiny run's validation text (the last 10% of its training text) as a file."""
    text = small_text.read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("eval") / "held_out.txt"
    path.write_text(text[int(len(text) * (1.0 - 0.1)):], encoding="utf-8")
    return path


def test_eval_of_the_held_out_text_matches_the_runs_val_loss(tiny_run, held_out, capsys):
    code, out, err = run(["eval", str(tiny_run / "best.pt"), str(held_out), "--json"], capsys)
    assert code == 0, err
    score = json.loads(out)
    best = min(row["val_loss"] for row in read_metrics(tiny_run))
    assert abs(score["nats_per_char"] - best) < 1e-4
    assert abs(score["nats_per_char"] - load_checkpoint(tiny_run / "best.pt")["best_val_loss"]) \
        < 1e-4
    assert score["bits_per_char"] == pytest.approx(score["nats_per_char"] / math.log(2))
    assert score["perplexity"] == pytest.approx(math.exp(score["nats_per_char"]))
    n = len(held_out.read_text(encoding="utf-8"))
    assert score["characters"] == n and score["scored"] == n - 1
    assert score["unknown_count"] == 0 and score["skipped_unknown"] is False


def test_last_checkpoint_matches_the_last_evaluation(tiny_run, held_out, capsys):
    code, out, _ = run(["eval", str(tiny_run / "last.pt"), str(held_out), "--json", "-q"],
                       capsys)
    assert code == 0
    assert abs(json.loads(out)["nats_per_char"] - read_metrics(tiny_run)[-1]["val_loss"]) < 1e-4


def test_text_output_is_one_line_on_stdout_and_a_run_folder_means_best(tiny_run, held_out,
                                                                       capsys):
    code, out, err = run(["eval", str(tiny_run), str(held_out)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1 and "nats/char" in lines[0] and "perplexity" in lines[0]
    best = min(row["val_loss"] for row in read_metrics(tiny_run))
    assert lines[0].startswith(f"{best:.4f} nats/char")
    assert f"{held_out.stat().st_size - 1:,} characters scored" in lines[0]
    assert "best.pt" in err                        # which checkpoint: narration on stderr


def test_quiet_leaves_stderr_empty(tiny_run, held_out, capsys):
    code, out, err = run(["eval", str(tiny_run), str(held_out), "--quiet"], capsys)
    assert code == 0 and out and err == ""


def test_the_library_score_is_trainings_evaluate(tiny_run, held_out):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    import torch

    expected = evaluate(model, vocab.encode(load_text(held_out)), torch.device("cpu"))
    score = scoring.score_text(tiny_run / "best.pt", held_out, progress=True)
    assert score.nats_per_char == pytest.approx(expected, abs=1e-9)


def test_unknown_characters_are_an_error_unless_skipped(tiny_run, held_out, tmp_path, capsys):
    clean = held_out.read_text(encoding="utf-8")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("é" + clean[:3000] + "ü€é" + clean[3000:], encoding="utf-8")
    code, out, err = run(["eval", str(tiny_run), str(mixed)], capsys)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 2        # "scoring ..." then the error
    assert "4 character(s) the model's vocabulary lacks (3 distinct" in err
    assert "--skip-unknown" in err

    code, out, err = run(["eval", str(tiny_run), str(mixed), "--skip-unknown", "--json"], capsys)
    assert code == 0, err
    skipped = json.loads(out)
    assert skipped["unknown_count"] == 4 and skipped["unknown_chars"] == "éü€"
    assert skipped["skipped_unknown"] is True and skipped["characters"] == len(clean) + 4
    assert "left out 4 character(s)" in err
    code, out, _ = run(["eval", str(tiny_run), str(held_out), "--json"], capsys)
    assert skipped["nats_per_char"] == pytest.approx(json.loads(out)["nats_per_char"], abs=1e-9)


def test_a_downloaded_corpus_name_is_accepted(tiny_run, held_out, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text(held_out.read_text(encoding="utf-8"),
                                                           encoding="utf-8")
    code, out, err = run(["eval", str(tiny_run), "tinyshakespeare", "--json", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["text"] == "data/tinyshakespeare.txt"


@pytest.mark.parametrize("content, expected", [
    ("x", "has 1 usable character(s); scoring needs at least 2"),
    ("", "is empty"),
])
def test_texts_too_short_to_score(tiny_run, tmp_path, capsys, content, expected):
    path = tmp_path / "short.txt"
    path.write_text(content, encoding="utf-8")
    code, out, err = run(["eval", str(tiny_run), str(path), "-q"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_missing_files_are_one_line_errors(tiny_run, held_out, tmp_path, capsys):
    code, _, err = run(["eval", str(tmp_path / "none.pt"), str(held_out), "-q"], capsys)
    assert code == 1 and "does not exist" in err
    code, _, err = run(["eval", str(tiny_run), str(tmp_path / "none.txt"), "-q"], capsys)
    assert code == 1 and "does not exist" in err


def test_ctrl_c_during_scoring_exits_130(tiny_run, held_out, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, "score_text", interrupted)
    code, out, _ = run(["eval", str(tiny_run), str(held_out), "-q"], capsys)
    assert code == 130 and out == ""


def test_several_files_score_as_the_text_they_join_into(tiny_run, held_out, tmp_path, capsys):
    """A folder of three files scores as one file holding them joined by a blank line."""
    text = held_out.read_text(encoding="utf-8")
    folder = tmp_path / "parts"
    folder.mkdir()
    parts = [text[:1000], text[1000:3000], text[3000:]]
    for name, part in zip(["a.txt", "b.txt", "c.txt"], parts):
        (folder / name).write_text(part, encoding="utf-8")
    joined = tmp_path / "joined.txt"
    joined.write_text("\n\n".join(parts), encoding="utf-8")
    scores = []
    for target in (folder, joined):
        code, out, err = run(["eval", str(tiny_run), str(target), "--json", "-q"], capsys)
        assert code == 0, err
        scores.append(json.loads(out))
    assert scores[0]["characters"] == scores[1]["characters"] == len(text) + 4
    assert scores[0]["nats_per_char"] == pytest.approx(scores[1]["nats_per_char"], abs=1e-9)


def test_a_negative_max_chars_is_a_one_line_error(tiny_run, held_out, capsys):
    code, out, err = run(["eval", str(tiny_run), str(held_out), "--max-chars", "-1"], capsys)
    assert code == 1 and out == ""
    assert err == "error: --max-chars must be at least 0, got -1\n"


def test_eval_reads_its_text_from_stdin(tiny_run, small_text, tmp_path, capsys,
                                        monkeypatch):
    """``eval RUN -``: the text piped in scores as the same text in a file, and leaves
    no cache behind (it is read once, into a temporary folder)."""
    import io

    code, from_file, err = run(["eval", str(tiny_run), str(small_text), "--json", "-q"],
                               capsys)
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(small_text.read_bytes())))
    code, piped, err = run(["eval", str(tiny_run), "-", "--json", "-q"], capsys)
    assert code == 0, err
    scored, expected = json.loads(piped), json.loads(from_file)
    assert scored.pop("text") == "-" and expected.pop("text") == str(small_text)
    del scored["seconds"], expected["seconds"]
    assert scored == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("piped, message", [
    (b"caf\xe9 au lait", "text to score (stdin) is not valid UTF-8"),
])
def test_a_bad_text_piped_in_is_named_as_stdin(tiny_run, tmp_path, piped, message):
    done = subprocess.run([sys.executable, "-m", "charrnn", "eval", str(tiny_run), "-"],
                          input=piped, capture_output=True, cwd=tmp_path, env=child_env())
    *notes, error = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and message in error and "stdin.txt" not in error
    assert notes == [f"scoring stdin with {tiny_run / 'best.pt'}"]


def test_stdin_must_be_the_only_text(tiny_run, small_text, capsys):
    code, _, err = run(["eval", str(tiny_run), "-", str(small_text)], capsys)
    assert code == 1 and "- (stdin) must be the only TEXT" in err
