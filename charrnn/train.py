"""The training run: ``train(text, model_config, train_config) -> RunResult``.

Reads in the order it runs. ``Run`` gathers what one session trains with (the texts'
ids and batches, the model and optimiser, restored from a checkpoint when resuming)
and does the three things the loop asks of it: a step, an evaluation (which saves the
checkpoints and the metrics row), a checkpoint. ``RunState`` is how far the run has
come (what a checkpoint needs beyond the weights); ``Budget`` turns steps, epochs and
seconds into one progress number. ``_train`` is the loop.

The run folder's files are described in ``charrnn.files``. SIGINT and SIGTERM finish
the current step, save ``last.pt`` and raise ``TrainingInterrupted``. ``--save-every``
keeps numbered checkpoints beside last.pt (``Run.save_numbered``); ``--patience`` ends
the run early, normally, once that many evaluations in a row brought no new best.
"""

from __future__ import annotations

import io
import math
import signal
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from charrnn import config as cfg
from charrnn import corpus, distributed, files, fitting, threads
from charrnn.fitting import forward_backward, synced, timed
from charrnn.checkpoint import (load_checkpoint, model_from_checkpoint, peek_checkpoint,
                                resolve_checkpoint, save_checkpoint)
from charrnn.data import Vocab, make_batches, split
from charrnn.device import (autocast, check_dtype, check_fits, resolve_device, resolve_dtype,
                            to_device)
from charrnn.errors import (CharRNNError, CheckpointError, ConfigError, DataError,
                            TrainingInterrupted)
from charrnn.model import CharRNN, Hidden, detach_hidden, parameter_count, training_bytes
from charrnn.optim import SCHEDULE_SETTINGS, lr_at, make_optimizer
from charrnn.sample import generate
from charrnn.scoring import LN2, Stopped, nats_sum, stream_plan

CPU = torch.device("cpu")
# What a checkpoint needs, beyond the model, to be resumed.
RESUME_KEYS = ("optimizer_state", "data_state", "rng", "step", "elapsed", "best_val_loss",
               "metrics")


@dataclass
class RunResult:
    run_dir: Path
    step: int
    elapsed: float
    best_val_loss: float
    val_loss: float
    chars_per_s: float
    first_step_s: float  # seconds from the start of ``train`` to the end of the first step
    rank: int = 0        # of this process, under torchrun
    stopped_early: bool = False     # by --patience
    best_step: int | None = None    # of the evaluation with the lowest val loss
    numbered: list[Path] = field(default_factory=list)   # the step-N.pt files kept
    dtype: str = "float32"          # the precision it trained in ("auto" resolved)
    threads: int = 0                # CPU threads at the end (0: not known)
    size: dict[str, Any] | None = None   # what --size auto timed and chose

    def to_dict(self) -> dict[str, Any]:
        """The end of a run for scripts (JSON has no NaN: a missing number is null)."""
        def number(x: float, digits: int | None = None) -> float | None:
            if not math.isfinite(x):
                return None
            return x if digits is None else round(x, digits)

        return {"run_dir": str(self.run_dir), "step": self.step,
                "elapsed_s": number(self.elapsed, 3), "first_step_s": number(self.first_step_s, 3),
                "val_loss": number(self.val_loss), "val_bpc": number(self.val_loss / LN2),
                "best_val_loss": number(self.best_val_loss),
                "best_val_bpc": number(self.best_val_loss / LN2),
                "chars_per_s": number(self.chars_per_s, 1),
                "stopped_early": self.stopped_early, "best_step": self.best_step,
                "dtype": self.dtype, "threads": self.threads, "size": self.size,
                "best": str(self.run_dir / files.BEST), "last": str(self.run_dir / files.LAST),
                "numbered": [str(path) for path in self.numbered]}


# --------------------------------------------------------------- where a run starts from
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


# ------------------------------------------------------------------ budget and state
class Budget:
    """``--max-steps``, ``--epochs`` and ``--max-time`` as one number: the progress of
    the run from 0 to 1, the largest fraction of any of them used up."""

    def __init__(self, c: cfg.TrainConfig, steps_per_epoch: float) -> None:
        self.steps, self.epochs, self.seconds = c.budget_steps(), c.epochs, c.max_time
        limits = [self.steps] if self.steps else []
        if self.epochs:
            limits.append(math.ceil(self.epochs * steps_per_epoch))
        self.total_steps = min(limits) if limits else None  # None: a time budget only

    def progress(self, step: int, epoch: float, seconds: float) -> float:
        fractions = [step / self.steps if self.steps else 0.0,
                     epoch / self.epochs if self.epochs else 0.0]
        if self.seconds:
            fractions.append(seconds / self.seconds)
        return max(fractions)

    def __str__(self) -> str:
        parts = [f"{self.steps} steps" if self.steps else "",
                 f"{self.epochs:g} epochs" if self.epochs else "",
                 f"{self.seconds:g}s" if self.seconds else ""]
        return " or ".join(p for p in parts if p)


class Reserve:
    """The seconds a time budget keeps free: for the next step, and for the final
    evaluation (a validation pass and the saves of best.pt and last.pt). Measured on
    the warm model before the first step, then corrected as real steps and passes are
    timed, so that a run ends within its budget on a busy machine too: when the steps
    have become slower than they were when the pass was timed (another job took a
    core), the pass is expected to be that much slower too."""
    MARGIN = 1.25   # on the first estimate of a pass; 1.1 on a timed one

    def __init__(self, step: float, score: float, save: float) -> None:
        self.steps: deque[float] = deque([step], maxlen=8)   # the latest steps' seconds
        self.score, self.save = self.MARGIN * score, save
        self.step_then = step          # the step time when ``score`` was measured

    def evaluated(self, score: float, save: float) -> None:
        """A real pass took ``score`` seconds and each checkpoint ``save``."""
        self.score, self.save = 1.1 * score, save
        self.step_then = statistics.median(self.steps)

    def seconds(self) -> float:
        slower = max(1.0, statistics.median(self.steps) / max(self.step_then, 1e-6))
        return max(self.steps) + slower * self.score + 2 * self.save

    def check_fits(self, budget: float, before: float, elapsed: float) -> None:
        """A budget that earlier sessions have not spent, but that cannot hold this
        session's start-up, one step and the final evaluation, is refused before
        training (one that earlier sessions spent has nothing to train)."""
        need = self.seconds()
        if before < budget < elapsed + need:
            raise ConfigError(
                f"--max-time {budget:g} leaves no time to train: {elapsed:.1f}s are spent "
                f"(start-up and earlier sessions), one step takes about {max(self.steps):.2f}s "
                f"and the final validation about {self.score + 2 * self.save:.1f}s; give "
                f"--max-time {math.ceil(elapsed + need)} or more, or score fewer validation "
                "characters with --val-max-chars")


@dataclass
class RunState:
    """How far a run has come: with the weights, the optimiser and the batches'
    position, what a checkpoint holds to continue exactly and what the run reports."""
    step: int = 0
    elapsed_before: float = 0.0          # seconds spent in earlier sessions
    best_val: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)   # the metrics.csv rows
    loss_sum: float = 0.0                # training loss summed since the last evaluation
    loss_count: int = 0
    hidden: Hidden | None = None         # carried from window to window
    decay_from: dict[str, Any] | None = None  # {"start", "start_lr"} once warmup is over
    # This session only: when it started; training time and characters (not counting
    # evaluations) since the last evaluation and in all.
    started: float = field(default_factory=time.time)
    window_seconds: float = 0.0
    window_chars: int = 0
    session_seconds: float = 0.0
    session_chars: int = 0
    first_step_s: float = math.nan

    @property
    def val_loss(self) -> float:
        return self.history[-1]["val_loss"] if self.history else math.nan

    @property
    def evaluated(self) -> bool:
        """Whether the latest step has been evaluated."""
        return bool(self.history) and self.history[-1]["step"] == self.step

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def rate(self, chars: int, seconds: float) -> float:
        return chars / seconds if seconds else math.nan

    def since_best(self) -> tuple[int, dict[str, Any] | None]:
        """How many evaluations came after the best one (the first to reach the lowest
        val loss), and its metrics row (None before any). Counted from the history, so
        a resumed run, even from a checkpoint older than --patience, counts on right."""
        if not self.history:
            return 0, None
        best = min(range(len(self.history)), key=lambda i: self.history[i]["val_loss"])
        return len(self.history) - 1 - best, self.history[best]

    def record_step(self, loss: float, chars: int, seconds: float) -> None:
        self.step += 1
        if math.isnan(self.first_step_s):
            self.first_step_s = time.time() - self.started
        self.loss_sum += loss
        self.loss_count += 1
        self.window_chars += chars
        self.window_seconds += seconds

    def record_eval(self, val_loss: float, epoch: float, lr: float) -> bool:
        """Add the metrics row of an evaluation and start a new window; True when the
        loss is the best so far."""
        self.history.append({
            "step": self.step, "elapsed_s": round(self.elapsed(), 3),
            "epoch": round(epoch, 4), "lr": lr,
            "train_loss": self.loss_sum / self.loss_count if self.loss_count else math.nan,
            "val_loss": val_loss, "val_bpc": val_loss / LN2,
            "chars_per_s": round(self.rate(self.window_chars, self.window_seconds), 1)})
        improved = val_loss < self.best_val
        self.best_val = min(self.best_val, val_loss)
        self.session_chars += self.window_chars
        self.session_seconds += self.window_seconds
        self.loss_sum, self.loss_count, self.window_chars, self.window_seconds = 0.0, 0, 0, 0.0
        return improved

    def to_checkpoint(self) -> dict[str, Any]:
        """The state's part of a checkpoint (the hidden state is the caller's: under
        torchrun it is gathered from every process first)."""
        return {"step": self.step, "elapsed": self.elapsed(), "best_val_loss": self.best_val,
                "val_loss": self.val_loss, "metrics": self.history,
                "loss_window": [self.loss_sum, self.loss_count], "schedule": self.decay_from}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], started: float) -> RunState:
        window = ckpt.get("loss_window", [0.0, 0])
        return cls(step=int(ckpt["step"]), elapsed_before=float(ckpt["elapsed"]),
                   best_val=float(ckpt["best_val_loss"]), history=list(ckpt["metrics"]),
                   loss_sum=float(window[0]), loss_count=int(window[1]),
                   decay_from=ckpt.get("schedule"), started=started)


# ------------------------------------------------------------------------------ the run
class Run:
    """What one session trains with, and its step, evaluation and checkpoint."""

    def __init__(self, group: distributed.Group, device: torch.device, text_paths: list[Path],
                 model_config: cfg.ModelConfig, c: cfg.TrainConfig, origin: Origin | None,
                 run_dir: Path, stop: _StopRequest, *, overwrite: bool,
                 allow_changed_text: bool, progress: bool, started: float,
                 free: frozenset[str] = frozenset()) -> None:
        self.group, self.device, self.text_paths = group, device, text_paths
        self.model_config, self.c, self.run_dir, self.stop = model_config, c, run_dir, stop
        self.allow_changed_text = allow_changed_text
        self.dtype = resolve_dtype(c.dtype, device)    # what "auto" is on this device
        resume = origin.checkpoint if origin is not None and origin.resume else None
        # A resume writes on in its own folder; any other folder must be free.
        own = resume is not None and run_dir.resolve() == origin.path.parent.resolve()
        replaced = [] if own else files.check_run_dir_is_free(self.run_dir, overwrite)
        if own and not overwrite:
            _check_not_rewound(origin, run_dir)
        self._check_fits(vocab_size=1)   # before the texts are read: the smallest it can be
        self._read_texts(origin, progress)
        if c.size == "auto" and origin is None and group.active:
            raise ConfigError("--size auto cannot choose under torchrun (each process would "
                              "time its own machine); give the model's shape, e.g. "
                              "--hidden-size 512 --num-layers 1, or --size fixed")
        fitted = fitting.fit(model_config, c, vocab_size=len(self.vocab), device=device,
                             dtype=self.dtype, rows=c.batch_size // group.world_size, free=free,
                             choose_size=c.size == "auto" and origin is None,
                             seconds=(c.max_time or 0.0) - (time.time() - started),
                             train_chars=len(self.train_ids), val_chars=self.val_chars)
        self.model_config, self.threads = fitted.model_config, fitted.threads
        self.sizing, self.tuner = fitted.sizing, fitted.tuner

        self._check_fits(len(self.vocab))
        torch.manual_seed(c.seed)
        self.model = CharRNN(len(self.vocab), self.model_config)
        if origin is not None:
            self.model.load_state_dict(origin.checkpoint["model_state"])
        self.model.to(device).train()
        self.optimizer = make_optimizer(self.model, c)
        # ``replica`` runs the training steps: under torchrun it averages the gradients
        # over the processes during backward. ``model`` is the plain module underneath.
        self.replica = DistributedDataParallel(self.model) if group.active else self.model
        self.state = RunState(started=started) if resume is None else self._restore(
            resume, started, origin.path)
        if group.active:  # a different dropout mask on each process
            torch.manual_seed(c.seed + self.state.step + group.rank)
        self.saved_step: int | None = None   # of the latest last.pt this session wrote
        self.stopped_early = False
        self.budget = Budget(c, self.batches.steps_per_epoch)
        self.reserve = Reserve(*self._probe()) if c.max_time else None
        if self.reserve is not None:
            self.reserve.check_fits(c.max_time, self.state.elapsed_before, self.state.elapsed())
        # A time budget found to hold one step gets it, however the clock moves till then.
        self.step_owed = self.reserve is not None and self.state.elapsed_before < c.max_time
        if group.main:  # fp32 weights plus up to two optimiser moments each (Adam), on CPU
            files.prepare_run_dir(self.run_dir, cfg.to_toml(self.model_config, c),
                                  checkpoint_bytes=12 * self.model.num_parameters(),
                                  replaced=replaced, numbered=self._numbered_to_come())

    def _numbered_to_come(self) -> int:
        """How many step-N.pt files the run will hold at most, for the space check:
        --keep, or as many as the step budget leaves (unknown under other budgets: 0)."""
        c, steps = self.c, self.c.budget_steps()
        if not c.save_every:
            return 0
        planned = max(steps // c.save_every - self.state.step // c.save_every, 0) if steps \
            else None
        if c.keep:
            return c.keep if planned is None else min(c.keep, planned)
        return planned or 0

    def _check_fits(self, vocab_size: int) -> None:
        c, params = self.c, parameter_count(vocab_size, self.model_config)
        check_fits(training_bytes(vocab_size, self.model_config, c.batch_size, c.seq_length),
                   self.device, f"training this model ({params:,} parameters) on batches of "
                   f"{c.batch_size}x{c.seq_length}", "make it smaller (--hidden-size, "
                   "--num-layers) or the batches (--batch-size, --seq-length)")

    def _read_texts(self, origin: Origin | None, progress: bool) -> None:
        """Scan and encode the texts (cached beside the runs), build the vocabulary
        (or check the checkpoint's), cut the validation text and make the batches."""
        c, group = self.c, self.group
        cache_dir = Path(c.cache_dir) if c.cache_dir else self.run_dir.parent / ".cache"
        val_path, what = (Path(c.val_file) if c.val_file else None), "training text"
        reading = corpus.ReadingBar(progress, self.text_paths + [val_path] * bool(val_path))
        with group.first_on_each_machine(), reading:
            self.texts = corpus.cached_texts(self.text_paths, cache_dir, what=what,
                                             on_read=reading.update)
            val_scans = [corpus.cached_scan(val_path, cache_dir, what="validation file",
                                            on_read=reading.update)] if val_path else []
            if origin is not None:    # before encoding a text that a resume will refuse
                origin.check_text(self.texts, self.allow_changed_text)
            self.vocab = corpus.vocab_for(
                [self.texts, *val_scans], Vocab(origin.checkpoint["vocab"]) if origin else None,
                source=str(origin.path) if origin else None)
            ids = corpus.cached_texts_ids(self.texts, self.vocab, cache_dir, what=what,
                                          on_read=reading.update)
            val = [corpus.cached_ids(val_path, scan, self.vocab, cache_dir,
                                     what="validation file", on_read=reading.update)
                   for scan in val_scans]
        self.train_ids, self.val_ids = split(ids, c.val_fraction) if not val else (ids, val[0])
        if len(self.val_ids) < 2:
            raise DataError(f"the validation text has {len(self.val_ids)} character(s); it "
                            "needs at least 2: raise --val-fraction or give a longer --val-file")
        plan = stream_plan(len(self.val_ids), c.val_max_chars)[group.rank::group.world_size]
        self.val_chars = int((plan[:, 1] - plan[:, 0]).sum())  # this process scores per pass
        # Characters the training text lacks: the model cannot learn them.
        self.val_only = "".join(sorted(set(val_scans[0].vocab) - set(self.texts.vocab))
                                ) if val_scans else ""
        self.batches = make_batches(self.train_ids, c.batching, c.batch_size, c.seq_length,
                                    c.seed, rows=group.rows(c.batch_size),
                                    pin=self.device.type == "cuda")

    def _restore(self, ckpt: dict[str, Any], started: float, path: Path) -> RunState:
        """The optimiser, the batches' position, the RNG and the state of a resumed run."""
        c = self.c
        try:
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
            self.batches.load_state_dict(ckpt["data_state"])
            state = RunState.from_checkpoint(ckpt, started)
            state.hidden = self.group.my_rows(to_device(ckpt.get("hidden"), self.device),
                                              c.batch_size)
            torch.set_rng_state(ckpt["rng"]["torch"])
            if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path} cannot be resumed: its training state is damaged "
                                  f"({detail}); start a new run from its weights with "
                                  f"--init-from {path}") from None
        if "schedule" not in ckpt and state.step >= c.warmup_steps:
            state.decay_from = {"start": 0.0, "start_lr": c.lr}  # saved before schedules were
        if cfg.changes(ckpt["train_config"], c, ignore=tuple(
                k for k in cfg.fields_of("train") if k not in SCHEDULE_SETTINGS)):
            # A new budget or schedule: decay afresh from here, from the rate the run
            # had reached (or from the new --lr, or from lr once warmup is over).
            same_lr = ckpt["train_config"].get("lr") == c.lr
            state.decay_from = {"start": None, "start_lr": self.optimizer.param_groups[0]["lr"]
                                if same_lr and state.step >= c.warmup_steps else c.lr}
        return state

    def describe(self) -> dict[str, Any]:
        """The facts of the run a user sees before the first step."""
        return {"text": self.texts.label, "files": len(self.texts.scans),
                "chars": self.texts.chars,
                "vocab_size": len(self.vocab), "train_chars": len(self.train_ids),
                "val_chars": len(self.val_ids),
                "val_scored": self.val_chars * self.group.world_size,
                "model": self.model_config.describe(),
                "parameters": self.model.num_parameters(), "device": str(self.device),
                "dtype": self.dtype + (" (auto)" if self.c.dtype == "auto" else ""),
                "threads": self.threads.describe(),
                "size": None if self.sizing is None else self.sizing.reason(),
                "batching": self.c.batching,
                "batch_size": self.c.batch_size, "seq_length": self.c.seq_length,
                "budget": str(self.budget), "run_dir": str(self.run_dir),
                "resumed_at": self.state.step, "processes": self.group.world_size,
                "val_only_chars": self.val_only}

    def progress(self) -> float:
        """Of the budget, counting the time the final evaluation will need."""
        s = self.state
        seconds = s.elapsed() + (self.reserve.seconds() if self.reserve is not None else 0.0)
        if self.step_owed:
            seconds = min(seconds, 0.999 * self.c.max_time)
        return self.budget.progress(s.step, self.batches.epoch, seconds)

    def train_step(self, progress: float) -> float:
        """One optimiser step at this point of the budget; the mean loss of its batch."""
        c, s = self.c, self.state
        t_step = time.time()
        if s.step >= c.warmup_steps and (s.decay_from is None or s.decay_from["start"] is None):
            s.decay_from = {"start": min(progress, 1.0),
                            "start_lr": s.decay_from["start_lr"] if s.decay_from else c.lr}
        lr = lr_at(s.step, progress, c, **(s.decay_from or {}))
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        batch = self.batches.next()
        if batch.fresh:
            s.hidden = None
        window = batch.window.to(self.device, non_blocking=True)      # (B, T + 1)
        x, y = window[:, :-1], window[:, 1:]                           # (B, T) each
        with autocast(self.device, self.dtype):
            logits, hidden = self.replica(x, s.hidden)                # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        s.hidden = detach_hidden(hidden)
        (loss_value,) = self.group.mean(loss.item())                   # over the whole batch
        if not math.isfinite(loss_value):
            s.step += 1   # (the step that diverged, for the message)
            raise self._diverged(f"loss is {loss_value}")
        seconds = time.time() - t_step
        s.record_step(loss_value, x.numel() * self.group.world_size, seconds)
        if self.reserve is not None:
            self.reserve.steps.append(seconds)
        if self.tuner is not None:   # no trial in the last tenth of a budget
            self.tuner.step_done(seconds, may_try=progress < 0.9)
        self.step_owed = False
        return loss_value

    def evaluate(self, final: bool = False,
                 on_chunk: Callable[[int, int], None] | None = None) -> str:
        """Score the validation text, add the metrics row, save the checkpoints (best.pt
        when the loss is the lowest yet) and the metrics; the line to report. A stop
        request during the pass gives it up and saves the step without it. A save
        that fails is reported and tried again at the next evaluation (the previous
        checkpoint stays whole); at the end of the run it is an error."""
        started = time.time()
        try:
            total, count = self.group.sum(*self.score(on_chunk))      # over all the ranks
        except Stopped:
            raise TrainingInterrupted(str(self.save()), self.stop.signum) from None
        scored = time.time()
        if not math.isfinite(total / count):
            raise self._diverged(f"the validation loss is {total / count}")
        s = self.state
        improved = s.record_eval(total / count, self.batches.epoch,
                                 self.optimizer.param_groups[0]["lr"])
        row = s.history[-1]
        line = (f"step {s.step}: train {row['train_loss']:.4f}  val {row['val_loss']:.4f} "
                f"nats/char ({row['val_bpc']:.3f} bits/char)  best {s.best_val:.4f}")
        try:
            self.save(best=improved)
            if self.group.main:
                files.write_metrics(self.run_dir, s.history)
        except CharRNNError as e:
            if final:
                raise
            return f"{line}\nwarning: {e}; training goes on, the next evaluation saves again"
        if self.reserve is not None:
            self.reserve.evaluated(scored - started, (time.time() - scored) / (1 + improved))
        if self.group.main and self.c.tensorboard:
            from charrnn.tblog import log_eval
            log_eval(self.run_dir, row)
        return line

    def score(self, on_chunk: Callable[[int, int], None] | None = None) -> tuple[float, int]:
        """(nats, characters) of this process's share of the validation text; a stop
        request gives the pass up (``Stopped``), except under torchrun, where the
        processes must finish it together. ``on_chunk(scored, total)`` follows it."""
        g, done = self.group, 0
        if self.tuner is not None:    # never a pass with a thread count on trial
            self.tuner.settle()

        def chunk(scored: int) -> None:
            nonlocal done
            done += scored
            if on_chunk is not None:
                on_chunk(done, self.val_chars)
        return self._pass(chunk, stop=lambda: not g.active and self.stop.signum is not None)

    def _pass(self, on_chunk: Callable[[int], None], stop: Callable[[], bool]
              ) -> tuple[float, int]:
        """``nats_sum`` over this process's streams of the validation text."""
        g = self.group
        return nats_sum(self.model, self.val_ids, self.device, max_chars=self.c.val_max_chars,
                        part=(g.rank, g.world_size), on_chunk=on_chunk, stop=stop)

    def save(self, best: bool = False) -> Path:
        """Write last.pt (and best.pt); every rank calls this, rank 0 writes. Weights
        that are no longer finite are never saved. A stop signal waits for the save."""
        payload = self._finite_checkpoint()
        last = self.run_dir / files.LAST
        if self.group.main:
            with self.stop.hold():
                if best:
                    save_checkpoint(payload, self.run_dir / files.BEST)
                save_checkpoint(payload, last)
            self.saved_step = self.state.step
        return last

    def save_numbered(self) -> str | None:
        """Keep this step as step-N.pt (--save-every), and write last.pt with it unless
        this step's evaluation just did; once the new file is whole, only the newest
        --keep numbered checkpoints stay. Every rank calls this, rank 0 writes. A save
        that fails is a warning line to report (training goes on, the files before it
        stay); None when all went well."""
        payload, step = self._finite_checkpoint(), self.state.step
        if not self.group.main:
            return None
        try:
            with self.stop.hold():
                save_checkpoint(payload, self.run_dir / files.numbered_name(step))
                if self.saved_step != step:
                    save_checkpoint(payload, self.run_dir / files.LAST)
                    self.saved_step = step
            files.prune_numbered(self.run_dir, step, self.c.keep)
        except CharRNNError as e:
            return f"warning: {e}; training goes on"
        return None

    def _finite_checkpoint(self) -> dict[str, Any]:
        bad = next((name for name, p in self.model.named_parameters()
                    if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise self._diverged(f"{bad} holds NaN or Inf")
        return self.checkpoint()

    def out_of_patience(self) -> str | None:
        """After an evaluation: the line that ends the run when --patience evaluations
        in a row have brought no new best (None while the run goes on)."""
        since, best = self.state.since_best()
        if not self.c.patience or best is None or since < self.c.patience:
            return None
        self.stopped_early = True
        return (f"stopping early: no improvement in {since} evaluations since step "
                f"{best['step']} (best {best['val_loss']:.4f})")

    def _diverged(self, what: str) -> CharRNNError:
        last = self.run_dir / files.LAST
        kept = f"; last good checkpoint: {last}" if last.exists() else ""
        return CharRNNError(f"training diverged: {what} at step {self.state.step}{kept}; "
                            "lower --lr or set --grad-clip")

    def checkpoint(self) -> dict[str, Any]:
        """What a checkpoint holds (the layout is in ``charrnn.checkpoint``)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model_config": cfg.to_dict(self.model_config), "train_config": cfg.to_dict(self.c),
            "vocab": self.vocab.chars,
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer_state": to_device(self.optimizer.state_dict(), CPU),
            "data_state": self.batches.state_dict(),
            "hidden": to_device(self.group.gather_rows(self.state.hidden), CPU),
            "rng": rng, "epoch": self.batches.epoch, **self.state.to_checkpoint(),
            "corpus": self.texts.record(),
            "world_size": self.group.world_size,
        }

    def sample(self) -> str:
        if self.tuner is not None:
            self.tuner.settle()
        text = generate(self.model, self.vocab, self.c.sample_length,
                        seed=self.c.seed + self.state.step)[0]
        return f"--- sample at step {self.state.step} ---\n{text}\n---"

    def _probe(self) -> tuple[float, float, float]:
        """Seconds of a training step, a validation pass and a checkpoint save, timed
        on the warm model (a step's forward and backward twice, the second timed; the
        first chunks of a pass) without changing the weights, the batches or the
        random numbers: what a time budget keeps free."""
        c, device = self.c, self.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            window = torch.randint(len(self.vocab), (c.batch_size // self.group.world_size,
                                                     c.seq_length + 1), device=device)
            forward_backward(self.model, window, device, self.dtype)
            step = timed(lambda: forward_backward(self.model, window, device, self.dtype),
                         device)
            self.model.zero_grad(set_to_none=True)
        marks, counts = [synced(device)], []

        def chunk(scored: int) -> None:
            marks.append(synced(device))
            counts.append(scored)
        try:
            self._pass(chunk, stop=lambda: len(marks) > 2)
            score = marks[-1] - marks[0]                      # the whole pass, it was short
        except Stopped:   # the first chunk (with the streams' context), then at the second's rate
            score = marks[1] - marks[0] + (self.val_chars - counts[0]) * (
                marks[2] - marks[1]) / counts[1]
        start = time.time()
        torch.save(self.checkpoint(), io.BytesIO())
        return 1.2 * step, score, 2 * (time.time() - start) + 0.05

    def result(self) -> RunResult:
        s = self.state
        _, best = s.since_best()
        return RunResult(run_dir=self.run_dir, step=s.step, elapsed=s.elapsed(),
                         best_val_loss=s.best_val, val_loss=s.val_loss,
                         chars_per_s=s.rate(s.session_chars, s.session_seconds),
                         first_step_s=s.first_step_s, rank=self.group.rank,
                         stopped_early=self.stopped_early,
                         best_step=None if best is None else int(best["step"]),
                         numbered=[path for _, path in files.numbered_checkpoints(self.run_dir)],
                         dtype=self.dtype, threads=threads.current(),
                         size=None if self.sizing is None else self.sizing.to_dict())


# ------------------------------------------------------------------------------ the loop
def train(text_path: str | Path | list[str | Path], model_config: cfg.ModelConfig,
          train_config: cfg.TrainConfig, *, resume: str | Path | Origin | None = None,
          init_from: str | Path | Origin | None = None, overwrite: bool = False,
          allow_changed_text: bool = False, progress: bool = True,
          start_time: float | None = None,
          on_start: Callable[[dict[str, Any]], None] | None = None,
          free: frozenset[str] = frozenset()) -> RunResult:
    """Train a CharRNN on the text at ``text_path``, or on the files of a list of paths
    read as one text (``corpus.expand_inputs`` makes one); see the module docstring.

    ``resume``: a run folder or checkpoint to continue exactly (model, optimiser,
    schedule, data position, hidden state, RNG), in its own folder unless
    ``train_config.out`` names another; ``init_from``: one whose weights start a new
    run. Either may be an ``Origin`` already opened. ``overwrite`` lets a new run
    replace the checkpoints and metrics already in its folder; ``allow_changed_text``
    lets a resume go on with a text other than the one it was trained on. ``start_time``
    (``time.time()``) makes the wall-clock budget count the process's start-up too;
    ``on_start`` is called with ``Run.describe()`` just before the first step.
    ``free``: with ``train_config.size`` "auto", the model settings the run chooses
    (``config.resolve`` finds them; ``charrnn.sizing``). Under
    torchrun every process calls this, and they train as one data-parallel group (see
    ``charrnn.distributed``).
    """
    origin = resume if isinstance(resume, Origin) else init_from if isinstance(
        init_from, Origin) else Origin.open(resume, init_from)
    group, device = distributed.join(resolve_device(train_config.device))
    try:
        paths = ([Path(text_path)] if isinstance(text_path, (str, Path))
                 else [Path(p) for p in text_path])
        result = _train(group, device, paths, model_config, train_config, origin,
                        overwrite=overwrite, allow_changed_text=allow_changed_text,
                        progress=progress and group.main,
                        started=time.time() if start_time is None else start_time,
                        on_start=on_start if group.main else None, free=free)
        group.barrier()  # leave together: a rank tearing down while rank 0 still saves can abort
        return result
    finally:
        distributed.leave(group)


def _train(group: distributed.Group, device: torch.device, text_paths: list[Path],
           model_config: cfg.ModelConfig, c: cfg.TrainConfig, origin: Origin | None, *,
           overwrite: bool, allow_changed_text: bool, progress: bool, started: float,
           on_start: Callable[[dict[str, Any]], None] | None,
           free: frozenset[str] = frozenset()) -> RunResult:
    if model_config.bidirectional:
        raise ConfigError("--bidirectional cannot train a next-character model: the reverse "
                          "direction would read the characters it must predict; drop it")
    if origin is not None:
        _check_same_model(origin.checkpoint["model_config"], model_config, str(origin.path))
    check_dtype(c.dtype, device)
    run_dir = Path(c.out) if c.out else (origin.path.parent if origin and origin.resume else
                                         files.default_run_dir(corpus.corpus_name(text_paths),
                                                               model_config.cell))
    with _catch_stop_signals() as stop, files.locked(run_dir) if group.main else nullcontext():
        run = Run(group, device, text_paths, model_config, c, origin, run_dir, stop,
                  overwrite=overwrite, allow_changed_text=allow_changed_text,
                  progress=progress, started=started, free=free)
        if on_start is not None:
            on_start(run.describe())
        _loop(run, progress)
    return run.result()


def _loop(run: Run, progress: bool) -> None:
    s, c, stop = run.state, run.c, run.stop
    stop.training = True
    with _Bar(progress, run) as bar:
        if s.step % c.eval_every == 0 and s.step and not s.evaluated:
            bar.say(run.evaluate(on_chunk=bar.validating))  # the one a stop gave up
        while True:
            # All ranks take the same decisions: on the mean of their clocks, and on
            # a stop request that reached any of them.
            progress_now, stopping = run.group.mean(run.progress(),
                                                    float(stop.signum is not None))
            if stopping:
                raise TrainingInterrupted(str(run.save()), stop.signum or signal.SIGTERM)
            if progress_now >= 1.0:
                break
            if s.evaluated and (note := run.out_of_patience()):
                bar.say(note)
                break
            loss = run.train_step(progress_now)
            if s.step % c.eval_every == 0:
                bar.say(run.evaluate(on_chunk=bar.validating))
            if c.save_every and s.step % c.save_every == 0 and (note := run.save_numbered()):
                bar.say(note)
            if progress and c.sample_every and s.step % c.sample_every == 0:
                bar.say(run.sample())
            bar.show(loss)
        if not s.evaluated:
            bar.say(run.evaluate(final=True, on_chunk=bar.validating))


class _Bar:
    """The progress bar: one line redrawn in place, only on a terminal. Elsewhere (a
    log file, a pipe) the evaluation lines alone report progress, one plain line each."""

    def __init__(self, progress: bool, run: Run) -> None:
        self.progress, self.run = progress, run
        self.bar = tqdm(total=run.budget.total_steps, initial=run.state.step, unit="step",
                        dynamic_ncols=True, disable=not (progress and sys.stderr.isatty()),
                        file=sys.stderr, leave=True)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()

    def say(self, message: str) -> None:
        """A line on stderr, through the bar so that it is not torn."""
        if self.progress:
            self.bar.write(message, file=sys.stderr)

    def validating(self, scored: int, total: int) -> None:
        """A validation pass under way, in the bar's last field."""
        if not self.bar.disable:
            self.bar.set_postfix_str(f"validating {scored / total:.0%} of {total:,} chars",
                                     refresh=True)

    def show(self, loss: float) -> None:
        s, c = self.run.state, self.run.c
        val = "-" if math.isnan(s.val_loss) else f"{s.val_loss:.3f}"
        left = f" left {max(0.0, c.max_time - s.elapsed()):.0f}s" if c.max_time else ""
        rate = (s.rate(s.window_chars, s.window_seconds) if s.window_chars
                else s.history[-1]["chars_per_s"])   # an evaluation just began a new window
        self.bar.set_postfix_str(f"loss {loss:.3f} val {val} {rate:,.0f} chars/s{left}",
                                 refresh=False)
        self.bar.update(1)


def _check_not_rewound(origin: Origin, run_dir: Path) -> None:
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


def _check_same_model(saved: dict, current: cfg.ModelConfig, source: str) -> None:
    diffs = cfg.changes(saved, current)
    if diffs:
        raise ConfigError(f"model settings differ from {source}: {'; '.join(diffs)}; "
                          "drop those flags (the checkpoint fixes the model)")


class _StopRequest:
    """What SIGINT, SIGTERM and SIGHUP do. Before the first step (reading and encoding
    the texts, building the model) a signal stops at once: nothing is saved yet, and
    what was being written is removed. Then it sets a flag that the loop reads after
    each step, so that a stop never lands in the middle of an optimiser update; a
    second signal stops at once, but never in the middle of a save."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False
        self._saving = False
        self._again = False

    def __call__(self, signum, frame) -> None:
        if not self.training:
            raise TrainingInterrupted(None, signum)
        if self.signum is None:
            self.signum = signum
        elif self._saving:
            self._again = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def hold(self):
        """A save: a second signal waits until it is whole."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._again:
            raise KeyboardInterrupt


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextmanager
def _catch_stop_signals():
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
