"""benchmarks/quality.py as a user runs it: a config trained in a fresh process, the
median, the processor, and the fraction of the matmul peak. The config's budget is steps,
not seconds, so that a slow or busy machine runs the same check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from charrnn.sizing import CANDIDATES
from helpers import ROOT

QUICK = """[model]
cell = "lstm"
embedding_dim = 16
hidden_size = 32
num_layers = 1

[train]
batch_size = 8
seq_length = 16
max_steps = 40
eval_every = 1000000
val_max_chars = 5000
sample_every = 0
dtype = "float32"
"""


@pytest.mark.slow     # a benchmark script end to end: about 11 s
def test_quality_runs_a_config_and_reports_the_median_and_the_processor(tmp_path):
    config = tmp_path / "quick.toml"
    config.write_text(QUICK, encoding="utf-8")
    done = subprocess.run([sys.executable, "benchmarks/quality.py", "--config", str(config),
                           "--runs", "1", "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (entry,) = report["results"]
    assert report["processor"]["name"] and report["processor"]["cpus"] >= 1
    (run,) = entry["runs"]
    assert entry["median_val_loss"] == run["val_loss"] and entry["median_steps"] == run["steps"]
    assert 1.0 < entry["median_val_loss"] < 4.5 and entry["target"] is None
    # 65 characters; the LSTM's 4 gates x 32 x (16 + 32) and the head's 32 x 65
    # multiply-adds per character, 2 FLOP each, 3 times over for forward and backward.
    flop_per_char = 6 * (4 * 32 * (16 + 32) + 32 * 65)
    assert run["dtype"] == "float32" and run["steps"] == 40 and run["wall_s"] > 0
    assert run["train_flop_per_char"] == flop_per_char and run["model"] == "1x32 d0"
    assert run["fraction_of_peak"] == pytest.approx(
        run["chars_per_s"] * flop_per_char / 1e9 / report["peak_gflops"]["float32"],
        rel=0.01, abs=1e-3)


@pytest.mark.slow
def test_the_sweep_runs_the_auto_row_and_saves_what_it_chose(tmp_path, shakespeare):
    text = tmp_path / "small.txt"
    text.write_text(shakespeare.read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    rows = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, "benchmarks/quality.py", "--sweep", "--only", "auto",
                           "--budget", "9", "--corpus", str(text), "--threads", "1",
                           "--jsonl", str(rows)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in rows.read_text().splitlines()]
    assert row["row"] == "auto" and row["budget_s"] == 9 and "--threads" in row["common"]
    settings = row["settings"]
    assert (int(settings["num_layers"]), int(settings["hidden_size"])) in CANDIDATES
    assert f"| auto: {settings['num_layers']}x{settings['hidden_size']}" in done.stdout
    assert f"| {row['val_loss']:.4f} |" in done.stdout


def test_the_sweep_table_marks_the_best_fixed_shape_and_the_auto_gap():
    from benchmarks.sweep import table

    rows = [{"row": "1x256 d0", "val_loss": 1.5, "steps": 10, "chars_per_s": 5, "wall_s": 9},
            {"row": "1x384 d0", "val_loss": 1.45, "steps": 8, "chars_per_s": 4, "wall_s": 9},
            {"row": "auto", "val_loss": 1.4561, "steps": 8, "chars_per_s": 4, "wall_s": 9,
             "settings": {"num_layers": "1", "hidden_size": "384", "dropout": "0.1"}}]
    out = table(rows)
    assert "| 1x384 d0 | **1.4500** |" in out and "| 1x256 d0 | 1.5000 |" in out
    assert "| auto: 1x384 d0.1 | 1.4561 |" in out
    assert "auto minus the best fixed shape: +0.0061" in out


def test_the_code_corpus_is_the_same_text_each_time(tmp_path):
    from benchmarks.sweep import pycode_corpus

    a = pycode_corpus(tmp_path / "a.txt", chars=200_000).read_text(encoding="utf-8")
    b = pycode_corpus(tmp_path / "b.txt", chars=200_000).read_text(encoding="utf-8")
    assert a == b and len(a) == 200_000 and "def " in a and "import " in a
