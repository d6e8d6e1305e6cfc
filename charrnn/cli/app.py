"""The ``charrnn`` app: the root options, and every command registered in the order
``charrnn --help`` lists them, each under its help panel with an example.

A command's flags and work live in its own module: ``train`` (and ``config show``),
``sample``, ``inspect``, ``eval``, ``export``, ``runs`` (and ``plot``), ``corpus``
(``download`` and ``prepare``). None of them imports torch at the top, so ``charrnn
--help`` answers at once.
"""

from __future__ import annotations

import os
from inspect import cleandoc
from typing import Annotated

import typer

from charrnn import __version__
from charrnn.cli import corpus, eval, export, inspect, runs, sample, train
from charrnn.cli.options import LOOK, SETUP, USE

HELP = ("Train a character-level RNN / LSTM / GRU on your own text, sample from it, and "
        "see exactly what PyTorch's recurrent modules compute.")
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(name="charrnn", help=HELP, no_args_is_help=True, add_completion=True,
                  pretty_exceptions_enable=False, context_settings=CONTEXT)


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")]
        = False,
        debug: Annotated[bool, typer.Option(
            "--debug", help="Show the Python traceback of an unexpected error (or set "
            "CHARRNN_DEBUG=1).")] = False) -> None:
    """Train a character-level RNN / LSTM / GRU on your own text, sample from it, and
    see exactly what PyTorch's recurrent modules compute."""
    if debug:
        os.environ["CHARRNN_DEBUG"] = "1"


def _help(command) -> str:
    """A command's docstring as its help: each paragraph one line, which the terminal
    then wraps at its own width (a line break kept from the source would break a
    sentence early on a narrow terminal)."""
    text = cleandoc(command.__doc__ or "")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


def _add(group: typer.Typer, command, example: str, name: str | None = None,
         **options) -> None:
    """Register ``command`` in ``group`` with its help and an example under it."""
    group.command(name, help=_help(command), epilog=f"Example: {example}", **options)(command)


_add(app, train.train, "charrnn train shakespeare.txt --cell lstm --max-time 300",
     rich_help_panel=USE)
_add(app, sample.sample, "charrnn sample --len 500 --prime 'ROMEO:' --temperature 0.8",
     rich_help_panel=USE)
_add(app, inspect.inspect, "charrnn inspect --cell rnn --input-size 10 --hidden-size 20 "
     "--num-layers 2 --seq-length 5 --batch-size 3 --no-batch-first --verify",
     rich_help_panel=LOOK)
_add(app, eval.eval_, "charrnn eval runs/<run> held_out.txt --json", "eval",
     rich_help_panel=USE)
_add(app, export.export, "charrnn export runs/<run> -o model.onnx", rich_help_panel=USE)
_add(app, runs.runs_, "charrnn runs --sort loss", "runs", rich_help_panel=LOOK)
_add(app, runs.plot, "charrnn plot runs/a runs/b -o loss.png", rich_help_panel=LOOK)
_add(app, corpus.download, "charrnn download tinyshakespeare --to data/",
     rich_help_panel=SETUP)
_add(app, corpus.prepare, "charrnn prepare big_corpus.txt", rich_help_panel=SETUP)

config_app = typer.Typer(help="See the settings a run would use.", no_args_is_help=True,
                         context_settings=CONTEXT)
app.add_typer(config_app, name="config", rich_help_panel=SETUP,
              epilog="Example: charrnn config show --config configs/tiny.toml")
_add(config_app, train.config_show,
     "charrnn config show --config configs/tiny.toml --lr 1e-3 > mine.toml", "show")
