"""The training run: ``train(text, model_config, train_config) -> RunResult``.

Reads in the order it runs: device and data, model and optimiser, then the loop
(schedule, window, forward, loss, backward, clip, step), with an evaluation, the
checkpoints and the metrics row every ``eval_every`` steps and once at the end.

A run folder holds ``config.toml`` (the resolved settings), ``metrics.csv`` (one row
per evaluation), ``best.pt`` (lowest validation loss) and ``last.pt`` (latest state,
enough to resume exactly). SIGINT and SIGTERM finish the current step, save
``last.pt`` and raise ``TrainingInterrupted``.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from charrnn import config as cfg
from charrnn.checkpoint import BEST, LAST, save_checkpoint
from charrnn import corpus, distributed
from charrnn.data import Vocab, make_batches, split
from charrnn.errors import CharRNNError, ConfigError, DataError, TrainingInterrupted
from charrnn.model import CharRNN, Hidden, detach_hidden
from charrnn.sample import generate

LN2 = math.log(2.0)
EVAL_CHUNK = 1024  # time steps per forward call of the validation pass
METRICS_FIELDS = ("step", "elapsed_s", "epoch", "lr", "train_loss", "val_loss", "val_bpc",
                  "chars_per_s")


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


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is a GPU; asking for a missing GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available here (torch "
                              f"{torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: there are only {torch.cuda.device_count()} "
                              "CUDA device(s); use cuda:0")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device '{name}'; use auto, cpu, cuda or cuda:N")
    return device


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=(dtype == "bfloat16"))


@torch.no_grad()
def evaluate(model: CharRNN, ids: np.ndarray, device: torch.device,
             on_chunk: Callable[[int], None] | None = None) -> float:
    """Mean nats per character of predicting ``ids[1:]`` from ``ids[:-1]`` in one
    deterministic pass that carries the hidden state across chunks (float32).
    ``on_chunk`` is told how many characters each chunk scored (for a progress bar)."""
    was_training = model.training
    model.eval()
    total, count, hidden = 0.0, 0, None
    for start in range(0, len(ids) - 1, EVAL_CHUNK):
        chunk = torch.from_numpy(ids[start:start + EVAL_CHUNK + 1].astype(np.int64))
        chunk = chunk.to(device).unsqueeze(0)                        # (1, T' + 1)
        x, y = chunk[:, :-1], chunk[:, 1:]                           # (1, T'), T' <= T
        logits, hidden = model(x, hidden)                            # (1, T, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(),
                                 reduction="sum").item()
        count += y.numel()
        if on_chunk is not None:
            on_chunk(y.numel())
    model.train(was_training)
    return total / count


def _estimate_eval_seconds(model: CharRNN, ids: np.ndarray, device: torch.device) -> float:
    """How long the full validation pass will take, from timing a slice of it (with a
    margin): the time budget keeps that much for the final evaluation."""
    probe = ids[:4 * EVAL_CHUNK + 1]
    evaluate(model, ids[:EVAL_CHUNK + 1], device)  # warm: the first call pays for set-up
    start = time.time()
    evaluate(model, probe, device)
    return 1.25 * (time.time() - start) * len(ids) / len(probe)


# Settings that shape the learning-rate schedule: a resume that changes one of them
# starts the decay afresh from where the run stands, instead of jumping along the old one.
SCHEDULE_SETTINGS = ("lr", "decay", "min_lr_ratio", "warmup_steps", "max_steps", "epochs",
                     "max_time")


def lr_at(step: int, progress: float, c: cfg.TrainConfig, start: float = 0.0,
          start_lr: float | None = None) -> float:
    """The learning rate of step ``step`` (0-based) at ``progress`` (0 -> 1) of the budget.

    Linear warmup over the first ``warmup_steps`` steps, reaching ``lr``; then a cosine
    (or a straight line) from ``start_lr`` (default ``lr``) down to ``lr * min_lr_ratio``,
    spread over the budget left after ``start``, the progress at which the decay began
    (the end of warmup; or where a resume with a new budget took the run up)."""
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    span = 1.0 - start
    done = min(max((progress - start) / span, 0.0), 1.0) if span > 0 else 1.0
    left = 0.5 * (1.0 + math.cos(math.pi * done)) if c.decay == "cosine" else 1.0 - done
    floor = c.lr * c.min_lr_ratio
    return floor + ((c.lr if start_lr is None else start_lr) - floor) * left


def make_optimizer(model: CharRNN, c: cfg.TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weight matrices only, never on biases or the embedding table."""
    embedding = model.embedding.weight
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not embedding]
    other = [p for p in model.parameters() if p.dim() < 2 or p is embedding]
    groups = [{"params": decay, "weight_decay": c.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    if c.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=c.lr)
    if c.optimizer == "adam":  # L2 penalty in the gradient, as torch's Adam does it
        return torch.optim.Adam(groups, lr=c.lr)
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=0.9)
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=c.lr)
    return torch.optim.Adagrad(groups, lr=c.lr)


class _StopRequest:
    """SIGINT / SIGTERM set a flag that the loop reads after each step, so a stop
    never lands in the middle of an optimiser update. A second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


@contextmanager
def _catch_stop_signals():
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _default_run_dir(text_path: Path, cell: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{text_path.stem}-{cell}"


RUN_FILES = (BEST, LAST, "metrics.csv")  # what a run folder holds once a run has saved


def _check_run_dir_is_free(run_dir: Path, overwrite: bool) -> list[Path]:
    """The results of an earlier run in ``run_dir``, which a new run may replace only
    when asked to (``overwrite``); otherwise a one-line error says what to do instead."""
    held = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    if held and not overwrite:
        names = ", ".join(path.name for path in held)
        raise ConfigError(f"run folder {run_dir} already holds a run ({names}); continue it "
                          f"with --resume {run_dir}, train into a new folder with --out, or "
                          "replace it with --overwrite")
    return held


def _prepare_run_dir(run_dir: Path, model_config, train_config, checkpoint_bytes: int,
                     replaced: list[Path]) -> None:
    """Create the folder, remove the ``replaced`` results of an earlier run, write
    config.toml and check the free space, so that an unwritable or full place fails
    before any training time is spent. Temporary files that a killed run left behind
    are removed (the checkpoints they were to replace are intact)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*run_dir.glob(".*.tmp"), *replaced]:
            stale.unlink()
        (run_dir / "config.toml").write_text(cfg.to_toml(model_config, train_config),
                                             encoding="utf-8")
        free = shutil.disk_usage(run_dir).free
    except OSError as e:
        raise CharRNNError(f"cannot write to run folder {run_dir}: {e.strerror}; "
                           "choose another with --out") from None
    # best.pt and last.pt, plus the temporary copy written before each replace.
    need = 3 * checkpoint_bytes
    if free < need:
        raise CharRNNError(f"only {free / 1e6:.1f} MB free in {run_dir}, checkpoints need "
                           f"about {need / 1e6:.1f} MB; free some space or choose --out")


def _write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    tmp = run_dir / ".metrics.csv.tmp"
    try:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        tmp.replace(run_dir / "metrics.csv")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CharRNNError(f"could not write {run_dir / 'metrics.csv'}: {e.strerror}; "
                           "the checkpoints are kept") from None


def _check_same_model(saved: dict, current: cfg.ModelConfig, source: str) -> None:
    diffs = cfg.changes(saved, current)
    if diffs:
        raise ConfigError(f"model settings differ from {source}: {'; '.join(diffs)}; "
                          "drop those flags (the checkpoint fixes the model)")


def train(text_path: str | Path, model_config: cfg.ModelConfig,
          train_config: cfg.TrainConfig, **options: Any) -> RunResult:
    """Train a CharRNN on the text at ``text_path``; see the module docstring.

    Options: ``resume``, a loaded checkpoint to continue exactly (model, optimiser,
    schedule, data position, hidden state, RNG), and ``resume_path``, its file;
    ``init_from``, a loaded checkpoint whose weights start a new run; ``overwrite``, let
    a new run replace the checkpoints and metrics already in its folder; ``progress``;
    ``start_time`` (``time.time()``), so that the wall-clock budget counts the process's
    start-up too; ``on_start``, called with a dict describing the run just before the
    first step (for the CLI to show). Under torchrun every process calls this, and
    they train as one data-parallel group (see ``charrnn.distributed``).
    """
    group, device = distributed.join(resolve_device(train_config.device))
    try:
        result = _train(group, device, text_path, model_config, train_config, **options)
        group.barrier()  # leave together: a rank tearing down while rank 0 still saves can abort
        return result
    finally:
        distributed.leave(group)


def _train(group: distributed.Group, device: torch.device, text_path: str | Path,
           model_config: cfg.ModelConfig, c: cfg.TrainConfig, *, resume: dict | None = None,
           resume_path: str | Path | None = None, init_from: dict | None = None,
           overwrite: bool = False, progress: bool = True, start_time: float | None = None,
           on_start: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    t0 = time.time() if start_time is None else start_time
    progress = progress and group.main
    if model_config.bidirectional:
        raise ConfigError("--bidirectional cannot train a next-character model: the reverse "
                          "direction would read the characters it must predict; drop it")
    source = resume if resume is not None else init_from
    source_name = str(resume_path or "the checkpoint")
    if source is not None:
        _check_same_model(source["model_config"], model_config, source_name)
    if c.dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--dtype bfloat16: this GPU does not support bfloat16; "
                          "use --dtype float32")

    # --- data --------------------------------------------------------------------
    text_path = Path(text_path)
    run_dir = Path(c.out) if c.out else (
        Path(resume_path).parent if resume_path else _default_run_dir(text_path, model_config.cell))
    replaced = _check_run_dir_is_free(run_dir, overwrite) if resume is None else []
    cache_dir = Path(c.cache_dir) if c.cache_dir else run_dir.parent / ".cache"
    texts = [(text_path, "training text")] + ([(Path(c.val_file), "validation file")]
                                              if c.val_file else [])
    reading = corpus.ReadingBar(progress, [path for path, _ in texts])
    with group.first_on_each_machine(), reading:
        scans = [corpus.cached_scan(path, cache_dir, what=what, on_read=reading.update)
                 for path, what in texts]
        vocab = corpus.vocab_for(scans, Vocab(source["vocab"]) if source else None,
                                 source=source_name)
        ids, *val = [corpus.cached_ids(path, scan, vocab, cache_dir, what=what,
                                       on_read=reading.update)
                     for (path, what), scan in zip(texts, scans)]
    train_ids, val_ids = split(ids, c.val_fraction) if not val else (ids, val[0])
    if len(val_ids) < 2:
        raise DataError(f"the validation text has {len(val_ids)} character(s); it needs at "
                        "least 2: raise --val-fraction or give a longer --val-file")
    batches = make_batches(train_ids, c.batching, c.batch_size, c.seq_length, c.seed,
                           rows=group.rows(c.batch_size), pin=device.type == "cuda")
    lo, hi = group.share(len(val_ids) - 1)   # this rank scores the targets val_ids[lo + 1:hi + 1]
    val_part = val_ids[lo:hi + 1]

    # --- model and optimiser -----------------------------------------------------
    torch.manual_seed(c.seed)
    model = CharRNN(len(vocab), model_config)
    if source is not None:
        model.load_state_dict(source["model_state"])
    model.to(device).train()
    optimizer = make_optimizer(model, c)
    # ``replica`` runs the training steps: under torchrun it averages the gradients
    # over the processes during backward. ``model`` is the plain module underneath.
    replica = DistributedDataParallel(model) if group.active else model

    step, elapsed_before, best_val, history = 0, 0.0, math.inf, []
    hidden: Hidden | None = None
    decay_from: dict[str, float] | None = None   # {"start", "start_lr"} once warmup is over
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer_state"])
        batches.load_state_dict(resume["data_state"])
        step = int(resume["step"])
        elapsed_before = float(resume["elapsed"])
        best_val = float(resume["best_val_loss"])
        history = list(resume["metrics"])
        hidden = group.my_rows(_to_device(resume.get("hidden"), device), c.batch_size)
        torch.set_rng_state(resume["rng"]["torch"])
        # (A checkpoint from before the schedule was saved: its decay began at 0.)
        decay_from = resume.get("schedule", {"start": 0.0, "start_lr": c.lr}
                                if step >= c.warmup_steps else None)
        if cfg.changes(resume["train_config"], c, ignore=tuple(
                k for k in cfg.fields_of("train") if k not in SCHEDULE_SETTINGS)):
            # A new budget or schedule: decay afresh from here, from the rate the run
            # had reached (or from the new --lr, or from lr once warmup is over).
            same_lr = resume["train_config"].get("lr") == c.lr
            decay_from = {"start": None, "start_lr": optimizer.param_groups[0]["lr"]
                          if same_lr and step >= c.warmup_steps else c.lr}
        if device.type == "cuda" and "cuda" in resume["rng"]:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
    if group.active:  # a different dropout mask on each process
        torch.manual_seed(c.seed + step + group.rank)

    if group.main:  # fp32 weights plus up to two optimiser moments each (Adam), on CPU
        _prepare_run_dir(run_dir, model_config, c, checkpoint_bytes=12 * model.num_parameters(),
                         replaced=replaced)
    max_steps = c.budget_steps()
    step_budgets = [max_steps] if max_steps else []
    if c.epochs:
        step_budgets.append(math.ceil(c.epochs * batches.steps_per_epoch))
    total_steps = min(step_budgets) if step_budgets else None  # None: a time budget only

    def checkpoint_payload(val_loss: float) -> dict[str, Any]:
        """What a checkpoint holds (every rank calls this: the hidden state is gathered)."""
        whole_hidden = group.gather_rows(hidden)
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "model_config": cfg.to_dict(model_config), "train_config": cfg.to_dict(c),
            "vocab": vocab.chars,
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer_state": _to_device(optimizer.state_dict(), torch.device("cpu")),
            "data_state": batches.state_dict(),
            "hidden": _to_device(whole_hidden, torch.device("cpu")),
            "rng": rng, "step": step, "epoch": batches.epoch, "elapsed": elapsed(),
            "best_val_loss": best_val, "val_loss": val_loss, "metrics": history,
            "loss_window": [loss_sum, loss_count], "schedule": decay_from,
            "corpus": {"path": str(text_path), "chars": scans[0].chars,
                       "sha256": scans[0].sha256},
            "world_size": group.world_size,
        }

    def elapsed() -> float:
        return elapsed_before + time.time() - t0

    def budget_progress(reserve: float) -> float:
        fractions = [step / max_steps if max_steps else 0.0,
                     batches.epoch / c.epochs if c.epochs else 0.0]
        if c.max_time:
            fractions.append((elapsed() + reserve) / c.max_time)
        return max(fractions)

    if on_start is not None and group.main:
        budgets = [f"{max_steps} steps" if max_steps else "", f"{c.epochs:g} epochs" if c.epochs
                   else "", f"{c.max_time:g}s" if c.max_time else ""]
        on_start({"text": str(text_path), "chars": scans[0].chars, "vocab_size": len(vocab),
                  "train_chars": len(train_ids), "val_chars": len(val_ids),
                  "model": _describe_model(model_config), "parameters": model.num_parameters(),
                  "device": str(device), "dtype": c.dtype, "batching": c.batching,
                  "batch_size": c.batch_size, "seq_length": c.seq_length,
                  "budget": " or ".join(b for b in budgets if b), "run_dir": str(run_dir),
                  "resumed_at": step, "processes": group.world_size})

    # --- the loop ----------------------------------------------------------------
    # The bar redraws one line in place: only on a terminal. Elsewhere (a log file, a
    # pipe) the evaluation lines alone report progress, one plain line each.
    bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()), file=sys.stderr, leave=True)
    def say(message: str) -> None:  # through the bar, so it is not torn; on stderr
        if progress:
            bar.write(message, file=sys.stderr)

    loss_sum, loss_count, train_time, chars_seen = 0.0, 0, 0.0, 0
    if resume is not None and "loss_window" in resume:
        loss_sum, loss_count = float(resume["loss_window"][0]), int(resume["loss_window"][1])
    eval_seconds = _estimate_eval_seconds(model, val_part, device) if c.max_time else 0.0
    val_loss = history[-1]["val_loss"] if history else math.nan
    first_step_s = math.nan
    session = [0, 0.0]  # characters and seconds of training (not evaluation) in this call
    last_eval_step = step if history else -1
    last_path = run_dir / LAST

    def run_eval() -> None:
        nonlocal best_val, val_loss, eval_seconds, loss_sum, loss_count, train_time
        nonlocal chars_seen, last_eval_step
        t_eval = time.time()
        scored = len(val_part) - 1
        total = evaluate(model, val_part, device) * scored if scored > 0 else 0.0
        total, count = group.sum(total, scored)                  # over all the ranks
        val_loss = total / count
        eval_seconds = time.time() - t_eval
        rate = chars_seen / train_time if train_time else math.nan
        session[0] += chars_seen
        session[1] += train_time
        history.append({"step": step, "elapsed_s": round(elapsed(), 3),
                        "epoch": round(batches.epoch, 4),
                        "lr": optimizer.param_groups[0]["lr"],
                        "train_loss": loss_sum / loss_count if loss_count else math.nan,
                        "val_loss": val_loss, "val_bpc": val_loss / LN2,
                        "chars_per_s": round(rate, 1)})
        improved = val_loss < best_val
        best_val = min(best_val, val_loss)
        payload = checkpoint_payload(val_loss)
        if group.main:
            if improved:
                save_checkpoint(payload, run_dir / BEST)
            save_checkpoint(payload, last_path)
            _write_metrics(run_dir, history)
            if c.tensorboard:
                from charrnn.tblog import log_eval
                log_eval(run_dir, history[-1])
        say(f"step {step}: train {history[-1]['train_loss']:.4f}  val {val_loss:.4f} "
                  f"nats/char ({val_loss / LN2:.3f} bits/char)  best {best_val:.4f}")
        loss_sum, loss_count, train_time, chars_seen = 0.0, 0, 0.0, 0
        last_eval_step = step

    with _catch_stop_signals() as stop:
        while True:
            # All ranks take the same decisions: on the mean of their clocks, and on
            # a stop request that reached any of them.
            progress_now, stopping = group.mean(budget_progress(reserve=eval_seconds),
                                                float(stop.signum is not None))
            if stopping:
                payload = checkpoint_payload(val_loss)
                if group.main:
                    save_checkpoint(payload, last_path)
                bar.close()
                raise TrainingInterrupted(str(last_path), stop.signum or signal.SIGTERM)
            if progress_now >= 1.0:
                break
            t_step = time.time()
            if step >= c.warmup_steps and (decay_from is None or decay_from["start"] is None):
                decay_from = {"start": min(progress_now, 1.0),
                              "start_lr": decay_from["start_lr"] if decay_from else c.lr}
            lr = lr_at(step, progress_now, c, **(decay_from or {}))
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            batch = batches.next()
            if batch.fresh:
                hidden = None
            window = batch.window.to(device, non_blocking=True)      # (B, T + 1)
            x, y = window[:, :-1], window[:, 1:]                      # (B, T) each
            with autocast(device, c.dtype):
                logits, hidden = replica(x, hidden)                  # (B, T, V)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
            optimizer.step()
            hidden = detach_hidden(hidden)
            (loss_value,) = group.mean(loss.item())                  # over the whole batch
            if not math.isfinite(loss_value):
                kept = f"; last good checkpoint: {last_path}" if last_path.exists() else ""
                raise CharRNNError(f"training diverged: loss is {loss_value} at step "
                                   f"{step + 1}{kept}; lower --lr or set --grad-clip")
            step += 1
            if math.isnan(first_step_s):
                first_step_s = time.time() - t0
            train_time += time.time() - t_step
            chars_seen += x.numel() * group.world_size
            loss_sum += loss_value
            loss_count += 1
            rate = chars_seen / max(train_time, 1e-9)   # before an evaluation resets it
            if step % c.eval_every == 0:
                run_eval()
            if progress and c.sample_every and step % c.sample_every == 0:
                text_sample = "".join(generate(model, vocab, c.sample_length, seed=c.seed + step))
                say(f"--- sample at step {step} ---\n{text_sample}\n---")
            bar.set_postfix_str(f"loss {loss_value:.3f} val "
                                f"{'-' if math.isnan(val_loss) else f'{val_loss:.3f}'} "
                                f"{rate:,.0f} chars/s"
                                + (f" left {max(0.0, c.max_time - elapsed()):.0f}s"
                                   if c.max_time else ""), refresh=False)
            bar.update(1)
        if last_eval_step != step:
            run_eval()
    bar.close()
    return RunResult(run_dir=run_dir, step=step, elapsed=elapsed(), best_val_loss=best_val,
                     val_loss=val_loss,
                     chars_per_s=session[0] / session[1] if session[1] else math.nan,
                     first_step_s=first_step_s, rank=group.rank)


def _describe_model(m: cfg.ModelConfig) -> str:
    cell = f"rnn-{m.nonlinearity}" if m.cell == "rnn" else m.cell
    extra = [f"proj {m.proj_size}" if m.proj_size else "", f"dropout {m.dropout:g}"
             if m.dropout else "", "tied" if m.tie_weights else ""]
    return (f"{m.num_layers}x{m.hidden_size} {cell}, embedding {m.embedding_dim}"
            + "".join(f", {e}" for e in extra if e))


def _to_device(obj: Any, device: torch.device) -> Any:
    """Tensors inside nested dicts / lists / tuples moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj
