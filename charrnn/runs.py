"""Reading run folders without loading a model: what `charrnn runs` and `plot` show.

A run folder (written by ``train.py``) holds ``config.toml``, ``metrics.csv``,
``best.pt``, ``last.pt`` and any numbered ``step-N.pt``. ``summarize(folder)`` reads the
first two as text and peeks into ``last.pt`` (or ``best.pt``, or the newest
``step-N.pt``) for the few facts only a checkpoint has (the corpus, the step reached),
memory-mapping it so that its weights are not read.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charrnn.errors import CharRNNError
from charrnn.files import (BEST, LAST, METRICS, RUN_FILES, is_run, numbered_checkpoints,
                           read_config, read_metrics)


@dataclass
class RunSummary:
    path: str
    updated: float                     # newest modification time of its files (Unix time)
    corpus: str | None = None          # path of the training text (of the folder that
    corpus_chars: int | None = None    # holds them all, for several files)
    corpus_files: list[str] | None = None   # the training files, in order
    cell: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    parameters: int | None = None      # counted from the checkpoint's tensor shapes
    steps: int | None = None           # optimiser steps done (last.pt, else metrics)
    evaluations: int = 0               # rows in metrics.csv
    best_val_loss: float | None = None   # nats per character
    last_val_loss: float | None = None
    elapsed_s: float | None = None
    checkpoints: list[str] = field(default_factory=list)   # best.pt, last.pt, step-N.pt...
    numbered_steps: list[int] = field(default_factory=list)   # N of each step-N.pt
    problem: str | None = None         # why the folder could not be read, if it could not

    @property
    def model(self) -> str:
        if self.problem is not None:
            return "damaged"
        if self.cell is None:
            return "?"
        return f"{self.num_layers}x{self.hidden_size} {self.cell}"

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["model"] = self.model
        for key, value in row.items():  # JSON has no NaN: an unknown loss is null
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
        return row


def summarize(run_dir: str | Path) -> RunSummary:
    """What a run folder says about itself: its model, corpus, progress and losses."""
    from charrnn.checkpoint import count_parameters, peek_checkpoint  # imports torch

    run_dir = Path(run_dir)
    found = numbered_checkpoints(run_dir)
    numbered = [path for _, path in found]
    files = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()] + numbered
    summary = RunSummary(path=str(run_dir), updated=max((p.stat().st_mtime for p in files),
                                                        default=run_dir.stat().st_mtime))
    summary.checkpoints = [p.name for p in files if p.suffix == ".pt"]
    summary.numbered_steps = [step for step, _ in found]
    _set_model(summary, read_config(run_dir).get("model", {}))
    rows: list[dict[str, float]] = []
    if (run_dir / METRICS).is_file():
        try:
            rows = read_metrics(run_dir)
        except CharRNNError:
            rows = []
    if rows:
        losses = [r["val_loss"] for r in rows if math.isfinite(r.get("val_loss", math.nan))]
        summary.evaluations = len(rows)
        summary.best_val_loss = min(losses) if losses else None
        summary.last_val_loss = rows[-1].get("val_loss")
        step, elapsed = rows[-1]["step"], rows[-1].get("elapsed_s", math.nan)
        summary.steps = int(step) if math.isfinite(step) else None
        summary.elapsed_s = elapsed if math.isfinite(elapsed) else None
    # last.pt knows the newest step, even between evaluations (so does a step-N.pt).
    for path in [run_dir / LAST, run_dir / BEST, *numbered[-1:]]:
        ckpt = peek_checkpoint(path) if path.is_file() else None
        if ckpt is None:
            continue
        corpus = ckpt.get("corpus") if isinstance(ckpt.get("corpus"), dict) else {}
        paths = corpus.get("paths") if isinstance(corpus.get("paths"), list) else []
        if paths and all(isinstance(p, str) for p in paths):
            summary.corpus_files = paths
            with contextlib.suppress(ValueError):   # absolute, unless made by hand
                summary.corpus = os.path.commonpath([os.path.dirname(p) for p in paths])
        else:
            summary.corpus = _of(corpus.get("path"), str)
            summary.corpus_files = None if summary.corpus is None else [summary.corpus]
        summary.corpus_chars = _of(corpus.get("chars"), int)
        summary.parameters = count_parameters(ckpt.get("model_state"))
        if isinstance(ckpt.get("step"), int) and path.name != BEST:
            summary.steps = max(summary.steps or 0, ckpt["step"])
            if isinstance(ckpt.get("elapsed"), float):
                summary.elapsed_s = max(summary.elapsed_s or 0.0, ckpt["elapsed"])
        best = ckpt.get("best_val_loss")
        if summary.best_val_loss is None and isinstance(best, float) and math.isfinite(best):
            summary.best_val_loss = best
        if summary.cell is None and isinstance(ckpt.get("model_config"), dict):
            _set_model(summary, ckpt["model_config"])
        break
    return summary


def _of(value: Any, kind: type) -> Any:
    """``value`` when it has the type charrnn writes there, else None."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _set_model(summary: RunSummary, model: Any) -> None:
    model = model if isinstance(model, dict) else {}
    summary.cell = _of(model.get("cell"), str)
    summary.num_layers = _of(model.get("num_layers"), int)
    summary.hidden_size = _of(model.get("hidden_size"), int)


def _summarize_or_mark(run_dir: Path) -> RunSummary:
    """``summarize``, or for a folder that cannot be read, a summary that says why (one
    damaged folder does not hide the others)."""
    try:
        return summarize(run_dir)
    except Exception as e:  # noqa: BLE001 - any damage: mark this run, list the rest
        try:
            updated = run_dir.stat().st_mtime
        except OSError:
            updated = 0.0
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return RunSummary(path=str(run_dir), updated=updated, problem=reason[:200])


def find_runs(root: str | Path = "runs") -> list[Path]:
    """The run folders directly under ``root`` (or ``root`` itself if it is one)."""
    root = Path(root)
    if not root.exists():
        raise CharRNNError(f"{root} does not exist; train a model with 'charrnn train TEXT' "
                           "or give the folder that holds your runs")
    if not root.is_dir():
        raise CharRNNError(f"{root} is not a folder; give the folder that holds your runs")
    if is_run(root):
        return [root]
    return sorted(p for p in root.iterdir() if is_run(p))


SORTS = ("time", "loss")


def list_runs(root: str | Path = "runs", sort: str = "time") -> list[RunSummary]:
    """Summaries of the runs under ``root``: newest first, or lowest best val loss first."""
    if sort not in SORTS:
        raise CharRNNError(f"unknown sort '{sort}'; use one of {', '.join(SORTS)}")
    summaries = [_summarize_or_mark(p) for p in find_runs(root)]
    if sort == "loss":
        return sorted(summaries, key=lambda s: (s.best_val_loss is None,
                                                s.best_val_loss or 0.0, -s.updated))
    return sorted(summaries, key=lambda s: s.updated, reverse=True)
