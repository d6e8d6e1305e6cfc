"""Reading run folders without loading a model: what `charrnn runs` and `plot` show.

A run folder (written by ``train.py``) holds ``config.toml``, ``metrics.csv``,
``best.pt`` and ``last.pt``. ``summarize(folder)`` reads the first two as text and
peeks into ``last.pt`` (or ``best.pt``) for the few facts only a checkpoint has (the
corpus, the step reached), memory-mapping it so that its weights are not read.
"""

from __future__ import annotations

import csv
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charrnn.errors import CharRNNError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

METRICS, CONFIG, BEST, LAST = "metrics.csv", "config.toml", "best.pt", "last.pt"
RUN_FILES = (CONFIG, METRICS, BEST, LAST)


@dataclass
class RunSummary:
    path: str
    updated: float                     # newest modification time of its files (Unix time)
    corpus: str | None = None          # path of the training text, as given to train
    corpus_chars: int | None = None
    cell: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    parameters: int | None = None      # counted from the checkpoint's tensor shapes
    steps: int | None = None           # optimiser steps done (last.pt, else metrics)
    evaluations: int = 0               # rows in metrics.csv
    best_val_loss: float | None = None   # nats per character
    last_val_loss: float | None = None
    elapsed_s: float | None = None
    checkpoints: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
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


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` (or the file itself) as numbers."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CharRNNError(f"{path} does not exist; give a run folder written by charrnn "
                           "train (charrnn runs lists them)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CharRNNError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"step", "val_loss"} <= set(reader.fieldnames):
        raise CharRNNError(f"{path} is not a charrnn metrics file: it needs the columns step "
                           "and val_loss")
    rows = []
    for number, row in enumerate(reader, start=2):
        try:
            rows.append({k: float(v) if v not in ("", None) else math.nan
                         for k, v in row.items() if k is not None})
        except ValueError:
            raise CharRNNError(f"{path} line {number} holds a value that is not a number; "
                               "the file is damaged") from None
    return rows


def read_config(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The ``[model]`` and ``[train]`` tables of a run's ``config.toml`` ({} if absent)."""
    path = Path(run_dir) / CONFIG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def peek_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint's dict, its tensors memory-mapped rather than read, or None when
    the file cannot be read (then the caller shows what it knows without it). Like
    every load in charrnn it uses ``weights_only=True``: no code from the file runs."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # anything unreadable: not fatal for a listing
        return None
    return data if isinstance(data, dict) else None


def _count_parameters(state: Any) -> int | None:
    """Distinct parameters of a state_dict (a tied matrix counts once)."""
    if not isinstance(state, dict) or not state:
        return None
    distinct = {t.untyped_storage().data_ptr(): t.numel() for t in state.values()}
    return sum(distinct.values())


def is_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in RUN_FILES)


def summarize(run_dir: str | Path) -> RunSummary:
    """What a run folder says about itself: its model, corpus, progress and losses."""
    run_dir = Path(run_dir)
    files = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
    summary = RunSummary(path=str(run_dir), updated=max((p.stat().st_mtime for p in files),
                                                        default=run_dir.stat().st_mtime))
    summary.checkpoints = [p.name for p in files if p.suffix == ".pt"]
    model = read_config(run_dir).get("model", {})
    summary.cell, summary.num_layers, summary.hidden_size = (
        model.get("cell"), model.get("num_layers"), model.get("hidden_size"))
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
        summary.steps = int(rows[-1]["step"])
        summary.elapsed_s = rows[-1].get("elapsed_s")
    for name in (LAST, BEST):  # last.pt knows the newest step, even between evaluations
        ckpt = peek_checkpoint(run_dir / name) if (run_dir / name).is_file() else None
        if ckpt is None:
            continue
        corpus = ckpt.get("corpus") if isinstance(ckpt.get("corpus"), dict) else {}
        summary.corpus = corpus.get("path")
        summary.corpus_chars = corpus.get("chars")
        summary.parameters = _count_parameters(ckpt.get("model_state"))
        if isinstance(ckpt.get("step"), int) and name == LAST:
            summary.steps = max(summary.steps or 0, ckpt["step"])
            if isinstance(ckpt.get("elapsed"), float):
                summary.elapsed_s = max(summary.elapsed_s or 0.0, ckpt["elapsed"])
        best = ckpt.get("best_val_loss")
        if summary.best_val_loss is None and isinstance(best, float) and math.isfinite(best):
            summary.best_val_loss = best
        if summary.cell is None and isinstance(ckpt.get("model_config"), dict):
            mc = ckpt["model_config"]
            summary.cell, summary.num_layers, summary.hidden_size = (
                mc.get("cell"), mc.get("num_layers"), mc.get("hidden_size"))
        break
    return summary


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
    summaries = [summarize(p) for p in find_runs(root)]
    if sort == "loss":
        return sorted(summaries, key=lambda s: (s.best_val_loss is None,
                                                s.best_val_loss or 0.0, -s.updated))
    return sorted(summaries, key=lambda s: s.updated, reverse=True)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


# Columns of ``runs_table``; where a terminal is too narrow for all of them, the first
# ones named in DROPPED_FIRST go first. The run's path always stays.
RUN_COLUMNS = (("updated", "left"), ("corpus", "left"), ("model", "left"), ("params", "right"),
               ("steps", "right"), ("best val", "right"), ("elapsed", "right"), ("run", "left"))
DROPPED_FIRST = ("params", "corpus", "updated", "elapsed", "model")


def runs_table(summaries: list[RunSummary], width: int | None = None):
    """A rich ``Table`` of the runs, the one with the lowest best val loss marked; no
    wider than ``width`` characters when given (less useful columns left out)."""
    from datetime import datetime

    from rich.table import Table

    losses = [s.best_val_loss for s in summaries if s.best_val_loss is not None]
    lowest = min(losses) if losses else None
    rows, styles = [], []
    for s in summaries:
        best = "?" if s.best_val_loss is None else f"{s.best_val_loss:.4f}"
        marked = s.best_val_loss is not None and s.best_val_loss == lowest
        rows.append((datetime.fromtimestamp(s.updated).strftime("%Y-%m-%d %H:%M"),
                     Path(s.corpus).name if s.corpus else "?", s.model,
                     f"{s.parameters:,}" if s.parameters else "?",
                     f"{s.steps:,}" if s.steps is not None else "?",
                     f"{best}{' *' if marked else '  '}", _duration(s.elapsed_s), str(s.path)))
        styles.append("bold" if marked else None)
    # Each column as wide as its widest cell, 2 spaces between: leave out columns until
    # the table fits.
    widths = [max(len(name), *(len(row[k]) for row in rows))
              for k, (name, _) in enumerate(RUN_COLUMNS)]
    keep = list(range(len(RUN_COLUMNS)))
    for name in DROPPED_FIRST:
        if width is None or sum(widths[k] + 2 for k in keep) - 2 <= width:
            break
        keep.remove([n for n, _ in RUN_COLUMNS].index(name))
    table = Table(box=None, pad_edge=False, header_style="bold",
                  caption="* lowest best val loss (nats/char); each run's best.pt holds "
                          "its best" if lowest is not None else None, caption_justify="left")
    for name, justify in (RUN_COLUMNS[k] for k in keep):
        table.add_column(name, justify=justify, no_wrap=name != "run",
                         overflow="fold" if name == "run" else "ellipsis")
    for row, style in zip(rows, styles):
        table.add_row(*(row[k] for k in keep), style=style)
    return table
