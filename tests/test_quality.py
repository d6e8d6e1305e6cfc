"""benchmarks/quality.py as a user runs it: a config trained in a fresh process, the
median, the processor, and the fraction of the matmul peak. The config's budget is steps,
not seconds, so that a slow or busy machine runs the same check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

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
    assert run["fraction_of_peak"] == pytest.approx(
        run["chars_per_s"] * flop_per_char / 1e9 / report["peak_gflops"]["float32"],
        rel=0.01, abs=1e-3)
