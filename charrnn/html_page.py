"""The activation view as one self-contained HTML page, to open in a browser or share.

``page(report)`` returns the HTML of what ``activations.activation_report`` returns: for
every chosen neuron the text with each character on a background coloured by the
neuron's activation there (hover a character for the value), and the text coloured by
the probability the model gave each character, with its likeliest guesses on hover.
Colours come from ``charrnn.views``, so the page and the terminal agree. No scripts, no
external files. ``write_page(report, path)`` writes it; a path that cannot be written is
a ``ConfigError``. The pieces (``head``, ``coloured_spans``, ``prediction_tip``, ``TAIL``)
also draw the page of ``charrnn eval --html`` (``charrnn.per_char``), a piece at a time.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from charrnn import drawing
from charrnn.errors import ConfigError
from charrnn.files import atomic_write, check_output
from charrnn.reports import ActivationReport, PredictionRow

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222; background: #fff; max-width: 1100px; }
h1 { font-size: 19px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 22px 0 6px; }
p.meta { color: #555; margin: 2px 0; font-size: 13px; }
.text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
        font-size: 13px; line-height: 1.55; white-space: pre-wrap; word-break: break-all;
        border: 1px solid #ddd; padding: 8px 10px; border-radius: 4px; }
.legend span { display: inline-block; padding: 0 8px; font-size: 12px;
               font-family: ui-monospace, monospace; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
th { border-bottom: 1px solid #aaa; }
.gap { color: #888; background: #eee; }
"""


def page(report: ActivationReport, *, title: str = "charrnn activations") -> str:
    """The whole page as a string."""
    parts = [
        head(title, [drawing.activation_heading(report)]),
        f"<h2>{escape(drawing.ranking_heading(report))}</h2>",
        _ranking_table(report),
        _legend(),
    ]
    for neuron in report["neurons"]:
        scale = drawing.neuron_scale(neuron)
        cells = [(drawing.activation_rgb(v, scale), f"{v:+.3f}") for v in neuron["values"]]
        parts.append(f"<h2>{escape(drawing.neuron_heading(report, neuron))}</h2>")
        parts.append(_coloured_text(report["text"], cells))
    parts.append("<h2>predictions: each character coloured by the probability the model "
                 "gave it (red unlikely, green expected); hover for its top guesses</h2>")
    parts.append(_coloured_text(report["text"], _prediction_cells(report["predictions"])))
    parts.append(TAIL)
    return "\n".join(parts) + "\n"


TAIL = "</body></html>"


def head(title: str, meta: list[str]) -> str:
    """The page's start, up to its title and the lines of ``meta`` under it (plain
    text, escaped here); ``TAIL`` ends it."""
    return "\n".join(["<!doctype html>",
                      '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{escape(title)}</title>",
                      f"<style>{STYLE}</style></head><body>",
                      f"<h1>{escape(title)}</h1>",
                      *(f'<p class="meta">{escape(line)}</p>' for line in meta)])


def check_path(path: str | Path) -> Path:
    """``path`` if a page can be written there; else a ``ConfigError`` saying why."""
    if str(path) == "-":
        raise ConfigError("--html writes a file, not stdout; give its name, e.g. "
                          "--html page.html")
    return check_output(path, "--html")


def write_page(report: ActivationReport, path: str | Path, **kwargs: Any) -> Path:
    """Write ``page(report)`` to ``path`` (UTF-8), whole or not at all."""
    path = check_path(path)
    with atomic_write(path, what="the HTML page ", error=ConfigError,
                      fix="give a path in an existing, writable folder") as f:
        f.write(page(report, **kwargs).encode("utf-8"))
    return path


def _ranking_table(report: ActivationReport) -> str:
    head = "".join(f"<th>{name}</th>"
                   for name in ("rank", "neuron", "r", "mean", "std", "min", "max"))
    rows = []
    for rank, n in enumerate(report["neurons"], start=1):
        r = "—" if n.get("r") is None else f"{n['r']:+.3f}"
        cells = [str(rank), str(n["index"]), r] + [f"{n[k]:+.3f}"
                                                   for k in ("mean", "std", "min", "max")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _legend() -> str:
    spans = "".join(span(f"{v:+.1f}", drawing.activation_rgb(v), None)
                    for v in (-1.0, -0.5, 0.0, 0.5, 1.0))
    return f'<p class="legend">colour: {spans}</p>'


def _prediction_cells(predictions: list[PredictionRow]) -> list[tuple[tuple, str]]:
    """Colours of ``drawing.prediction_rgbs`` with the model's guesses as hover text."""
    tips = [FIRST_TIP]
    for row in predictions[:-1]:
        tips.append(prediction_tip(row["next"], row["p_next"], row["top"]))
    return list(zip(drawing.prediction_rgbs(predictions), tips))


FIRST_TIP = "first character: no prediction"


def prediction_tip(char: str, p: float, top: list, note: str = "") -> str:
    """The hover text of a predicted character: the probability the model gave it (then
    ``note``) and its likeliest guesses, ``top`` as [character, probability] pairs."""
    guesses = ", ".join(f"{drawing.shown(ch)} {q:.2f}" for ch, q in top)
    return f"p({drawing.shown(char)}) = {p:.3f}{note}; top: {guesses}"


def _coloured_text(text: str, cells: list[tuple[tuple, str]]) -> str:
    return f'{TEXT_START}{coloured_spans(text, cells)}{TEXT_END}'


TEXT_START, TEXT_END = '<div class="text">', "</div>"


def coloured_spans(text: str, cells: list[tuple[tuple, str | None]]) -> str:
    """The characters of ``text`` as spans on their cells' (colour, hover text), a line
    break after each newline: a piece of a block between ``TEXT_START`` and ``TEXT_END``
    (so a long text can be written a piece at a time)."""
    return "".join(span(drawing.glyph(ch), rgb, tip) + ("\n" if ch == "\n" else "")
                   for ch, (rgb, tip) in zip(text, cells))


def gap(count: int) -> str:
    """A mark where ``count`` characters of the text are left out (not scored)."""
    return (f'<span class="gap" title="{count:,} character(s) not scored here">'
            f'{escape(" … ")}</span>')


def span(content: str, rgb: tuple[int, int, int], tip: str | None) -> str:
    style = f"background:#{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x};color:{drawing.ink(rgb)}"
    title = f' title="{escape(tip)}"' if tip else ""
    return f'<span style="{style}"{title}>{escape(content)}</span>'
