"""``charrnn runs`` and ``charrnn plot``: the runs so far, as a table or as loss curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn.cli.common import err, product_console
from charrnn.cli.options import RUNS, Json, RunsDir
from charrnn.errors import CharRNNError


def runs_(
    folder: Annotated[Optional[Path], typer.Argument(
        help="Folder that holds run folders, or one run folder \\[default: --runs-dir].",
        show_default=False)] = None,
    runs_dir: RunsDir = RUNS,
    sort: Annotated[str, typer.Option(
        help="time: newest first; loss: lowest best val loss first.")] = "time",
    as_json: Json = False,
) -> None:
    """List training runs with their corpus, model, steps, best val loss and time.

    Newest first. The table goes to stdout; --json gives the same facts to scripts."""
    from charrnn import views
    from charrnn.runs import list_runs

    folder = folder or runs_dir
    summaries = list_runs(folder, sort)
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    elif not summaries:
        err.print(Text(f"no runs under {folder} yet; start one with: charrnn train TEXT"))
    else:
        # A terminal gets a table that fits it; a pipe or a file gets every column whole.
        with product_console() as out:
            out.print(views.runs_table(summaries, width=out.width if out.is_terminal
                                       else None))


def plot(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="RUN", help="Run folders (or their metrics.csv) to draw together; a folder "
        "of runs draws each of its runs with evaluations \\[default: the newest run under "
        "--runs-dir].", show_default=False)] = None,
    runs_dir: RunsDir = RUNS,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Image to write: .png, .svg or .pdf.")] = Path("loss.png"),
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 1200,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 500,
    title: Annotated[Optional[str], typer.Option(help="Title above the two panels.")] = None,
) -> None:
    """Draw train and val loss against steps and seconds, several runs overlaid.

    Needs matplotlib: pip install 'charrnn-cli\\[plot]'."""
    from charrnn.plot import plot_runs
    from charrnn.files import read_metrics

    if not run_dirs:
        # The newest run with an evaluation to draw (a run that diverged has none).
        newest = _evaluated(runs_dir) if runs_dir.is_dir() else []
        if not newest:
            raise CharRNNError(f"no run under {runs_dir}/ has evaluations to plot yet; give "
                               f"run folders, e.g. charrnn plot {runs_dir}/<run>")
        run_dirs = [newest[0]]
    run_dirs = [run for path in run_dirs for run in _runs_in(path)]
    names = [p.parent.name if p.is_file() else p.name for p in run_dirs]
    labels = [str(p) if names.count(n) > 1 else n for p, n in zip(run_dirs, names)]
    runs = [(label, read_metrics(p)) for label, p in zip(labels, run_dirs)]
    path = plot_runs(runs, output, width=width, height=height, title=title)
    err.print(Text(f"wrote {path} ({width}x{height} pixels; {len(runs)} run(s))"))


def _runs_in(path: Path) -> list[Path]:
    """A run folder or metrics.csv as given; a folder of runs as those of its runs that
    have evaluations, in the order they ran."""
    from charrnn.files import is_run

    if not path.is_dir() or is_run(path) or not any(is_run(p) for p in path.iterdir()):
        return [path]
    runs = _evaluated(path)[::-1]
    if not runs:
        raise CharRNNError(f"no run in {path} has evaluations to plot yet; let one train "
                           "to its first evaluation (--eval-every)")
    return runs


def _evaluated(folder: Path) -> list[Path]:
    """The runs in ``folder`` that have an evaluation to draw, newest first."""
    from charrnn.runs import list_runs

    return [Path(s.path) for s in list_runs(folder) if s.evaluations]
