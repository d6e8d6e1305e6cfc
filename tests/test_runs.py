"""`charrnn runs`: a table of run folders read without loading weights (or torch),
newest first or best first, and a checkpoint peek that never runs code."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from charrnn.checkpoint import peek_checkpoint
from charrnn.files import read_metrics
from charrnn.runs import find_runs, list_runs, summarize

from helpers import charrnn, run


@pytest.fixture
def runs_dir(tiny_run, tmp_path):
    """runs/ with the tiny run twice (the copy 'later' made to look newer and worse), an
    interrupted run that only wrote config.toml, and a folder that is not a run."""
    root = tmp_path / "runs"
    old, new = root / "older", root / "later"
    shutil.copytree(tiny_run, old)
    shutil.copytree(tiny_run, new)
    text = (new / "metrics.csv").read_text(encoding="utf-8").splitlines()
    header, rows = text[0], text[1:]
    worse = [",".join(f"{float(v) + 0.5:.6f}" if i == 5 else v
                      for i, v in enumerate(r.split(","))) for r in rows]
    (new / "metrics.csv").write_text("\n".join([header, *worse]) + "\n", encoding="utf-8")
    stub = root / "stub"
    stub.mkdir()
    shutil.copy(tiny_run / "config.toml", stub / "config.toml")
    (root / "notes").mkdir()
    for i, folder in enumerate((stub, old, new)):      # stub oldest, later newest
        for f in folder.iterdir():
            os.utime(f, (1_700_000_000 + i * 1000, 1_700_000_000 + i * 1000))
    return root


def test_summary_reads_config_metrics_and_checkpoint(tiny_run):
    from charrnn.checkpoint import load_checkpoint, model_from_checkpoint

    s = summarize(tiny_run)
    ckpt = load_checkpoint(tiny_run / "last.pt")
    model, _ = model_from_checkpoint(ckpt)
    assert s.cell == "lstm" and s.num_layers == 2 and s.hidden_size == 32
    assert s.model == "2x32 lstm"
    assert s.parameters == model.num_parameters()
    assert s.corpus == ckpt["corpus"]["path"] and s.corpus_chars == 60_000
    assert s.steps == 20 and s.evaluations == 2
    assert s.best_val_loss == pytest.approx(ckpt["best_val_loss"])
    assert s.elapsed_s == pytest.approx(ckpt["elapsed"], abs=0.5)
    assert set(s.checkpoints) == {"best.pt", "last.pt"}


def test_peek_gives_the_metadata_with_tensor_shapes_only(tiny_run):
    import torch

    data = peek_checkpoint(tiny_run / "best.pt")
    real = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)
    assert data["vocab"] == real["vocab"] and data["step"] == real["step"]
    assert data["model_config"] == real["model_config"]
    assert data["metrics"] == real["metrics"]
    shapes = {k: v.shape for k, v in data["model_state"].items()}
    assert shapes == {k: tuple(v.shape) for k, v in real["model_state"].items()}


def test_peek_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"step": Payload()}, protocol=2))
    assert peek_checkpoint(evil) is None and not marker.exists()
    (tmp_path / "text.pt").write_text("not a zip", encoding="utf-8")
    assert peek_checkpoint(tmp_path / "text.pt") is None


def test_runs_json_lists_runs_newest_first(runs_dir, capsys):
    code, out, err = run(["runs", str(runs_dir), "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == ["later", "older", "stub"]
    later, older, stub = rows
    assert later["best_val_loss"] == pytest.approx(older["best_val_loss"] + 0.5, abs=1e-5)
    assert older["model"] == "2x32 lstm" and older["steps"] == 20
    assert Path(older["corpus"]).name == "small.txt"
    assert stub["best_val_loss"] is None and stub["steps"] is None and stub["model"] == "2x32 lstm"


def test_runs_sorted_by_loss_puts_the_best_first(runs_dir, capsys):
    code, out, _ = run(["runs", str(runs_dir), "--json", "--sort", "loss"], capsys)
    assert code == 0
    assert [Path(r["path"]).name for r in json.loads(out)] == ["older", "later", "stub"]
    code, _, err = run(["runs", str(runs_dir), "--sort", "size"], capsys)
    assert code == 1 and "unknown sort 'size'" in err


def test_runs_table_on_stdout_marks_the_best(runs_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run(["runs", str(runs_dir)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["updated", "corpus", "model", "params", "steps", "best", "val",
                                "elapsed", "run"]
    body = lines[1:4]
    assert [Path(line.split()[-1]).name for line in body] == ["later", "older", "stub"]
    assert "*" in body[1] and "*" not in body[0]           # older has the lowest loss
    assert "small.txt" in body[1] and "2x32 lstm" in body[1]
    assert "lowest best val loss" in out
    # elapsed in whole seconds under a minute, as the summaries say
    for line, summary in zip(body, list_runs(runs_dir, "time")):
        if summary.elapsed_s is not None and summary.elapsed_s < 59.5:
            assert line.split()[-2] == f"{round(summary.elapsed_s)}s", line


def test_one_run_folder_lists_itself(tiny_run, capsys):
    assert find_runs(tiny_run) == [tiny_run]
    code, out, _ = run(["runs", str(tiny_run), "--json"], capsys)
    assert code == 0 and len(json.loads(out)) == 1


def test_empty_and_missing_folders(tmp_path, capsys):
    code, out, err = run(["runs", str(tmp_path)], capsys)
    assert code == 0 and out == "" and "no runs under" in err
    code, out, _ = run(["runs", str(tmp_path), "--json"], capsys)
    assert code == 0 and json.loads(out) == []
    code, out, err = run(["runs", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and out == "" and "does not exist" in err and "charrnn train" in err


def test_damaged_metrics_are_named(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,val_loss\n10,abc\n", encoding="utf-8")
    with pytest.raises(Exception, match="line 2 holds a value that is not a number"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(Exception, match="needs the columns step and val_loss"):
        read_metrics(tmp_path)


def test_piped_runs_table_keeps_every_column_whole(runs_dir, capsys, monkeypatch):
    """`charrnn runs | cat` on an 80-column terminal: not a terminal itself, so nothing
    is cut to fit."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(["runs", str(runs_dir)], capsys)
    assert code == 0
    body = out.splitlines()[1:4]
    for line, name in zip(body, ["later", "older", "stub"]):
        assert line.rstrip().endswith(str(runs_dir / name))
        assert line.split()[0].count("-") == 2 and ":" in line.split()[1]   # date and time


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_narrow_terminal_drops_columns_but_never_the_run(runs_dir, width):
    from io import StringIO

    from rich.console import Console

    from charrnn.runs import list_runs
    from charrnn.views import runs_table

    screen = StringIO()
    Console(file=screen, width=width, highlight=False).print(
        runs_table(list_runs(runs_dir, "time"), width=width))
    lines = screen.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    assert lines[0].split()[-1] == "run" and "best val" in lines[0] and "steps" in lines[0]
    folded = "".join(line[lines[0].index("run"):].strip() for line in lines[1:]
                     if not line.startswith("*"))
    for name in ("later", "older", "stub"):
        assert str(runs_dir / name) in folded
    assert "…" not in folded


def test_the_best_run_is_marked_among_the_runs_on_the_same_text():
    """Losses on different texts do not compare: each text's lowest is marked."""
    import io

    from rich.console import Console

    from charrnn.runs import RunSummary
    from charrnn.views import runs_table

    runs = [RunSummary(path=name, updated=0, corpus=corpus, corpus_chars=chars,
                       best_val_loss=loss)
            for name, corpus, chars, loss in (("r1", "/t/a.txt", 10, 1.2),
                                              ("r2", "/t/a.txt", 10, 1.5),
                                              ("r3", "/t/code.py", 99, 1.9),
                                              ("r4", "/t/a.txt", 11, 1.7))]
    out = io.StringIO()
    Console(file=out, width=200).print(runs_table(runs))
    marked = {line.split()[-1]: "*" in line for line in out.getvalue().splitlines()
              if line.split() and line.split()[-1] in ("r1", "r2", "r3", "r4")}
    assert marked == {"r1": True, "r2": False, "r3": True, "r4": True}


def test_piped_tables_are_whole_and_have_no_trailing_spaces(tiny_run, tmp_path):
    """Into a pipe or a file, ``runs`` and ``inspect`` write every column whole (no cut
    at 80 or COLUMNS characters) and no line padded with spaces."""
    long = tmp_path / "runs" / ("a-run-folder-whose-name-goes-on-" * 4 + "end")
    shutil.copytree(tiny_run, long)
    for argv in (["runs"], ["inspect"]):
        done = charrnn(*argv, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines and all(line == line.rstrip() for line in lines), argv
        assert "…" not in done.stdout, argv
        assert argv == ["inspect"] or str(long.relative_to(tmp_path)) in done.stdout
