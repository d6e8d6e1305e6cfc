"""Where a run starts from, and what a resume keeps: the resume policy.

``Origin`` is the checkpoint a run starts from: a run continued exactly (``--resume``,
from its ``last.pt``) or a new run that starts from a checkpoint's weights
(``--init-from``, from its ``best.pt``). What each carries over: the model's settings
always; a resume's training settings too, except its folder and thread count, and
flags override them. A resume reads the text it was trained on (``check_text``) and
never takes its folder back to an older step unasked (``check_not_rewound``); the
model's settings cannot change (``check_same_model``). A resume that changes the
budget or the schedule decays the learning rate afresh from where it is
(``schedule_after``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn import config as cfg
from charrnn import corpus, files
from charrnn.checkpoint import (load_checkpoint, model_from_checkpoint, peek_checkpoint,
                                resolve_checkpoint)
from charrnn.errors import CheckpointError, ConfigError, DataError
from charrnn.optim import SCHEDULE_SETTINGS

# What a checkpoint needs, beyond the model, to be resumed.
RESUME_KEYS = ("optimizer_state", "data_state", "rng", "step", "elapsed", "best_val_loss",
               "metrics")


@dataclass
class Origin:
    """The checkpoint a run starts from: continued exactly (``resume``), or whose
    weights start a new run (``init_from``)."""
    path: Path
    checkpoint: dict[str, Any]
    resume: bool

    @classmethod
    def open(cls, resume: str | Path | None = None, init_from: str | Path | None = None
             ) -> Origin | None:
        """Load the checkpoint a run folder or file names: a resume continues from the
        latest state (last.pt), new weights come from the best (best.pt)."""
        if resume is not None and init_from is not None:
            raise ConfigError("--resume and --init-from exclude each other; give one")
        if resume is None and init_from is None:
            return None
        path = resolve_checkpoint(resume or init_from,
                                  name=files.LAST if resume is not None else files.BEST)
        ckpt = load_checkpoint(path)
        model_from_checkpoint(ckpt, path)   # the checks that sample, eval and inspect make
        if resume is not None:
            missing = [key for key in RESUME_KEYS if key not in ckpt]
            try:
                cfg.build("train", ckpt["train_config"])
            except ConfigError as e:
                missing.append(f"valid training settings ({e})")
            if missing:
                raise CheckpointError(f"{path} cannot be resumed: it has no {', '.join(missing)}"
                                      f"; start a new run from its weights with --init-from "
                                      f"{path}")
        return cls(path, ckpt, resume is not None)

    def settings(self) -> dict[str, dict[str, Any]]:
        """The settings the run inherits (flags and a --config file override them): the
        model's always; a resume's training settings too, except its folder."""
        train = ({k: v for k, v in self.checkpoint["train_config"].items()
                  if k not in ("out", "threads")} if self.resume else {})   # (the machine's)
        return {"model": dict(self.checkpoint["model_config"]), "train": train}

    def changes(self, train_config: cfg.TrainConfig) -> list[str]:
        """The training settings a resume changes, as ``name old -> new``."""
        return cfg.changes(self.checkpoint["train_config"], train_config,
                           ignore=("out", "cache_dir", "threads", "size")) if self.resume else []

    @property
    def text(self) -> Path | None:
        """The training text of a run on one file. Checkpoints name it by its absolute
        path; one relative path (older checkpoints) is also looked for beside the runs
        folder."""
        saved = (self.checkpoint.get("corpus") or {}).get("path")
        if not saved:
            return None
        path = Path(saved)
        beside = self.path.parent.parent.parent / path     # runs/<run>/last.pt -> ./
        return beside if not path.exists() and beside.exists() else path

    @property
    def texts(self) -> list[Path] | None:
        """The training files of the run, in order (``corpus.Texts.record``)."""
        paths = (self.checkpoint.get("corpus") or {}).get("paths")
        if isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths):
            return [Path(p) for p in paths]
        return None if self.text is None else [self.text]

    def texts_to_read(self) -> list[Path]:
        """The training files a resume named no text for: the run's own, where they
        still are; a one-line ``DataError`` saying how to go on when one is gone."""
        saved = self.texts
        if not saved:
            raise ConfigError("give the TEXT file to train on, e.g. charrnn train input.txt "
                              f"--resume {self.path.parent}")
        gone = [path for path in saved if not path.exists()]
        if gone:
            run = self.path.parent
            raise DataError(f"the training text {gone[0]} of {run} is gone (moved or removed"
                            f"{f', with {len(gone) - 1} more' if len(gone) > 1 else ''}); if it "
                            f"moved, name its new place: charrnn train NEW_PLACE --resume {run}; "
                            f"to go on with another text: charrnn train OTHER_TEXT --resume {run}"
                            " --allow-changed-text")
        return saved

    def check_text(self, texts: corpus.Texts, allow_changed: bool) -> None:
        """A resume reads the text it was trained on, unless the user allows another."""
        saved = self.checkpoint.get("corpus") or {}
        if not self.resume or allow_changed or saved.get("sha256") in (None, texts.sha256):
            return
        change = (f"{saved.get('chars', 0):,} -> {texts.chars:,} characters, sha256 "
                  f"{saved['sha256'][:12]}... -> {texts.sha256[:12]}...")
        if len(texts.scans) == 1 and "paths" not in saved:
            raise DataError(f"the training text {texts.paths[0]} is not the one {self.path} "
                            f"was trained on ({change}); resume with that text, or pass "
                            "--allow-changed-text to go on with this one")
        raise DataError(f"the training text ({texts.label}) is not the one {self.path} was "
                        f"trained on ({corpus.what_changed(saved, texts)}; {change}); resume "
                        "with that text, or pass --allow-changed-text to go on with this one")


def check_not_rewound(origin: Origin, run_dir: Path) -> None:
    """A resume from a checkpoint older than the run's last.pt (a step-N.pt) would
    replace what came after it, best.pt included: only when asked."""
    step = origin.checkpoint.get("step")
    if origin.path.name == files.LAST or not isinstance(step, int):
        return            # (a damaged step is reported with the rest of the state)
    last = peek_checkpoint(run_dir / files.LAST)
    later = last.get("step") if last else None
    if isinstance(later, int) and later > step:
        raise ConfigError(f"resuming {origin.path} would take {run_dir} back from step "
                          f"{later} to step {step} and replace its later checkpoints and "
                          f"metrics (best.pt too); continue it in a new folder with --out "
                          f"DIR, or pass --overwrite to go back")


def check_same_model(saved: dict, current: cfg.ModelConfig, source: str) -> None:
    diffs = cfg.changes(saved, current)
    if diffs:
        raise ConfigError(f"model settings differ from {source}: {'; '.join(diffs)}; "
                          "drop those flags (the checkpoint fixes the model)")


def schedule_after(ckpt: dict[str, Any], c: cfg.TrainConfig, step: int,
                   lr_now: float) -> dict[str, Any] | None:
    """Where the learning-rate decay of a resumed run starts (``RunState.decay_from``):
    as saved; but a new budget or schedule decays afresh from here, from the rate the
    run had reached (or from the new --lr, or from lr once warmup is over)."""
    decay_from = ckpt.get("schedule")
    if "schedule" not in ckpt and step >= c.warmup_steps:
        decay_from = {"start": 0.0, "start_lr": c.lr}  # saved before schedules were
    if cfg.changes(ckpt["train_config"], c, ignore=tuple(
            k for k in cfg.fields_of("train") if k not in SCHEDULE_SETTINGS)):
        same_lr = ckpt["train_config"].get("lr") == c.lr
        decay_from = {"start": None, "start_lr": lr_now if same_lr and step >= c.warmup_steps
                      else c.lr}
    return decay_from
