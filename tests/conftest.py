"""The suite's settings and fixtures: no file written into the project, one thread, the
tiny-shakespeare corpus that ships in data/, a small text, and one tiny trained run
that many tests read. Helpers that tests import are in ``helpers.py``; where a new test
goes is in ``README.md`` beside them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The suite writes nothing into the project folder. No bytecode caches beside the
# sources, from this process or any child process (the README runs the suite with
# `python -B`, so that this file's own is not written either; the caches installed with
# the packages are still read). Run folders, plots and corpus caches go to each test's
# own folder (``work_in_tmp_path``).
sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
# One intra-op thread in this process and in every child: the suite's models are tiny, and
# two threads beside a busy core wait on each other (a step tens of times slower).
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from helpers import SHAKESPEARE, tiny_configs  # noqa: E402

# Hypothesis keeps no example database in the working folder: the seeded runs replay
# the same examples anyway.
settings.register_profile("charrnn", database=None)
settings.load_profile("charrnn")


@pytest.fixture(autouse=True)
def work_in_tmp_path(tmp_path, monkeypatch) -> None:
    """Every test runs in its own temporary folder, as a user runs charrnn in theirs:
    what a command writes by default (runs/, a plot) never lands in the project."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """The corpus as it ships with the project (data/tinyshakespeare.txt)."""
    assert SHAKESPEARE.is_file(), f"{SHAKESPEARE} is missing: it is part of the project"
    return SHAKESPEARE


@pytest.fixture(scope="session")
def small_text(shakespeare, tmp_path_factory) -> Path:
    """The first 60,000 characters of tiny-shakespeare."""
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(shakespeare.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(small_text, tmp_path_factory) -> Path:
    """A 2x32 LSTM trained for 20 steps; its run folder (best.pt, last.pt, metrics)."""
    from charrnn.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    model, config = tiny_configs(out=str(out))
    train(small_text, model, config, progress=False)
    return out
