"""``charrnn train`` and ``charrnn config show``: the settings a run uses, and the run.

Both take every setting as a flag (``options.with_settings``) and resolve them the same
way (defaults < ``--config`` file < flags, ``config.resolve``); ``config show`` prints
what ``train`` would use instead of training.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn import config as cfg
from charrnn.cli.common import err, text_files
from charrnn.cli.options import (RUN, RUNS, ConfigFile, Json, Quiet, complete_text,
                                 sample_runs_dir, with_settings)
from charrnn.errors import ConfigError


# The arguments and options of `train` beside its settings (``with_settings``).
Texts = Annotated[Optional[list[Path]], typer.Argument(
    metavar="TEXT", help="UTF-8 text files, folders or quoted patterns to learn from, "
    "read as one text (optional with --resume).", show_default=False,
    autocompletion=complete_text)]
Resume = Annotated[Optional[Path], typer.Option(
    help="Continue a run exactly: its folder or a checkpoint in it.", rich_help_panel=RUN)]
InitFrom = Annotated[Optional[Path], typer.Option(
    help="Start from this checkpoint's weights (same model and vocabulary).",
    rich_help_panel=RUN)]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Let a new run replace the checkpoints and metrics of the run "
    "already in its --out folder.", rich_help_panel=RUN)]
RunsHere = Annotated[Path, typer.Option(
    "--runs-dir", envvar="CHARRNN_RUNS_DIR", help="Folder to make the run folder in, where "
    "sample and the other commands look for runs (or set CHARRNN_RUNS_DIR).",
    rich_help_panel=RUN)]
AllowChangedText = Annotated[bool, typer.Option(
    "--allow-changed-text", help="Let --resume go on with a text other than the one "
    "the run was trained on (its vocabulary must still hold every character).",
    rich_help_panel=RUN)]


@with_settings()
def train(text: Texts = None, config: ConfigFile = None, resume: Resume = None,
          init_from: InitFrom = None, overwrite: Overwrite = False,
          allow_changed_text: AllowChangedText = False, runs_dir: RunsHere = RUNS,
          quiet: Quiet = False, as_json: Json = False,
          settings: Optional[dict] = None) -> None:
    """Train a model on TEXT; checkpoints and metrics go to a run folder under runs/.

    TEXT is a UTF-8 file, or the name of a corpus fetched by charrnn download; several
    files, folders (their text files) and patterns such as 'books/*.txt' are joined
    into one text, a blank line between two files. The run folder is made under
    --runs-dir, unless --out names it."""
    from charrnn import views
    from charrnn.cli.runtime import STARTED
    from charrnn.resume import Origin
    from charrnn.train import train as run_training

    if quiet:     # only the result: no notes, no warnings
        warnings.simplefilter("ignore")
    origin = Origin.open(resume, init_from)
    model_config, train_config, free = cfg.resolve(config, settings,
                                                   origin.settings() if origin else None)
    if origin is not None and origin.changes(train_config) and not quiet:
        err.print(Text("resuming with changed training settings: "
                       + "; ".join(origin.changes(train_config))))
    paths = _texts(text, origin, quiet)
    if train_config.tensorboard:
        from charrnn.tblog import require

        require()
    result = run_training(paths, model_config, train_config,
                          resume=origin if resume else None,
                          init_from=origin if init_from else None, overwrite=overwrite,
                          allow_changed_text=allow_changed_text, progress=not quiet,
                          start_time=STARTED, runs_dir=runs_dir,
                          on_start=None if quiet else lambda info: views.render_train_start(
                              info, err), free=free)
    if result.rank == 0:  # under torchrun, rank 0 reports for the group
        if not quiet:     # the next command names the run unless sample finds it itself
            views.render_train_end(result.to_dict(), err, _sample_takes(result.run_dir))
        if as_json:
            print(json.dumps(result.to_dict()))


def _sample_takes(run_dir: Path) -> bool:
    """Whether ``charrnn sample`` with no run named takes this run: the newest one
    under where it looks (another run that saved since, beside it, would be taken)."""
    from charrnn.checkpoint import latest_checkpoint
    from charrnn.errors import CharRNNError

    try:
        return latest_checkpoint(sample_runs_dir()).parent.resolve() == run_dir.resolve()
    except (CharRNNError, OSError):
        return False


def _texts(text: list[Path] | None, origin, quiet: bool) -> list[Path]:
    """The files to train on: those TEXT names, else a resume's own."""
    if text:
        return text_files(text, quiet)
    if origin is not None and origin.resume:
        return origin.texts_to_read()
    raise ConfigError("give the TEXT file to train on, e.g. charrnn train input.txt")


@with_settings()
def config_show(
    config: ConfigFile = None,
    as_json: Json = False,
    settings: Optional[dict] = None,
) -> None:
    """Print the settings a train with the same --config and flags would use (defaults <
    --config file < flags) as TOML that --config reads: a dry run of the precedence."""
    model_config, train_config, free = cfg.resolve(config, settings)
    if as_json:   # what --size auto will choose: null
        model = {k: None if k in free else v for k, v in cfg.to_dict(model_config).items()}
        print(json.dumps({"model": model, "train": cfg.to_dict(train_config)}, indent=2))
    else:
        print(cfg.to_toml(model_config, train_config, free), end="")
