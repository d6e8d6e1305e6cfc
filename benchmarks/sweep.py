"""Fixed model shapes beside ``--size auto`` at one time budget: the table that the
automatic choice is checked against (``python benchmarks/quality.py --sweep``).

Every row is one ``charrnn train CORPUS --max-time BUDGET`` in a fresh process, timed
from its start to its exit. The fixed rows give the whole shape (cell width, depth,
dropout) and the recipe that ``--size auto`` uses for everything else (batch 32 x
window 32, AdamW at lr 8e-3 decayed in a straight line to zero, one validation at the
end); the auto row gives only the budget. ``--threads`` and ``--dtype`` are passed to
every row, so that a slower processor can be imitated on a fast one (float32 and one
thread). Rows are printed as they finish, and appended to ``--jsonl`` when given, so
that a sweep cut short keeps what it measured.

Corpora: ``shakespeare`` (data/tinyshakespeare.txt), ``pycode`` (this Python's own
standard library sources, joined in path order and cut to 3 million characters:
source code, a text of another kind, present on every machine that runs this), or a
path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (hidden size, layers, dropout): from a little to a lot of model for 2 cores in 1-10 min.
SHAPES = [(256, 1, 0.0), (384, 1, 0.0), (512, 1, 0.05), (640, 1, 0.1), (768, 1, 0.15),
          (256, 2, 0.0), (384, 2, 0.1), (512, 2, 0.15)]
RECIPE = ["--seq-length", "32", "--batch-size", "32", "--lr", "0.008", "--decay", "linear",
          "--min-lr-ratio", "0", "--warmup-steps", "100", "--eval-every", "1000000",
          "--sample-every", "0", "--embedding-dim", "64", "--cell", "lstm"]
PYCODE_CHARS = 3_000_000


def pycode_corpus(path: Path, chars: int = PYCODE_CHARS) -> Path:
    """This interpreter's standard library ``.py`` files (no site-packages), sorted by
    path and joined by a blank line, cut to ``chars`` characters, written to ``path``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for file in sorted(stdlib.rglob("*.py")):
        if "site-packages" in file.parts:
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        total += len(text) + 2
        if total >= chars:
            break
    path.write_text("\n\n".join(parts)[:chars], encoding="utf-8")
    return path


def corpus_path(name: str, tmp: Path) -> Path:
    if name == "shakespeare":
        return ROOT / "data" / "tinyshakespeare.txt"
    if name == "pycode":
        return pycode_corpus(tmp / "pycode.txt")
    return Path(name)


def shape_flags(hidden: int, layers: int, dropout: float) -> list[str]:
    return ["--hidden-size", str(hidden), "--num-layers", str(layers),
            "--dropout", str(dropout), *RECIPE]


def run_row(text: Path, budget: float, flags: list[str], common: list[str],
            out: Path) -> dict:
    """One training command: its wall time, steps, chars/s, chosen shape and val loss."""
    command = [sys.executable, "-m", "charrnn", "train", str(text), "--max-time",
               f"{budget - 1:g}", "--out", str(out), "-q", "--json", *common, *flags]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "wall_s": round(wall, 1)}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    saved = (out / "config.toml").read_text(encoding="utf-8")
    model = {k: v for k, v in (line.split(" = ", 1) for line in saved.splitlines()
                               if " = " in line) if k in ("hidden_size", "num_layers",
                                                          "dropout", "seq_length",
                                                          "batch_size", "lr")}
    return {"wall_s": round(wall, 1), "steps": result["step"],
            "chars_per_s": round(result["chars_per_s"]), "dtype": result["dtype"],
            "val_loss": round(result["val_loss"], 4), "settings": model}


def parse_shape(text: str) -> tuple[int, int, float]:
    """``2x512`` or ``2x512:0.15`` (layers x width : dropout) -> (width, layers, dropout)."""
    shape, _, dropout = text.partition(":")
    layers, _, hidden = shape.partition("x")
    return int(hidden), int(layers), float(dropout or 0.0)


def sweep(corpus: str, budget: float, common: list[str], *, auto: bool = True,
          fixed: bool = True, shapes: list[tuple[int, int, float]] | None = None,
          jsonl: Path | None = None, tmp: Path) -> list[dict]:
    text = corpus_path(corpus, tmp)
    rows = [(f"{n}x{h} d{d:g}", shape_flags(h, n, d))
            for h, n, d in shapes or SHAPES] if fixed else []
    if auto:
        rows.append(("auto", []))
    results = []
    for i, (name, flags) in enumerate(rows):
        row = {"corpus": corpus, "budget_s": budget, "row": name, "common": common,
               **run_row(text, budget, flags, common, tmp / f"row-{i}")}
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if jsonl is not None:
            with jsonl.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    return results


def table(results: list[dict]) -> str:
    """The rows as a Markdown table, the best fixed shape in bold."""
    fixed = [r for r in results if r["row"] != "auto" and "val_loss" in r]
    best = min((r["val_loss"] for r in fixed), default=None)
    lines = ["| shape | val loss | steps | chars/s | wall s |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        if "val_loss" not in r:
            lines.append(f"| {r['row']} | failed: {r['error']} | | | {r['wall_s']} |")
            continue
        name = r["row"]
        if name == "auto":
            s = r["settings"]
            name = f"auto: {s['num_layers']}x{s['hidden_size']} d{float(s['dropout']):g}"
        loss = f"**{r['val_loss']:.4f}**" if r["val_loss"] == best else f"{r['val_loss']:.4f}"
        lines.append(f"| {name} | {loss} | {r['steps']:,} | {r['chars_per_s']:,} | "
                     f"{r['wall_s']} |")
    auto = [r for r in results if r["row"] == "auto" and "val_loss" in r]
    if auto and best is not None:
        lines.append(f"\nauto minus the best fixed shape: {auto[0]['val_loss'] - best:+.4f}")
    return "\n".join(lines)
