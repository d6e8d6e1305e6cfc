"""Rich renderings of the reports of ``charrnn.inspect`` and ``charrnn.activations``.

``render_inspect(report, console)`` draws what ``inspect.describe`` returns (or, with
``equations=True``, the cell's equations), ``render_checkpoint(info, console)`` what
``inspect.describe_checkpoint`` returns, and ``render_activations(report, console)`` what
``activations.activation_report`` returns: each character on a background whose colour is
a neuron's activation there. The colours, glyphs and headings are shared with the HTML
pages (``charrnn.drawing``). Every piece of text goes in as ``Text``, so a character like ``[`` in a
vocabulary is never read as markup. No torch here: the reports are plain dicts, typed in
``charrnn.reports``.
"""

from __future__ import annotations

import math
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.columns import Columns
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from charrnn.data import list_chars
from charrnn.drawing import (activation_heading, activation_rgb, glyph, ink, neuron_heading,
                             neuron_scale, prediction_rgbs, probability_rgb, ranking_heading,
                             shown)
from charrnn.reports import (ActivationReport, CheckpointInfo, Costs, EquationSection,
                             InspectModel, InspectReport, TrainEnd, TrainStart)

# At most this many rows of the metrics history are shown (evenly spaced, last included).
MAX_METRIC_ROWS = 12

# Metric columns in this order first, then any other keys as they come.
METRIC_ORDER = ("step", "elapsed", "train_loss", "val_loss", "chars_per_s")


# ----------------------------------------------------------------------------- train

def render_train_start(info: TrainStart, console: Console) -> None:
    """What ``train.Run.describe`` says before the first step."""
    console.print(Text.assemble(("charrnn train", "bold"), f" {info['text']}: "
                                f"{info['chars']:,} characters, vocabulary {info['vocab_size']}, "
                                f"train {info['train_chars']:,} / val {info['val_chars']:,}"
                                + (f" ({info['val_scored']:,} scored per evaluation)"
                                   if info.get("val_scored", 0) < info["val_chars"] - 1 else "")))
    console.print(Text(f"model: {info['model']} ({info['parameters']:,} parameters) on "
                       f"{info['device']} {info['dtype']}; {info['batching']} batches of "
                       f"{info['batch_size']}x{info['seq_length']}; budget {info['budget']}"))
    console.print(Text(f"threads: {info['threads']}"))
    if info.get("size"):
        console.print(Text(f"size auto: {info['size']}"))
    if info["processes"] > 1:
        console.print(f"data parallel: {info['processes']} processes, "
                      f"{info['batch_size'] // info['processes']} rows of each batch apiece")
    console.print(Text(f"run folder: {info['run_dir']}"))
    if info.get("val_only_chars"):
        chars = info["val_only_chars"]
        console.print(Text(f"note: {len(chars)} character(s) occur only in the validation "
                           f"text ({list_chars(chars)}): the model never trains on them, so "
                           "their predictions stay poor"))
    if info.get("val_empty"):
        empty = info["val_empty"]
        console.print(Text(f"note: {len(empty)} empty validation file(s) left out: "
                           f"{first_few(empty)}"))


def first_few(names: list) -> str:
    """The first three of ``names``, then "..." if there are more."""
    return ", ".join(map(str, names[:3])) + (", ..." if len(names) > 3 else "")


def render_train_end(result: TrainEnd, console: Console, found: bool) -> None:
    """The summary of ``train.RunResult.to_dict``, and the command that samples from it
    (naming the run unless ``sample`` would take it by itself: ``found``)."""
    r = {k: math.nan if v is None else v for k, v in result.items()}
    early = result.get("stopped_early")
    if result["first_step_s"] is None and early:    # a resume of a run that stopped early
        console.print(Text.assemble(
            ("done", "bold"), f": nothing to train, the run had already stopped early at step "
            f"{r['step']} (no new best since step {result.get('best_step')}); val loss "
            f"{r['val_loss']:.4f} nats/char. To go on, give a larger --patience (0: never stop "
            "early)"))
        return
    if result["first_step_s"] is None:    # not a step in this call
        console.print(Text.assemble(
            ("done", "bold"), f": nothing to train, the run had already reached its budget at "
            f"step {r['step']}; val loss {r['val_loss']:.4f} nats/char. To go on, give a "
            "larger --max-steps, --epochs or --max-time"))
        return
    console.print(Text.assemble(
        ("done", "bold"), f": {r['step']} steps{' (stopped early)' if early else ''} in "
        f"{duration(r['elapsed_s'])} (first step after {duration(r['first_step_s'])}), "
        f"{r['chars_per_s']:,.0f} chars/s; val loss {r['val_loss']:.4f} nats/char "
        f"({r['val_bpc']:.3f} bits/char), best {r['best_val_loss']:.4f}"))
    console.print(Text(f"checkpoints: {r['best']}, {r['last']}"))
    numbered = [Path(p).name for p in result.get("numbered") or []]
    if numbered:
        shown = ", ".join(numbered) if len(numbered) <= 3 else \
            f"{numbered[0]} ... {numbered[-1]}"
        console.print(Text(f"numbered checkpoints: {len(numbered)} ({shown})"))
    where = "" if found else f" {shlex.quote(str(r['run_dir']))}"
    console.print(Text(f"next: charrnn sample{where} --len 200"))


# ----------------------------------------------------------------------------- inspect

def render_inspect(report: InspectReport, console: Console, *, equations: bool = False
                   ) -> None:
    """Parameters, costs, tensor shapes, notes and the reference check of a model; with
    ``equations``, the cell's equations with its sizes instead of the tables."""
    console.print(_model_title(report.get("model", {})))
    if equations:
        for section in report.get("equations") or []:
            console.print(_equation_section(section))
    else:
        console.print(_parameter_table(report))
        console.print(_cost_table(report))
        console.print(Text("FLOPs: the matrix products, 2 per multiply-add; training = forward "
                           "+ backward = 3 x forward", style="dim"))
        memory = _memory_line(report.get("costs") or {})
        if memory:
            console.print(memory)
        console.print(_tensor_table(report))
        notes = report.get("notes") or []
        if notes:
            console.print(Text("notes", style="bold"))
            bullets = Table.grid(padding=(0, 1))
            bullets.add_column(no_wrap=True)
            bullets.add_column(overflow="fold")
            for note in notes:
                bullets.add_row(Text(" •"), Text(note))
            console.print(bullets)
    if "verify" in report:
        console.print(_verify_line(report))


def _model_title(model: InspectModel) -> Text:
    cell = model.get("cell", "?")
    if cell == "rnn":
        cell = f"rnn ({model.get('nonlinearity', 'tanh')})"
    parts = [f"{cell}", f"num_layers {model.get('num_layers')}",
             f"hidden_size {model.get('hidden_size')}",
             f"embedding_dim {model.get('embedding_dim')}",
             f"vocab_size {model.get('vocab_size')}"]
    if model.get("proj_size"):
        parts.append(f"proj_size {model['proj_size']}")
    if model.get("bidirectional"):
        parts.append("bidirectional")
    if model.get("tie_weights"):
        parts.append("tied weights")
    parts.append("batch_first" if model.get("batch_first", True) else "seq-first")
    return Text.assemble(("CharRNN ", "bold"), " · ".join(parts))


def _equation_section(section: EquationSection) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(overflow="fold")
    grid.add_column(style="dim", overflow="fold")
    for equation, comment in section.get("lines", []):
        grid.add_row(Text(equation), Text(comment))
    return Group(Text(section.get("title", ""), style="bold"), Padding(grid, (0, 0, 0, 2)))


def _parameter_table(report: InspectReport) -> Table:
    table = Table(title="parameters", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    table.add_column("name", style="cyan", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("numel", justify="right", no_wrap=True)
    table.add_column("role", overflow="fold", ratio=1)
    for p in report.get("parameters", []):
        table.add_row(Text(p["name"]), Text(_shape(p["shape"])), Text(f"{p['numel']:,}"),
                      Text(p.get("role", "")))
    return table


def _cost_table(report: InspectReport) -> Table:
    """Parameters and forward FLOPs per character of each part, with the totals."""
    flops = (report.get("costs") or {}).get("flops_per_char") or {}
    per_part = flops.get("per_part") or {}
    table = Table(title="cost per character", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    table.add_column("part", style="cyan", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("forward FLOPs", justify="right", no_wrap=True)
    for part, count in (report.get("num_parameters_per_layer") or {}).items():
        table.add_row(Text(part), Text(f"{count:,}"), Text(_count(per_part.get(part))))
    table.add_section()
    table.add_row(Text("total", style="bold"),
                  Text(f"{report.get('num_parameters', 0):,}", style="bold"),
                  Text(_count(flops.get("forward")), style="bold"))
    if flops.get("training") is not None:
        table.add_row(Text("training"), Text(""), Text(_count(flops["training"])))
    return table


def _memory_line(costs: Costs) -> Text | None:
    memory = costs.get("memory_bytes")
    if not memory:
        return None
    return Text.assemble(
        ("memory ", "bold"),
        f"weights {_bytes(memory['weights'])} ({memory.get('dtype', '?')}) · gradients "
        f"{_bytes(memory['gradients'])} · {memory.get('optimizer', 'optimizer')} state "
        f"{_bytes(memory['optimizer_state'])} · together "
        f"{_bytes(memory['weights'] + memory['gradients'] + memory['optimizer_state'])} "
        "(activations for backward come on top, growing with batch x seq_length)")


def _tensor_table(report: InspectReport) -> Table:
    dims = report.get("dims") or {}
    title = "tensors of one forward pass"
    if dims:
        title += f" (N = {dims.get('N')}, L = {dims.get('L')})"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    table.add_column("tensor", style="cyan", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("dimensions", overflow="fold", ratio=1)
    labels = report.get("tensor_dims") or {}
    for name, shape in (report.get("tensors") or {}).items():
        table.add_row(Text(name), Text(_shape(shape)),
                      Text("(" + ", ".join(labels.get(name, [])) + ")"))
    return table


def _verify_line(report: InspectReport) -> Text:
    ok = bool(report.get("verify_ok"))
    diffs = report.get("verify") or {}
    tolerance = report.get("verify_tolerance")
    text = Text.assemble(("reference check: ", "bold"),
                         ("PASS", "bold green") if ok else ("FAIL", "bold red"))
    text.append("  max |torch - reference|: "
                + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    if tolerance is not None:
        text.append(f" (tolerance {tolerance:g})", style="dim")
    last_step = report.get("verify_last_step") or {}
    if last_step:
        text.append("\n  output's last step = h_n: ")
        for k, holds in last_step.items():
            text.append(f"{k} ")
            text.append("yes " if holds else "NO ", style="green" if holds else "red")
    return text


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _count(n: int | None) -> str:
    """``1,737,216 (1.74 M)``: exact, with the order of magnitude for large numbers."""
    if n is None:
        return "—"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n:,} ({n / size:.3g} {unit})"
    return f"{n:,}"


def _bytes(n: int) -> str:
    for size, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


# ----------------------------------------------------------------------------- checkpoint

def render_checkpoint(info: CheckpointInfo, console: Console) -> None:
    """Vocabulary, settings, progress, losses and the metrics history of a checkpoint."""
    console.print(_checkpoint_summary(info))
    config = _config_table(info.get("model_config") or {}, info.get("train_config") or {})
    if config.row_count:
        console.print(config)
    metrics = info.get("metrics") or []
    if metrics:
        console.print(_metrics_table(metrics))


def _checkpoint_summary(info: CheckpointInfo) -> Group:
    lines = []
    head = Text.assemble(("checkpoint ", "bold"),
                         f"step {_value(info.get('step'))} · "
                         f"elapsed {duration(info.get('elapsed'))}")
    params = info.get("num_parameters")
    if params is not None:
        head.append(f" · {params:,} parameters")
    versions = [f"{k.replace('_version', '')} {info[k]}" for k in
                ("format_version", "charrnn_version", "torch_version")
                if info.get(k) is not None]
    if versions:
        head.append(" (" + ", ".join(versions) + ")", style="dim")
    lines.append(head)
    if info.get("path"):
        lines.append(Text.assemble(("file    ", "bold"), str(info["path"])))

    losses = Text("losses  ", style="bold")
    for key, label in (("val_loss", "val_loss"), ("best_val_loss", "best_val_loss")):
        loss = info.get(key)
        bpc = info.get(key.replace("loss", "bpc"))
        losses.append(f"{label} {_value(loss)}")
        if bpc is not None:
            losses.append(f" ({bpc:.3f} bits/char)", style="dim")
        losses.append("   ")
    lines.append(losses)

    corpus = info.get("corpus") or {}
    if corpus:
        text = Text("corpus  ", style="bold")
        paths = corpus.get("paths")
        if paths:
            shown = paths if len(paths) <= 3 else [paths[0], "...", paths[-1]]
            text.append(f"{len(paths)} files: {', '.join(shown)}")
        else:
            text.append(str(corpus.get("path", "?")))
        if corpus.get("chars") is not None:
            text.append(f" ({_value(corpus['chars'])} characters)")
        lines.append(text)

    vocab = info.get("vocab")
    if vocab:
        chars, counts = vocab.get("chars", []), vocab.get("counts")
        if counts is None:
            text = Text(f"vocab   {vocab.get('size')} characters: ", style="bold")
            text.append(" ".join(chars), style="")
        else:  # most frequent first, in columns
            text = Text(f"vocab   {vocab.get('size')} characters, by count in the corpus:",
                        style="bold")
            order = sorted(range(len(chars)), key=lambda i: (-counts[i], i))
            lines.append(text)
            text = Columns([Text.assemble((chars[i], "cyan"), f" {counts[i]:,}")
                            for i in order], padding=(0, 2))
        lines.append(text)
    return Group(*lines)


def _config_table(model: dict[str, Any], train: dict[str, Any]) -> Table:
    """Model and train settings side by side: key, value, key, value."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("model", style="cyan", no_wrap=True)
    table.add_column("", overflow="fold")
    table.add_column("train", style="cyan", no_wrap=True)
    table.add_column("", overflow="fold")
    model_items, train_items = list(model.items()), list(train.items())
    for k in range(max(len(model_items), len(train_items))):
        row = []
        for items in (model_items, train_items):
            if k < len(items):
                row += [Text(str(items[k][0])), Text(_value(items[k][1]))]
            else:
                row += [Text(""), Text("")]
        table.add_row(*row)
    return table


def _metrics_table(rows: list[dict[str, float]]) -> Table:
    shown = _spread(rows, MAX_METRIC_ROWS)
    keys = [k for k in METRIC_ORDER if any(k in r for r in rows)]
    for row in rows:
        keys += [k for k in row if k not in keys]
    title = "metrics" + (f" ({len(shown)} of {len(rows)} rows)" if len(shown) < len(rows)
                         else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    for key in keys:
        table.add_column(key, justify="right", no_wrap=True)
    for row in shown:
        table.add_row(*(Text(_metric(key, row.get(key))) for key in keys))
    return table


def _spread(rows: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` rows, evenly spaced, keeping the first and the last."""
    if len(rows) <= limit:
        return rows
    picks = sorted({round(k * (len(rows) - 1) / (limit - 1)) for k in range(limit)})
    return [rows[k] for k in picks]


def _metric(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key == "elapsed":
        return duration(value)
    if key == "chars_per_s" and isinstance(value, (int, float)):
        return f"{value:,.0f}"
    return _value(value)


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1e4 else str(value)
    return str(value)


def duration(seconds: Any, missing: str = "—", tenths: bool = True) -> str:
    """``42.0s`` (or ``42s``), ``3m 05s``, ``1h 02m``; ``missing`` for no number."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return missing
    if round(seconds, 1 if tenths else 0) < 60:
        return f"{seconds:.1f}s" if tenths else f"{round(seconds)}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


# ----------------------------------------------------------------------------- activations

def render_activations(report: ActivationReport, console: Console, *,
                       predictions: bool = False) -> None:
    """The ranking, then each chosen neuron's activation as the background of every
    character; with ``predictions``, the model's likeliest next characters at each one."""
    console.print(Text.assemble(("activations ", "bold"), activation_heading(report)))
    console.print(_ranking_table(report))
    console.print(_legend())
    for neuron in report["neurons"]:
        console.print()
        console.print(Text(neuron_heading(report, neuron), style="bold"))
        scale = neuron_scale(neuron)
        console.print(_coloured_text(report["text"],
                                     [activation_rgb(v, scale) for v in neuron["values"]]))
    if predictions:
        console.print()
        console.print(Text("each character coloured by the probability the model gave it "
                           "(red unlikely, green expected)", style="bold"))
        console.print(_coloured_text(report["text"], prediction_rgbs(report["predictions"])))
        console.print()
        console.print(_prediction_table(report))


def _ranking_table(report: ActivationReport) -> Table:
    table = Table(title=ranking_heading(report), title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    for name in ("rank", "neuron", "r", "mean", "std", "min", "max"):
        table.add_column(name, justify="right", no_wrap=True)
    for rank, n in enumerate(report["neurons"], start=1):
        r = "—" if n.get("r") is None else f"{n['r']:+.3f}"
        table.add_row(str(rank), str(n["index"]), r,
                      *(f"{n[k]:+.3f}" for k in ("mean", "std", "min", "max")))
    return table


def _legend() -> Text:
    text = Text("colour: ")
    for value in (-1.0, -0.5, 0.0, 0.5, 1.0):
        rgb = activation_rgb(value)
        text.append(f" {value:+.1f} ", style=f"{ink(rgb)} on {_hex(rgb)}")
    text.append("  (scale ±1, or ± the largest magnitude of a neuron that exceeds 1)",
                style="dim")
    return text


def _coloured_text(text: str, colours: list[tuple[int, int, int]]) -> Text:
    out = Text()
    for ch, rgb in zip(text, colours):
        out.append(glyph(ch), style=f"{ink(rgb)} on {_hex(rgb)}")
        if ch == "\n":
            out.append("\n")
    return out


def _prediction_table(report: ActivationReport) -> Table:
    rows = report["predictions"]
    k = len(rows[0]["top"]) if rows else 0
    table = Table(title=f"predictions: the {k} likeliest next characters after each one",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("t", justify="right", no_wrap=True)
    table.add_column("char", no_wrap=True)
    table.add_column("next", no_wrap=True)
    table.add_column("p(next)", justify="right", no_wrap=True)
    table.add_column(f"top {k}", overflow="fold")
    for t, row in enumerate(rows):
        p = row["p_next"]
        p_text = Text("—") if p is None else \
            Text(f"{p:.3f}", style=f"{ink(probability_rgb(p))} on {_hex(probability_rgb(p))}")
        top = Text()
        for ch, prob in row["top"]:
            style = "bold" if ch == row["next"] else ""
            top.append(f"{shown(ch)} {prob:.2f}", style=style)
            top.append("  ")
        table.add_row(str(t), Text(shown(row["char"])), Text(shown(row["next"])), p_text, top)
    return table


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# ----------------------------------------------------------------------------- runs
# Columns of ``runs_table``; where a terminal is too narrow for all of them, the first
# ones named in DROPPED_FIRST go first. The run's path always stays.
RUN_COLUMNS = (("updated", "left"), ("corpus", "left"), ("model", "left"), ("params", "right"),
               ("steps", "right"), ("best val", "right"), ("elapsed", "right"),
               ("step-N.pt", "right"), ("run", "left"))
DROPPED_FIRST = ("step-N.pt", "params", "corpus", "updated", "elapsed", "model")


def _corpus_name(summary) -> str:
    """The training file's name, or ``folder (N files)`` for a run on several."""
    if not summary.corpus:
        return "?"
    files = len(summary.corpus_files or ())
    return Path(summary.corpus).name + (f" ({files} files)" if files > 1 else "")


def runs_table(summaries: list, width: int | None = None) -> Table:
    """A table of ``runs.RunSummary``s, the one with the lowest best val loss on each
    text marked (losses on different texts do not compare); no wider than ``width``
    characters when given (less useful columns left out)."""
    lowest: dict[tuple, float] = {}       # per text: the lowest best val loss
    for s in summaries:
        if s.best_val_loss is not None:
            text = (s.corpus, s.corpus_chars)
            lowest[text] = min(lowest.get(text, math.inf), s.best_val_loss)
    rows, styles = [], []
    for s in summaries:
        best = "?" if s.best_val_loss is None else f"{s.best_val_loss:.4f}"
        marked = s.best_val_loss is not None and s.best_val_loss == lowest[(s.corpus,
                                                                           s.corpus_chars)]
        rows.append((datetime.fromtimestamp(s.updated).strftime("%Y-%m-%d %H:%M"),
                     _corpus_name(s), s.model,
                     f"{s.parameters:,}" if s.parameters else "?",
                     f"{s.steps:,}" if s.steps is not None else "?",
                     f"{best}{' *' if marked else '  '}", duration(s.elapsed_s, "?", tenths=False),
                     f"{len(s.numbered_steps):,}" if s.numbered_steps else "-", str(s.path)))
        styles.append("bold" if marked else None)
    # Each column as wide as its widest cell, 2 spaces between: leave out columns until
    # the table fits.
    widths = [max(len(name), *(len(row[k]) for row in rows))
              for k, (name, _) in enumerate(RUN_COLUMNS)]
    keep = list(range(len(RUN_COLUMNS)))
    if not any(s.numbered_steps for s in summaries):   # the count of step-N.pt, only when any
        keep.remove([n for n, _ in RUN_COLUMNS].index("step-N.pt"))
    for name in DROPPED_FIRST:
        if width is None or sum(widths[k] + 2 for k in keep) - 2 <= width:
            break
        column = [n for n, _ in RUN_COLUMNS].index(name)
        if column in keep:
            keep.remove(column)
    table = Table(box=None, pad_edge=False, header_style="bold",
                  caption="* lowest best val loss (nats/char) on that text" if lowest else None,
                  caption_justify="left")
    for name, justify in (RUN_COLUMNS[k] for k in keep):
        table.add_column(name, justify=justify, no_wrap=name != "run",
                         overflow="fold" if name == "run" else "ellipsis")
    for row, style in zip(rows, styles):
        table.add_row(*(Text(row[k]) for k in keep), style=style)
    return table
