"""The ``charrnn`` app: the root options, and every command registered in the order
``charrnn --help`` lists them, each under its help panel with an example.

A command's flags and work live in its own module: ``train`` (and ``config show``),
``sample``, ``inspect``, ``eval``, ``export``, ``runs`` (and ``plot``), ``corpus``
(``download`` and ``prepare``). None of them imports torch at the top, so ``charrnn
--help`` answers at once.
"""

from __future__ import annotations

import os
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


app.command(epilog="Example: charrnn train shakespeare.txt --cell lstm --max-time 300",
            rich_help_panel=USE)(train.train)
app.command(epilog="Example: charrnn sample --len 500 --prime 'ROMEO:' --temperature 0.8",
            rich_help_panel=USE)(sample.sample)
app.command(epilog="Example: charrnn inspect --cell rnn --input-size 10 --hidden-size 20 "
            "--num-layers 2 --seq-length 5 --batch-size 3 --no-batch-first --verify",
            rich_help_panel=LOOK)(inspect.inspect)
app.command("eval", epilog="Example: charrnn eval runs/<run> held_out.txt --json",
            rich_help_panel=USE)(eval.eval_)
app.command(epilog="Example: charrnn export runs/<run> -o model.onnx",
            rich_help_panel=USE)(export.export)
app.command("runs", epilog="Example: charrnn runs --sort loss", rich_help_panel=LOOK)(runs.runs_)
app.command(epilog="Example: charrnn plot runs/a runs/b -o loss.png",
            rich_help_panel=LOOK)(runs.plot)
app.command(epilog="Example: charrnn download tinyshakespeare --to data/",
            rich_help_panel=SETUP)(corpus.download)
app.command(epilog="Example: charrnn prepare big_corpus.txt", rich_help_panel=SETUP)(
    corpus.prepare)

config_app = typer.Typer(help="See the settings a run would use.", no_args_is_help=True,
                         context_settings=CONTEXT)
app.add_typer(config_app, name="config", rich_help_panel=SETUP,
              epilog="Example: charrnn config show --config configs/tiny.toml")
config_app.command("show", epilog="Example: charrnn config show --config configs/tiny.toml "
                   "--lr 1e-3 > mine.toml")(train.config_show)
