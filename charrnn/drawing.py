"""What the terminal views (``charrnn.views``) and the HTML pages (``charrnn.html_page``,
``charrnn.per_char``) draw alike: the colour of an activation or a probability, the ink
that reads on it, how a character is shown, and the headings of the neuron view. No
torch and no rich here: plain values in, plain values out.
"""

from __future__ import annotations

from charrnn.data import escape_char
from charrnn.reports import ActivationReport, NeuronRow, PredictionRow

# A diverging scale, as in Karpathy's pictures: negative red, zero near-white, positive blue.
NEGATIVE, NEUTRAL, POSITIVE = (214, 39, 40), (250, 250, 250), (31, 119, 180)
UNLIKELY, LIKELY = (214, 39, 40), (44, 160, 44)


def activation_rgb(value: float, scale: float = 1.0, negative: tuple[int, int, int] = NEGATIVE,
                   positive: tuple[int, int, int] = POSITIVE) -> tuple[int, int, int]:
    """The background colour of ``value`` on a scale from -``scale`` to +``scale``."""
    x = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    target = positive if x > 0 else negative
    return tuple(round(n + (t - n) * abs(x)) for n, t in zip(NEUTRAL, target))


def probability_rgb(p: float) -> tuple[int, int, int]:
    """Red for a character the model found unlikely, green for one it expected."""
    return activation_rgb(2 * p - 1, negative=UNLIKELY, positive=LIKELY)


def ink(rgb: tuple[int, int, int]) -> str:
    """Black or white text, whichever reads better on ``rgb``."""
    r, g, b = rgb
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def neuron_scale(neuron: NeuronRow) -> float:
    """Colours span -1..1 (tanh-bounded states), or the largest magnitude if beyond."""
    return max(1.0, abs(neuron["min"]), abs(neuron["max"]))


def glyph(ch: str) -> str:
    """How a character of the running text is drawn: newline and tab made visible."""
    if ch == "\n":
        return "↵"
    if ch == "\t":
        return "⇥"
    return ch if ch.isprintable() else "·"


def shown(ch: str | None) -> str:
    """A character in a table cell, or a dash for none."""
    return "—" if ch is None else escape_char(ch)


def activation_heading(report: ActivationReport) -> str:
    """One line: which states of which model over which text."""
    m = report["model"]
    size = f"{m['num_layers']}x{m['hidden_size']} {m['cell']}"
    if m.get("proj_size"):
        size += f" (proj_size {m['proj_size']})"
    text = f"{len(report['text']):,} characters"
    if report.get("source"):
        text += f" of {report['source']}"
    if report.get("truncated_from"):
        text += f" (first of {report['truncated_from']:,})"
    line = f"layer {report['layer']} {report['state_meaning']} · {size} · {text}"
    if report.get("bits_per_char") is not None:
        line += f" · {report['bits_per_char']:.3f} bits/char on this text"
    return line


def ranking_heading(report: ActivationReport) -> str:
    signal = report.get("signal")
    if report["ranked_by"] == "correlation":
        return (f"neurons ranked by |r|, the correlation with {signal['name']} "
                f"({signal['meaning']})")
    if report["ranked_by"] == "std":
        return "neurons ranked by how much they vary over the text (std); " \
               "--signal ranks by a signal instead"
    return "chosen neurons" + (f"; r = correlation with {signal['name']} ({signal['meaning']})"
                               if signal else "")


def neuron_heading(report: ActivationReport, neuron: NeuronRow) -> str:
    line = f"neuron {neuron['index']} of layer {report['layer']} {report['state']}"
    if neuron.get("r") is not None:
        line += f" · r {neuron['r']:+.2f} with {report['signal']['name']}"
    return line + f" · range [{neuron['min']:+.2f}, {neuron['max']:+.2f}]"


def prediction_rgbs(predictions: list[PredictionRow]) -> list[tuple[int, int, int]]:
    """Character t coloured by how likely the model found it after characters 0..t-1;
    the first one has no prediction and stays neutral."""
    return [NEUTRAL] + [probability_rgb(row["p_next"]) for row in predictions[:-1]]
