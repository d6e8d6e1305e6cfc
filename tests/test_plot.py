"""`charrnn plot`: loss curves of several runs in one image of the size asked for, and a
one-line answer for everything that can go wrong (matplotlib missing included)."""

from __future__ import annotations

import os
import shutil
import struct
import sys

import pytest

from charrnn.plot import plot_runs

from helpers import run


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def two_runs(tiny_run, tmp_path):
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    shutil.copytree(tiny_run, a)
    shutil.copytree(tiny_run, b)
    return a, b


def test_two_runs_overlaid_in_a_png_of_the_default_size(two_runs, tmp_path, capsys):
    out = tmp_path / "loss.png"
    code, stdout, err = run(["plot", *map(str, two_runs), "-o", str(out)], capsys)
    assert code == 0, err
    assert png_size(out) == (1200, 500)
    assert stdout == "" and f"wrote {out}" in err and "2 run(s)" in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file


def test_size_and_format_follow_the_options(two_runs, tmp_path, capsys):
    out = tmp_path / "small.png"
    code, _, err = run(["plot", str(two_runs[0]), "-o", str(out), "--width", "640",
                        "--height", "360", "--title", "tiny"], capsys)
    assert code == 0, err
    assert png_size(out) == (640, 360)
    svg = tmp_path / "loss.svg"
    code, _, _ = run(["plot", str(two_runs[0] / "metrics.csv"), "-o", str(svg)], capsys)
    assert code == 0 and svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_without_a_run_the_newest_under_runs_is_drawn(two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["plot"], capsys)
    assert code == 0, err
    assert png_size(tmp_path / "loss.png") == (1200, 500) and "1 run(s)" in err


def test_the_curves_hold_the_metrics(two_runs, tmp_path, monkeypatch):
    import matplotlib.figure

    from charrnn.files import read_metrics

    rows = read_metrics(two_runs[0])
    drawn = {}
    original = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        drawn["axes"] = self.axes
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    plot_runs([("a", rows)], tmp_path / "x.png")
    by_step, by_time = drawn["axes"]
    val, train = by_step.get_lines()
    assert list(val.get_xdata()) == [r["step"] for r in rows]
    assert list(val.get_ydata()) == [r["val_loss"] for r in rows]
    assert list(train.get_ydata()) == [r["train_loss"] for r in rows]
    assert list(by_time.get_lines()[0].get_xdata()) == [r["elapsed_s"] for r in rows]


def test_a_folder_of_runs_draws_each_run_with_evaluations(two_runs, tmp_path, capsys):
    folder = two_runs[0].parent
    fresh = folder / "c"                    # a run stopped before its first evaluation
    shutil.copytree(two_runs[0], fresh)
    (fresh / "metrics.csv").write_text("step,elapsed_s,train_loss,val_loss\n",
                                       encoding="utf-8")
    out = tmp_path / "all.png"
    code, _, err = run(["plot", str(folder), "-o", str(out)], capsys)
    assert code == 0, err
    assert png_size(out) == (1200, 500) and "2 run(s)" in err
    for name in ("a", "b"):
        shutil.rmtree(folder / name)
    code, out, err = run(["plot", str(folder), "-o", str(tmp_path / "none.png")], capsys)
    assert code == 1 and out == ""
    assert err.strip() == (f"error: no run in {folder} has evaluations to plot yet; let one "
                           "train to its first evaluation (--eval-every)")


def test_missing_matplotlib_says_how_to_install_it(two_runs, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    code, out, err = run(["plot", str(two_runs[0]), "-o", str(tmp_path / "x.png")], capsys)
    assert code == 1 and out == ""
    assert err.strip() == "error: plotting needs matplotlib, which is not installed: " \
                          "pip install 'charrnn-cli[plot]'"
    assert not (tmp_path / "x.png").exists()


def test_bad_plots_are_one_line_errors(two_runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text("step,elapsed_s,train_loss,val_loss\n", encoding="utf-8")
    cases = [
        (["plot", str(two_runs[0]), "-o", str(tmp_path / "x.jpeg")],
         "cannot tell the image format"),
        (["plot", str(tmp_path / "nowhere")], "does not exist"),
        (["plot", str(empty), "-o", str(tmp_path / "y.png")], "has no evaluations yet"),
        (["plot", str(two_runs[0]), "-o", str(tmp_path / "no" / "dir.png")], "does not exist"),
        (["plot", str(two_runs[0]), "--width", "10", "-o", str(tmp_path / "z.png")],
         "at least 100x100 pixels"),
    ]
    for argv, expected in cases:
        code, out, err = run(argv, capsys)
        assert code == 1 and out == "", argv
        assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_no_runs_at_all(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["plot"], capsys)
    assert code == 1 and "no run under runs/ has evaluations to plot yet" in err


def test_with_no_run_named_the_newest_run_with_evaluations_is_drawn(two_runs, tmp_path,
                                                                     capsys):
    """A newer folder whose run never evaluated (it diverged, or was stopped at once) is
    passed over, as sample, inspect and export pass over it."""
    os.utime(two_runs[1] / "metrics.csv", (1e9, 1e9))          # b older than a
    for name in ("best.pt", "last.pt"):
        os.utime(two_runs[1] / name, (1e9, 1e9))
    diverged = tmp_path / "runs" / "c"
    diverged.mkdir()
    (diverged / "config.toml").write_text("[model]\n[train]\n", encoding="utf-8")
    code, _, err = run(["plot", "--runs-dir", str(tmp_path / "runs"), "-o", "x.png"], capsys)
    assert code == 0, err
    assert "wrote x.png" in err and "1 run(s)" in err


def test_a_checkpoint_file_names_its_run(two_runs, tmp_path, capsys):
    code, _, err = run(["plot", str(two_runs[0] / "best.pt"), str(two_runs[1] / "last.pt"),
                        "-o", str(tmp_path / "x.png")], capsys)
    assert code == 0, err
    assert png_size(tmp_path / "x.png") == (1200, 500) and "2 run(s)" in err
