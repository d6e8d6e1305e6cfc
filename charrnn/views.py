"""Rich renderings of the reports in ``charrnn.inspect``, for the CLI.

``render_inspect(report, console)`` draws what ``inspect.describe`` returns and
``render_checkpoint(info, console)`` what ``inspect.describe_checkpoint`` returns, onto a
``rich.console.Console`` the caller chooses (the CLI passes one on stderr). Every piece of
text goes in as ``Text``, so a character like ``[`` in a vocabulary is never read as
markup. No torch here: the reports are plain dicts.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

# At most this many rows of the metrics history are shown (evenly spaced, last included).
MAX_METRIC_ROWS = 12

# Metric columns in this order first, then any other keys as they come.
METRIC_ORDER = ("step", "elapsed", "train_loss", "val_loss", "chars_per_s")


# ----------------------------------------------------------------------------- inspect

def render_inspect(report: dict[str, Any], console: Console) -> None:
    """Parameters, totals, tensor shapes, notes and the reference check of a model."""
    console.print(_model_title(report.get("model", {})))
    console.print(_parameter_table(report))
    console.print(_totals(report))
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


def _model_title(model: dict[str, Any]) -> Text:
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


def _parameter_table(report: dict[str, Any]) -> Table:
    table = Table(title="parameters", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    table.add_column("name", style="cyan", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("numel", justify="right", no_wrap=True)
    table.add_column("role · init", overflow="fold", ratio=1)
    for p in report.get("parameters", []):
        role = Text(p.get("role", ""))
        if p.get("init"):
            role.append("\ninit " + p["init"], style="dim")
        table.add_row(Text(p["name"]), Text(_shape(p["shape"])), Text(f"{p['numel']:,}"),
                      role)
    return table


def _totals(report: dict[str, Any]) -> Text:
    text = Text.assemble(("total ", "bold"),
                         (f"{report.get('num_parameters', 0):,}", "bold"), " parameters")
    per_layer = report.get("num_parameters_per_layer") or {}
    if per_layer:
        text.append(" (" + " · ".join(f"{k} {v:,}" for k, v in per_layer.items()) + ")")
    return text


def _tensor_table(report: dict[str, Any]) -> Table:
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


def _verify_line(report: dict[str, Any]) -> Text:
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


# ----------------------------------------------------------------------------- checkpoint

def render_checkpoint(info: dict[str, Any], console: Console) -> None:
    """Vocabulary, settings, progress, losses and the metrics history of a checkpoint."""
    console.print(_checkpoint_summary(info))
    config = _config_table(info.get("model_config") or {}, info.get("train_config") or {})
    if config.row_count:
        console.print(config)
    metrics = info.get("metrics") or []
    if metrics:
        console.print(_metrics_table(metrics))


def _checkpoint_summary(info: dict[str, Any]) -> Group:
    lines = []
    head = Text.assemble(("checkpoint ", "bold"),
                         f"step {_value(info.get('step'))} · "
                         f"elapsed {_duration(info.get('elapsed'))}")
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
        text.append(str(corpus.get("path", "?")))
        if corpus.get("chars") is not None:
            text.append(f" ({_value(corpus['chars'])} characters)")
        lines.append(text)

    vocab = info.get("vocab")
    if vocab:
        text = Text(f"vocab   {vocab.get('size')} characters: ", style="bold")
        text.append(" ".join(vocab.get("chars", [])), style="")
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


def _metrics_table(rows: list[dict[str, Any]]) -> Table:
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
        return _duration(value)
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


def _duration(seconds: Any) -> str:
    """``42.0s``, ``3m 05s``, ``1h 02m``."""
    if not isinstance(seconds, (int, float)):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
