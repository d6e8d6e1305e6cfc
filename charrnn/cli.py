"""The ``charrnn`` command: train, sample, inspect.

Each command parses its flags, builds configs, calls one library function and renders
the result: generated text and JSON on stdout, everything else on stderr. torch is
imported inside the commands, so ``charrnn --help`` answers at once. Errors a user
can cause are ``CharRNNError``s: one line on stderr, exit code 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from charrnn import __version__
from charrnn import config as cfg
from charrnn.errors import CharRNNError, ConfigError, TrainingInterrupted

app = typer.Typer(
    name="charrnn",
    help="Train a character-level RNN / LSTM / GRU on your own text, sample from it, "
         "and see exactly what PyTorch's recurrent modules compute.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
# typer re-exports click's BadParameter (from click itself, or from the copy of click
# that newer typer releases carry); its parent is the UsageError of every bad flag.
_UsageError = typer.BadParameter.__mro__[1]

MODEL, DATA, OPTIM, BUDGET, RUN = "Model", "Data", "Optimiser", "Budget and logging", "Run"


def _opt(section: str, name: str, *flags: str, panel: str, **kwargs: Any):
    """A flag whose help and default come from the config dataclass; the flag itself
    defaults to None so that only what the user typed overrides the config."""
    flag = flags or ("--" + name.replace("_", "-"),)
    return typer.Option(*flag, help=cfg.help_for(section, name), rich_help_panel=panel,
                        show_default=False, **kwargs)


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")]
        = False) -> None:
    """Train a character-level RNN / LSTM / GRU on your own text, sample from it, and
    see exactly what PyTorch's recurrent modules compute."""


@app.command(epilog="Example: charrnn train shakespeare.txt --cell lstm --max-time 300")
def train(
    text: Annotated[Optional[Path], typer.Argument(
        help="UTF-8 text file to learn from (optional with --resume).",
        show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="TOML file with [model] and [train] tables (see configs/); "
        "flags override it.", rich_help_panel=RUN)] = None,
    cell: Annotated[Optional[str], _opt("model", "cell", panel=MODEL)] = None,
    nonlinearity: Annotated[Optional[str], _opt("model", "nonlinearity", panel=MODEL)] = None,
    embedding_dim: Annotated[Optional[int], _opt("model", "embedding_dim", panel=MODEL)] = None,
    hidden_size: Annotated[Optional[int], _opt("model", "hidden_size", panel=MODEL)] = None,
    num_layers: Annotated[Optional[int], _opt("model", "num_layers", panel=MODEL)] = None,
    dropout: Annotated[Optional[float], _opt("model", "dropout", panel=MODEL)] = None,
    proj_size: Annotated[Optional[int], _opt("model", "proj_size", panel=MODEL)] = None,
    tie_weights: Annotated[Optional[bool], _opt(
        "model", "tie_weights", "--tie-weights/--no-tie-weights", panel=MODEL)] = None,
    bidirectional: Annotated[Optional[bool], typer.Option(
        "--bidirectional", help="Refused: a next-character model must not see the future.",
        rich_help_panel=MODEL)] = None,
    seq_length: Annotated[Optional[int], _opt("train", "seq_length", panel=DATA)] = None,
    batch_size: Annotated[Optional[int], _opt("train", "batch_size", panel=DATA)] = None,
    batching: Annotated[Optional[str], _opt("train", "batching", panel=DATA)] = None,
    val_fraction: Annotated[Optional[float], _opt("train", "val_fraction", panel=DATA)] = None,
    val_file: Annotated[Optional[str], _opt("train", "val_file", panel=DATA)] = None,
    optimizer: Annotated[Optional[str], _opt("train", "optimizer", panel=OPTIM)] = None,
    lr: Annotated[Optional[float], _opt("train", "lr", panel=OPTIM)] = None,
    weight_decay: Annotated[Optional[float], _opt("train", "weight_decay", panel=OPTIM)] = None,
    grad_clip: Annotated[Optional[float], _opt("train", "grad_clip", panel=OPTIM)] = None,
    warmup_steps: Annotated[Optional[int], _opt("train", "warmup_steps", panel=OPTIM)] = None,
    max_steps: Annotated[Optional[int], _opt("train", "max_steps", panel=BUDGET)] = None,
    epochs: Annotated[Optional[float], _opt("train", "epochs", panel=BUDGET)] = None,
    max_time: Annotated[Optional[float], _opt("train", "max_time", panel=BUDGET)] = None,
    eval_every: Annotated[Optional[int], _opt("train", "eval_every", panel=BUDGET)] = None,
    sample_every: Annotated[Optional[int], _opt("train", "sample_every", panel=BUDGET)] = None,
    out: Annotated[Optional[str], _opt("train", "out", panel=RUN)] = None,
    seed: Annotated[Optional[int], _opt("train", "seed", panel=RUN)] = None,
    device: Annotated[Optional[str], _opt("train", "device", panel=RUN)] = None,
    dtype: Annotated[Optional[str], _opt("train", "dtype", panel=RUN)] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue a run exactly: its folder or a checkpoint in it.",
        rich_help_panel=RUN)] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        help="Start from this checkpoint's weights (same model and vocabulary).",
        rich_help_panel=RUN)] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar or samples; print the summary only.",
        rich_help_panel=RUN)] = False,
) -> None:
    """Train a model on TEXT; checkpoints and metrics go to a run folder under runs/."""
    start = time.time()
    given = locals()
    flags = {section: {f: given[f] for f in cfg.fields_of(section) if f in given}
             for section in cfg.SECTIONS}
    from charrnn.checkpoint import load_checkpoint, resolve_checkpoint
    from charrnn.train import train as run_training

    if resume and init_from:
        raise ConfigError("--resume and --init-from exclude each other; give one")
    base: dict[str, dict[str, Any]] = {name: {} for name in cfg.SECTIONS}
    source = source_path = None
    if resume or init_from:
        source_path = resolve_checkpoint(resume or init_from, name="last.pt" if resume else "best.pt")
        source = load_checkpoint(source_path)
        base["model"] = dict(source["model_config"])
        if resume:
            base["train"] = {k: v for k, v in source["train_config"].items() if k != "out"}
    model_config, train_config = _resolve(base, config, flags)
    if resume:
        _say_changed(source["train_config"], train_config)
    if text is None:
        if not resume:
            raise ConfigError("give the TEXT file to train on, e.g. charrnn train input.txt")
        text = Path(source["corpus"]["path"])
    result = run_training(text, model_config, train_config,
                          resume=source if resume else None,
                          resume_path=source_path if resume else None,
                          init_from=source if init_from else None, progress=not quiet,
                          start_time=start, on_start=None if quiet else _show_start)
    err.print(f"[bold]done[/bold]: {result.step} steps in {result.elapsed:.0f}s, "
              f"{result.chars_per_s:,.0f} chars/s; val loss {result.val_loss:.4f} nats/char "
              f"({result.val_loss / 0.6931471805599453:.3f} bits/char), best "
              f"{result.best_val_loss:.4f}")
    err.print(f"checkpoints: {result.run_dir}/best.pt, {result.run_dir}/last.pt")
    err.print("next: charrnn sample --len 200")


def _resolve(base: dict[str, dict[str, Any]], config_file: Path | None,
             flags: dict[str, dict[str, Any]]) -> tuple[cfg.ModelConfig, cfg.TrainConfig]:
    """Defaults < checkpoint (when continuing) < config file < flags."""
    layers = {name: dict(values) for name, values in base.items()}
    if config_file:
        for name, values in cfg.read_toml(config_file).items():
            layers[name].update(values)
    for name, values in flags.items():
        layers[name].update({k: v for k, v in values.items() if v is not None})
    return cfg.build("model", layers["model"]), cfg.build("train", layers["train"])


def _say_changed(saved: dict[str, Any], now: cfg.TrainConfig) -> None:
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in cfg.to_dict(now).items()
               if k != "out" and saved.get(k) != v]
    if changed:
        err.print("resuming with changed training settings: " + "; ".join(changed))


def _show_start(info: dict[str, Any]) -> None:
    err.print(f"[bold]charrnn train[/bold] {info['text']}: {info['chars']:,} characters, "
              f"vocabulary {info['vocab_size']}, train {info['train_chars']:,} / "
              f"val {info['val_chars']:,}")
    err.print(f"model: {info['model']} ({info['parameters']:,} parameters) on "
              f"{info['device']} {info['dtype']}; {info['batching']} batches of "
              f"{info['batch_size']}x{info['seq_length']}; budget {info['budget']}")
    err.print(f"run folder: {info['run_dir']}")


@app.command(epilog="Example: charrnn sample --len 500 --prime 'ROMEO:' --temperature 0.8")
def sample(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="Checkpoint file or run folder [default: best.pt of the newest run under runs/]",
        show_default=False)] = None,
    length: Annotated[int, typer.Option(
        "--len", "-n", help="New characters to generate per sample.")] = 200,
    prime: Annotated[Optional[str], typer.Option(
        help="Text to start from; printed before the new characters.")] = None,
    temperature: Annotated[float, typer.Option(
        "--temperature", "-t", help="Below 1: safer, more repetitive; above 1: wilder.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(
        help="Draw only from the K most likely characters.")] = None,
    top_p: Annotated[Optional[float], typer.Option(
        help="Draw only from the most likely characters whose probabilities add up to P.")]
        = None,
    greedy: Annotated[bool, typer.Option(
        "--greedy", help="Always take the most likely character.")] = False,
    seed: Annotated[Optional[int], typer.Option(
        help="Same seed, same text [default: random].")] = None,
    num_samples: Annotated[int, typer.Option(
        help="Independent samples, generated together as one batch.")] = 1,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the text to this file instead of stdout.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Generate text from a trained model (text on stdout, nothing else)."""
    checks = [(length >= 1, f"--len must be at least 1, got {length}"),
              (temperature > 0, f"--temperature must be greater than 0, got {temperature}"),
              (top_k is None or top_k >= 1, f"--top-k must be at least 1, got {top_k}"),
              (top_p is None or 0 < top_p <= 1, f"--top-p must be in (0, 1], got {top_p}"),
              (num_samples >= 1, f"--num-samples must be at least 1, got {num_samples}")]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from charrnn.sample import generate
    from charrnn.train import resolve_device

    path = resolve_checkpoint(checkpoint)
    if checkpoint is None or Path(checkpoint).is_dir():
        err.print(f"sampling from {path}")
    model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    model.to(resolve_device(device))
    steps = generate(model, vocab, length, prime=prime, num_samples=num_samples,
                     temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                     seed=seed)
    stream = _open_output(output)
    try:
        if num_samples == 1:
            stream.write(prime or "")
            for ch in steps:
                stream.write(ch)
                if ch == "\n":
                    stream.flush()
            stream.write("\n")
        else:
            columns = list(steps)
            for i in range(num_samples):
                stream.write((prime or "") + "".join(col[i] for col in columns) + "\n")
                if i + 1 < num_samples:
                    stream.write("\n")
        stream.flush()
    finally:
        if output:
            stream.close()
            err.print(f"wrote {num_samples} sample(s) to {output}")


def _open_output(output: Path | None):
    if output is None:
        return sys.stdout
    try:
        return open(output, "w", encoding="utf-8")
    except OSError as e:
        raise CharRNNError(f"cannot write {output}: {e.strerror}") from None


@app.command(epilog="Example: charrnn inspect --cell rnn --input-size 10 --hidden-size 20 "
             "--num-layers 2 --seq-length 5 --batch-size 3 --no-batch-first --verify")
def inspect(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="Checkpoint file or run folder; without one, describe the model the options "
             "build.", show_default=False)] = None,
    cell: Annotated[Optional[str], _opt("model", "cell", panel=MODEL)] = None,
    nonlinearity: Annotated[Optional[str], _opt("model", "nonlinearity", panel=MODEL)] = None,
    embedding_dim: Annotated[Optional[int], _opt(
        "model", "embedding_dim", "--embedding-dim", "--input-size", panel=MODEL)] = None,
    hidden_size: Annotated[Optional[int], _opt("model", "hidden_size", panel=MODEL)] = None,
    num_layers: Annotated[Optional[int], _opt("model", "num_layers", panel=MODEL)] = None,
    proj_size: Annotated[Optional[int], _opt("model", "proj_size", panel=MODEL)] = None,
    bidirectional: Annotated[Optional[bool], typer.Option(
        "--bidirectional", help="Add the reversed direction (to see how it stacks).",
        rich_help_panel=MODEL)] = None,
    batch_first: Annotated[bool, typer.Option(
        "--batch-first/--no-batch-first", help="Tensor layout: (N, L, H) or (L, N, H).",
        rich_help_panel="Forward pass")] = True,
    seq_length: Annotated[int, typer.Option(
        help="L: time steps of the example forward pass.",
        rich_help_panel="Forward pass")] = 5,
    batch_size: Annotated[int, typer.Option(
        help="N: sequences in the example forward pass.",
        rich_help_panel="Forward pass")] = 3,
    vocab_size: Annotated[int, typer.Option(
        help="V: vocabulary size when there is no checkpoint.",
        rich_help_panel="Forward pass")] = 65,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Recompute the forward pass from the equations and compare.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
) -> None:
    """Explain a model: its parameters, the tensor shapes of a forward pass, the equations."""
    given = {"cell": cell, "nonlinearity": nonlinearity, "embedding_dim": embedding_dim,
             "hidden_size": hidden_size, "num_layers": num_layers, "proj_size": proj_size,
             "bidirectional": bidirectional}
    for name, value in (("--seq-length", seq_length), ("--batch-size", batch_size),
                        ("--vocab-size", vocab_size)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    from charrnn import views
    from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from charrnn.inspect import describe, describe_checkpoint

    ckpt_info = None
    if checkpoint is not None:
        named = [n for n, v in given.items() if v is not None]
        if named:
            raise ConfigError(f"the checkpoint fixes the model; drop --{named[0].replace('_', '-')}")
        path = resolve_checkpoint(checkpoint)
        ckpt = load_checkpoint(path)
        model, vocab = model_from_checkpoint(ckpt, path)
        report = describe(model.config, vocab_size=len(vocab), seq_length=seq_length,
                          batch_size=batch_size, batch_first=True, verify=verify, model=model)
        ckpt_info = describe_checkpoint(ckpt)
        ckpt_info["path"] = str(path)
        if not batch_first:
            err.print("note: a trained model is batch-first; showing that layout")
    else:
        model_config = cfg.build("model", {k: v for k, v in given.items() if v is not None})
        report = describe(model_config, vocab_size=vocab_size, seq_length=seq_length,
                          batch_size=batch_size, batch_first=batch_first, verify=verify)
    if as_json:
        if ckpt_info is not None:
            report["checkpoint"] = ckpt_info
        print(json.dumps(report, indent=2))
    else:
        out = Console(highlight=False)
        if ckpt_info is not None:
            views.render_checkpoint(ckpt_info, out)
        views.render_inspect(report, out)
    if verify and not report["verify_ok"]:
        raise CharRNNError("verification failed: the equations and the module disagree "
                           "(see the differences above)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and an exit code."""
    try:
        code = app(args=argv, prog_name="charrnn", standalone_mode=False)
    except CharRNNError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    except TrainingInterrupted as e:
        err.print(escape(f"interrupted: saved {e.checkpoint}; continue with "
                         f"charrnn train --resume {Path(e.checkpoint).parent}"), soft_wrap=True)
        sys.exit(128 + e.signum)
    except _UsageError as e:
        hint = f" (see 'charrnn {e.ctx.info_name} --help')" if e.ctx and e.ctx.parent else \
            " (see 'charrnn --help')"
        err.print(f"[bold red]usage error:[/bold red] {escape(e.format_message())}{hint}",
                  soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()  # a reader such as `head` closed the pipe: not an error
        sys.exit(0)
    sys.exit(code if isinstance(code, int) else 0)
