"""``charrnn train`` and ``charrnn config show``: the settings a run uses, and the run.

Both take every setting as a flag (``options.with_settings``) and resolve them the same
way (defaults < ``--config`` file < flags, ``config.resolve``); ``config show`` prints
what ``train`` would use instead of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn import config as cfg
from charrnn.cli.common import err, text_files
from charrnn.cli.options import RUN, RUNS, ConfigFile, Json, Quiet, complete_text, with_settings
from charrnn.errors import ConfigError


@with_settings()
def train(
    text: Annotated[Optional[list[Path]], typer.Argument(
        metavar="TEXT", help="UTF-8 text files, folders or quoted patterns to learn from, "
        "read as one text (optional with --resume).", show_default=False,
        autocompletion=complete_text)] = None,
    config: ConfigFile = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue a run exactly: its folder or a checkpoint in it.",
        rich_help_panel=RUN)] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        help="Start from this checkpoint's weights (same model and vocabulary).",
        rich_help_panel=RUN)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Let a new run replace the checkpoints and metrics of the run "
        "already in its --out folder.", rich_help_panel=RUN)] = False,
    allow_changed_text: Annotated[bool, typer.Option(
        "--allow-changed-text", help="Let --resume go on with a text other than the one "
        "the run was trained on (its vocabulary must still hold every character).",
        rich_help_panel=RUN)] = False,
    quiet: Quiet = False,
    as_json: Json = False,
    settings: Optional[dict] = None,
) -> None:
    """Train a model on TEXT; checkpoints and metrics go to a run folder under runs/.

    TEXT is a UTF-8 file, or the name of a corpus fetched by charrnn download; several
    files, folders (their text files) and patterns such as 'books/*.txt' are joined
    into one text, a blank line between two files."""
    from charrnn import views
    from charrnn.cli.runtime import STARTED
    from charrnn.train import Origin
    from charrnn.train import train as run_training

    origin = Origin.open(resume, init_from)
    model_config, train_config, free = cfg.resolve(config, settings,
                                                   origin.settings() if origin else None)
    if origin is not None and origin.changes(train_config):
        err.print(Text("resuming with changed training settings: "
                       + "; ".join(origin.changes(train_config))))
    paths = (text_files(text, quiet) if text else
             origin.texts if origin is not None and origin.resume else None)
    if not paths:
        raise ConfigError("give the TEXT file to train on, e.g. charrnn train input.txt")
    if train_config.tensorboard:
        from charrnn.tblog import require

        require()
    result = run_training(paths, model_config, train_config,
                          resume=origin if resume else None,
                          init_from=origin if init_from else None, overwrite=overwrite,
                          allow_changed_text=allow_changed_text, progress=not quiet,
                          start_time=STARTED,
                          on_start=None if quiet else lambda info: views.render_train_start(
                              info, err), free=free)
    if result.rank == 0:  # under torchrun, rank 0 reports for the group
        views.render_train_end(result.to_dict(), err, RUNS)
        if as_json:
            print(json.dumps(result.to_dict()))


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
