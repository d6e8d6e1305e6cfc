"""Options declared once: one flag per config setting (``SETTINGS``, given to a command
by ``with_settings``), the options several commands share, and shell completion.

A setting's flag takes its help and choices from the config dataclass and defaults to
None, so that only what the user typed overrides the ``--config`` file.
"""

from __future__ import annotations

import functools
import os
from inspect import Parameter, Signature, signature
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from charrnn import config as cfg

MODEL, DATA, OPTIM, BUDGET, RUN = "Model", "Data", "Optimiser", "Budget and logging", "Run"
# Panels of `charrnn --help`, one per kind of command.
USE, LOOK, SETUP = "Train and use a model", "Look inside and compare", "Data and settings"


def _opt(section: str, name: str, *flags: str, panel: str, **kwargs: Any):
    """A flag whose help and default come from the config dataclass; the flag itself
    defaults to None so that only what the user typed overrides the config."""
    flag = flags or (flag_name(name),)
    choices = cfg.choices_for(section, name)
    if choices:  # the shell completes the value too
        kwargs.setdefault("autocompletion",
                          lambda incomplete: [c for c in choices if c.startswith(incomplete)])
    return typer.Option(*flag, help=escape(cfg.help_for(section, name)), rich_help_panel=panel,
                        show_default=False, **kwargs)


# The flags of every setting in ModelConfig / TrainConfig that a command line may give:
# (section, name, type, help panel, flag names if not --name). `train` and `config show`
# take them all, `inspect` those that shape the recurrent stack (``with_settings``).
SETTINGS = (
    [("model", name, kind, MODEL, ()) for name, kind in (
        ("cell", str), ("nonlinearity", str))]
    + [("model", "embedding_dim", int, MODEL, ("--embedding-dim", "--input-size"))]
    + [("model", name, kind, MODEL, ()) for name, kind in (
        ("hidden_size", int), ("num_layers", int), ("dropout", float), ("proj_size", int))]
    + [("model", "tie_weights", bool, MODEL, ("--tie-weights/--no-tie-weights",)),
       ("model", "bidirectional", bool, MODEL, ("--bidirectional",))]
    + [("train", name, kind, DATA, ()) for name, kind in (
        ("seq_length", int), ("batch_size", int), ("batching", str), ("val_fraction", float),
        ("val_file", str), ("val_max_chars", int), ("cache_dir", str))]
    + [("train", name, kind, OPTIM, ()) for name, kind in (
        ("optimizer", str), ("lr", float), ("decay", str), ("min_lr_ratio", float),
        ("weight_decay", float), ("grad_clip", float), ("warmup_steps", int))]
    + [("train", name, kind, BUDGET, ()) for name, kind in (
        ("max_steps", int), ("epochs", float), ("max_time", float), ("eval_every", int),
        ("patience", int), ("sample_every", int))]
    + [("train", "tensorboard", bool, BUDGET, ("--tensorboard/--no-tensorboard",))]
    + [("train", name, kind, RUN, ()) for name, kind in (
        ("out", str), ("save_every", int), ("keep", int), ("seed", int), ("device", str),
        ("dtype", str), ("threads", int), ("size", str))]
)


def with_settings(*names: str):
    """Give the command one option per entry of SETTINGS (those ``names`` only, when
    given), after its own parameters; it receives what was typed as ``settings``:
    {section: {name: value or None}}."""
    chosen = [entry for entry in SETTINGS if not names or entry[1] in names]

    def decorate(command):
        own = [p for p in signature(command, eval_str=True).parameters.values()
               if p.name != "settings"]
        added = [Parameter(name, Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                     Optional[kind], _opt(section, name, *flags, panel=panel)])
                 for section, name, kind, panel, flags in chosen]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            settings: dict[str, dict[str, Any]] = {section: {} for section in cfg.SECTIONS}
            for section, name, *_ in chosen:
                settings[section][name] = values.pop(name)
            return command(settings=settings, **values)

        run.__signature__ = Signature(own + added)
        return run

    return decorate


# Options that several commands share, declared once.
# Where sample, inspect, plot and runs look for runs when given none: one option, and
# an environment variable for a session spent elsewhere.
RunsDir = Annotated[Path, typer.Option(
    "--runs-dir", envvar="CHARRNN_RUNS_DIR", help="Folder of run folders where the newest "
    "run is looked for when none is given (or set CHARRNN_RUNS_DIR).")]
RUNS = Path("runs")


def sample_runs_dir() -> Path:
    """Where ``sample`` and the other commands look for runs when given none."""
    return Path(os.environ.get("CHARRNN_RUNS_DIR") or RUNS)

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress bar or notes on stderr; only the result.")]
Device = Annotated[str, typer.Option(
    help="auto (a GPU when there is one), cpu, cuda or cuda:N.")]
Threads = Annotated[int, typer.Option(
    "--threads", min=0, max=4096, help="CPU threads to compute with (0: the fastest count for this "
    "model on this machine's present load, found by timing each).")]
ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="TOML file with \\[model] and \\[train] tables (see configs/); "
    "flags override it.", rich_help_panel=RUN)]
NewestRun = Annotated[Optional[Path], typer.Argument(
    help="Checkpoint file or run folder \\[default: best.pt of the newest run under "
         "--runs-dir]", show_default=False)]


def flag_name(name: str) -> str:
    """The flag of a setting: ``hidden_size`` is ``--hidden-size``."""
    return "--" + name.replace("_", "-")


def complete_corpus(incomplete: str) -> list[str]:
    from charrnn.download import CORPORA

    return [name for name in CORPORA if name.startswith(incomplete)]


def complete_text(incomplete: str) -> list[str]:
    """Corpus names, then the files and folders whose path starts with ``incomplete``."""
    import glob

    paths = sorted(p + os.sep if os.path.isdir(p) else p
                   for p in glob.glob(glob.escape(incomplete) + "*"))
    return complete_corpus(incomplete) + paths
