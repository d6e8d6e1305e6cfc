"""``charrnn export``: the model as ONNX, TorchScript or a web page (``charrnn.export``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn.cli.common import err, say_which
from charrnn.cli.options import RUNS, Json, NewestRun, RunsDir


def export(
    checkpoint: NewestRun = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="File to write; a name ending in .onnx, .ts (TorchScript) or "
        ".html sets the format.", show_default=False)] = ...,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="onnx, torchscript or html \\[default: from the file name].",
        show_default=False)] = None,
    runs_dir: RunsDir = RUNS,
    as_json: Json = False,
) -> None:
    """Write the model for programs without charrnn: ONNX, TorchScript, or a web page.

    ONNX and TorchScript take ids (batch, time) and the state h (and c for an LSTM), and
    give logits and the new state; the vocabulary travels inside. Each is run by its
    runtime and checked against the model before it is written. The web page generates
    text in the browser by itself, with no network."""
    from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from charrnn.export import export as export_model
    from charrnn.export import format_for
    from charrnn.files import check_output

    chosen = format_for(output, fmt)
    check_output(output, "--output")
    path = resolve_checkpoint(checkpoint, runs_dir)
    ckpt = load_checkpoint(path)
    model, vocab = model_from_checkpoint(ckpt, path)
    say_which(checkpoint, "exporting", path)
    result = export_model(model, vocab, ckpt, output, chosen)
    if as_json:
        print(json.dumps(dict(path=str(result.path), format=result.format, bytes=result.bytes,
                              max_difference=result.max_difference,
                              float32_rounding=result.rounding,
                              checked_with=result.checked_with)))
        return
    checked = ("open it in a browser (?len=300&run=1 after its name generates at once)"
               if result.max_difference is None
               else f"run by {result.checked_with}, its outputs equal the model's within "
               f"{result.max_difference:.1e} (torch's own float32 rounding there: "
               f"{result.rounding:.1e})")
    err.print(Text(f"wrote {result.path} ({result.format}, {result.bytes / 1e6:.2f} MB); "
                   f"{checked}"))

