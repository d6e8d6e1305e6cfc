"""The training run: ``train(text, model_config, train_config) -> RunResult``.

Reads in the order it runs: ``train`` opens the run, ``Run`` gathers what one session
trains with (the texts' ids and batches, the model and optimiser, restored from a
checkpoint when resuming), and ``_loop`` is the loop, one visible line per thing it
does: a step (``Run.train_step``), an evaluation (``_evaluate``: ``Run.validate``
scores and adds the metrics row, ``Run.save_evaluated`` writes last.pt, best.pt and
metrics.csv, ``Run.log`` logs), a numbered checkpoint (``Run.save_numbered``), a
sample, and the stops. ``RunState`` is how far the run has come (what a checkpoint
needs beyond the weights).

Beside it: ``charrnn.texts`` (the texts a run reads, its vocabulary, held-out part and
batches), ``charrnn.resume`` (where a run starts from, and what a resume keeps),
``charrnn.budget`` (steps, epochs and seconds as one progress number, and what a time
budget keeps free), ``charrnn.stopping`` (signals and --patience), ``charrnn.fitting``
(the thread count and ``--size auto``, before the first step). The run folder's files
are described in ``charrnn.files``.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from charrnn import config as cfg
from charrnn import corpus, distributed, files, fitting, threads
from charrnn.budget import Budget, Reserve, probe
from charrnn.checkpoint import save_checkpoint
from charrnn.device import (autocast, check_dtype, check_fits, resolve_device, resolve_dtype,
                            to_device)
from charrnn.errors import CharRNNError, CheckpointError, ConfigError, TrainingInterrupted
from charrnn.model import CharRNN, Hidden, detach_hidden, parameter_count, training_bytes
from charrnn.optim import lr_at, make_optimizer
from charrnn.progress import bar as progress_bar
from charrnn.reports import SizeChoice, TrainEnd, TrainStart
from charrnn.resume import Origin, check_not_rewound, check_same_model, schedule_after
from charrnn.sample import generate
from charrnn.scoring import LN2, Stopped, nats_sum
from charrnn.stopping import StopRequest, catch_stop_signals, out_of_patience
from charrnn.texts import read_texts

CPU = torch.device("cpu")


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
    size: SizeChoice | None = None       # what --size auto timed and chose

    def to_dict(self) -> TrainEnd:
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


# ------------------------------------------------------------------ how far a run has come
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
                 run_dir: Path, stop: StopRequest, *, overwrite: bool,
                 allow_changed_text: bool, progress: bool, started: float,
                 free: frozenset[str] = frozenset()) -> None:
        self.group, self.device = group, device
        self.model_config, self.c, self.run_dir, self.stop = model_config, c, run_dir, stop
        self.dtype = resolve_dtype(c.dtype, device)    # what "auto" is on this device
        resume = origin.checkpoint if origin is not None and origin.resume else None
        # A resume writes on in its own folder; any other folder must be free.
        own = resume is not None and run_dir.resolve() == origin.path.parent.resolve()
        replaced = [] if own else files.check_run_dir_is_free(self.run_dir, overwrite)
        if own and not overwrite:
            check_not_rewound(origin, run_dir)
        self._check_fits(vocab_size=1)   # before the texts are read: the smallest it can be
        self.data = read_texts(text_paths, c, group, run_dir, origin,
                               allow_changed_text=allow_changed_text, progress=progress,
                               pin=device.type == "cuda")
        if c.size == "auto" and origin is None and group.active:
            raise ConfigError("--size auto cannot choose under torchrun (each process would "
                              "time its own machine); give the model's shape, e.g. "
                              "--hidden-size 512 --num-layers 1, or --size fixed")
        fitted = fitting.fit(model_config, c, vocab_size=len(self.data.vocab), device=device,
                             dtype=self.dtype, rows=c.batch_size // group.world_size, free=free,
                             choose_size=c.size == "auto" and origin is None,
                             seconds=(c.max_time or 0.0) - (time.time() - started),
                             train_chars=len(self.data.train_ids), val_chars=self.data.val_chars)
        self.model_config, self.threads = fitted.model_config, fitted.threads
        self.sizing, self.tuner = fitted.sizing, fitted.tuner

        self._check_fits(len(self.data.vocab))
        torch.manual_seed(c.seed)
        self.model = CharRNN(len(self.data.vocab), self.model_config)
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
        self.score_s = 0.0                   # seconds the latest validation pass took
        self.stopped_early = False
        self.budget = Budget(c, self.data.batches.steps_per_epoch)
        self.reserve = Reserve(*probe(
            self.model, device, self.dtype, rows=c.batch_size // group.world_size,
            seq_length=c.seq_length, vocab_size=len(self.data.vocab), validate=self._pass,
            val_chars=self.data.val_chars, checkpoint=self.checkpoint)) if c.max_time else None
        if self.reserve is not None:
            self.reserve.check_fits(c.max_time, self.state.elapsed_before, self.state.elapsed())
        # A time budget found to hold one step gets it, however the clock moves till then.
        self.step_owed = self.reserve is not None and self.state.elapsed_before < c.max_time
        # A resume with nothing left to train leaves the run's config.toml as it was.
        idle = resume is not None and (self.progress() >= 1.0 or self.state.evaluated and bool(
            out_of_patience(*self.state.since_best(), c.patience)))
        if group.main:  # fp32 weights plus up to two optimiser moments each (Adam), on CPU
            files.prepare_run_dir(self.run_dir, None if idle else cfg.to_toml(
                self.model_config, c), checkpoint_bytes=12 * self.model.num_parameters(),
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

    def _restore(self, ckpt: dict[str, Any], started: float, path: Path) -> RunState:
        """The optimiser, the batches' position, the RNG and the state of a resumed run."""
        c = self.c
        try:
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
            self.data.batches.load_state_dict(ckpt["data_state"])
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
        state.decay_from = schedule_after(ckpt, self.c, state.step,
                                          self.optimizer.param_groups[0]["lr"])
        return state

    def describe(self) -> TrainStart:
        """The facts of the run a user sees before the first step."""
        return {"text": self.data.texts.label, "files": len(self.data.texts.scans),
                "chars": self.data.texts.chars,
                "vocab_size": len(self.data.vocab), "train_chars": len(self.data.train_ids),
                "val_chars": len(self.data.val_ids),
                "val_scored": self.data.val_chars * self.group.world_size,
                "model": self.model_config.describe(),
                "parameters": self.model.num_parameters(), "device": str(self.device),
                "dtype": self.dtype + (" (auto)" if self.c.dtype == "auto" else ""),
                "threads": self.threads.describe(),
                "size": None if self.sizing is None else self.sizing.reason(),
                "batching": self.c.batching,
                "batch_size": self.c.batch_size, "seq_length": self.c.seq_length,
                "budget": str(self.budget), "run_dir": str(self.run_dir),
                "resumed_at": self.state.step, "processes": self.group.world_size,
                "val_only_chars": self.data.val_only,
                "val_empty": [str(p) for p in self.data.val_empty]}

    def progress(self) -> float:
        """Of the budget, counting the time the final evaluation will need."""
        s = self.state
        seconds = s.elapsed() + (self.reserve.seconds() if self.reserve is not None else 0.0)
        if self.step_owed:
            seconds = min(seconds, 0.999 * self.c.max_time)
        return self.budget.progress(s.step, self.data.batches.epoch, seconds)

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
        batch = self.data.batches.next()
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

    def validate(self, on_chunk: Callable[[int, int], None] | None = None) -> bool:
        """Score the validation text and add the metrics row; True when the loss is the
        lowest yet. A stop request during the pass gives it up and saves the step
        without it (``TrainingInterrupted``)."""
        started = time.time()
        try:
            total, count = self.group.sum(*self.score(on_chunk))      # over all the ranks
        except Stopped:
            raise TrainingInterrupted(str(self.save()), self.stop.signum) from None
        self.score_s = time.time() - started
        if not math.isfinite(total / count):
            raise self._diverged(f"the validation loss is {total / count}")
        return self.state.record_eval(total / count, self.data.batches.epoch,
                                      self.optimizer.param_groups[0]["lr"])

    def validated(self) -> str:
        """The line that reports the latest evaluation."""
        s = self.state
        row = s.history[-1]
        return (f"step {s.step}: train {row['train_loss']:.4f}  val {row['val_loss']:.4f} "
                f"nats/char ({row['val_bpc']:.3f} bits/char)  best {s.best_val:.4f}")

    def save_evaluated(self, best: bool, final: bool = False) -> str | None:
        """After an evaluation: write last.pt (and best.pt when ``best``) and
        metrics.csv. A save that fails is a warning line to report, and the next
        evaluation saves again (the previous checkpoint stays whole); at the end of the
        run (``final``) it is an error. None when all went well."""
        started = time.time()
        try:
            self.save(best=best)
            if self.group.main:
                files.write_metrics(self.run_dir, self.state.history)
        except CharRNNError as e:
            if final:
                raise
            return f"warning: {e}; training goes on, the next evaluation saves again"
        if self.reserve is not None:
            self.reserve.evaluated(self.score_s, (time.time() - started) / (1 + best))
        return None

    def log(self) -> None:
        """The latest metrics row to TensorBoard, with --tensorboard."""
        if self.group.main and self.c.tensorboard:
            from charrnn.tblog import log_eval
            log_eval(self.run_dir, self.state.history[-1])

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
                on_chunk(done, self.data.val_chars)
        return self._pass(chunk, stop=lambda: not g.active and self.stop.signum is not None)

    def _pass(self, on_chunk: Callable[[int], None], stop: Callable[[], bool]
              ) -> tuple[float, int]:
        """``nats_sum`` over this process's streams of the validation text."""
        g = self.group
        return nats_sum(self.model, self.data.val_ids, self.device, max_chars=self.c.val_max_chars,
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
            "vocab": self.data.vocab.chars,
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer_state": to_device(self.optimizer.state_dict(), CPU),
            "data_state": self.data.batches.state_dict(),
            "hidden": to_device(self.group.gather_rows(self.state.hidden), CPU),
            "rng": rng, "epoch": self.data.batches.epoch, **self.state.to_checkpoint(),
            "corpus": self.data.texts.record(),
            "world_size": self.group.world_size,
        }

    def sample(self) -> str:
        if self.tuner is not None:
            self.tuner.settle()
        text = generate(self.model, self.data.vocab, self.c.sample_length,
                        seed=self.c.seed + self.state.step)[0]
        return f"--- sample at step {self.state.step} ---\n{text}\n---"

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
          start_time: float | None = None, runs_dir: str | Path = "runs",
          on_start: Callable[[TrainStart], None] | None = None,
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
    ``on_start`` is called with ``Run.describe()`` just before the first step. A new run
    with no ``train_config.out`` gets a folder of its own under ``runs_dir``.
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
                        runs_dir=Path(runs_dir), on_start=on_start if group.main else None,
                        free=free)
        group.barrier()  # leave together: a rank tearing down while rank 0 still saves can abort
        return result
    finally:
        distributed.leave(group)


def _train(group: distributed.Group, device: torch.device, text_paths: list[Path],
           model_config: cfg.ModelConfig, c: cfg.TrainConfig, origin: Origin | None, *,
           overwrite: bool, allow_changed_text: bool, progress: bool, started: float,
           runs_dir: Path, on_start: Callable[[TrainStart], None] | None,
           free: frozenset[str] = frozenset()) -> RunResult:
    if model_config.bidirectional:
        raise ConfigError("--bidirectional cannot train a next-character model: the reverse "
                          "direction would read the characters it must predict; drop it")
    if origin is not None:
        check_same_model(origin.checkpoint["model_config"], model_config, str(origin.path))
    check_dtype(c.dtype, device)
    if c.val_file:   # saved as where it is, so that a resume from another folder finds it
        c = replace(c, val_file=os.path.abspath(c.val_file))
    named = Path(c.out) if c.out else origin.path.parent if origin and origin.resume else None
    if named is None:       # a folder of its own, even beside runs started in the same second
        make = files.new_run_dir if group.main else files.default_run_dir
        run_dir = make(corpus.corpus_name(text_paths), model_config.cell, runs_dir)
    else:
        run_dir = named
    with catch_stop_signals() as stop, (files.locked(run_dir, made=named is None)
                                        if group.main else nullcontext()):
        run = Run(group, device, text_paths, model_config, c, origin, run_dir, stop,
                  overwrite=overwrite, allow_changed_text=allow_changed_text,
                  progress=progress, started=started, free=free)
        if on_start is not None:
            on_start(run.describe())
        _loop(run, progress)
    return run.result()


def _loop(run: Run, progress: bool) -> None:
    """Step after step until the budget is spent or the run stops; each evaluation
    scores, saves and logs (``_evaluate``), and the run always ends evaluated."""
    s, c, stop = run.state, run.c, run.stop
    stop.training = True
    with _Bar(progress, run) as bar:
        if s.step % c.eval_every == 0 and s.step and not s.evaluated:
            _evaluate(run, bar)                      # the one a stop gave up
        while True:
            # All ranks take the same decisions: on the mean of their clocks, and on
            # a stop request that reached any of them.
            progress_now, stopping = run.group.mean(run.progress(),
                                                    float(stop.signum is not None))
            if stopping:
                raise TrainingInterrupted(str(run.save()), stop.signum or signal.SIGTERM)
            if progress_now >= 1.0:
                break
            if s.evaluated and (note := out_of_patience(*s.since_best(), c.patience)):
                run.stopped_early = True
                bar.say(note)
                break
            loss = run.train_step(progress_now)
            if s.step % c.eval_every == 0:
                _evaluate(run, bar)
            if c.save_every and s.step % c.save_every == 0 and (note := run.save_numbered()):
                bar.say(note)
            if progress and c.sample_every and s.step % c.sample_every == 0:
                bar.say(run.sample())
            bar.show(loss)
        if not s.evaluated:
            _evaluate(run, bar, final=True)


def _evaluate(run: Run, bar: _Bar, final: bool = False) -> None:
    """One evaluation, in the order it happens: score the validation text (adding the
    metrics row), report it, save the checkpoints and metrics.csv, log."""
    best = run.validate(on_chunk=bar.validating)
    bar.say(run.validated())
    if note := run.save_evaluated(best, final=final):
        bar.say(note)
    run.log()


class _Bar:
    """The progress bar: one line redrawn in place, only on a terminal. Elsewhere (a
    log file, a pipe) the evaluation lines alone report progress, one plain line each."""

    def __init__(self, progress: bool, run: Run) -> None:
        self.progress, self.run = progress, run
        self.bar = progress_bar(progress, total=run.budget.total_steps, initial=run.state.step,
                                unit="step", dynamic_ncols=True, leave=True)

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


