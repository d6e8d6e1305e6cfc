"""The ``charrnn`` command: train, sample, eval, inspect, runs, plot, download, config.

Each command parses its flags, builds configs, calls one library function and renders
the result: generated text and JSON on stdout, everything else on stderr. torch is
imported inside the commands, so ``charrnn --help`` answers at once. Errors a user
can cause are ``CharRNNError``s: one line on stderr, exit code 1.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
import sys
import time
from inspect import Parameter, Signature, signature
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from charrnn import __version__
from charrnn import config as cfg
from charrnn.errors import CharRNNError, ConfigError, TrainingInterrupted

LN2 = math.log(2.0)  # nats per bit
STARTED = time.time()  # the wall-clock budget of `train --max-time` counts from here

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
# Panels of `charrnn --help`, one per kind of command.
USE, LOOK, SETUP = "Train and use a model", "Look inside and compare", "Data and settings"


def _opt(section: str, name: str, *flags: str, panel: str, **kwargs: Any):
    """A flag whose help and default come from the config dataclass; the flag itself
    defaults to None so that only what the user typed overrides the config."""
    flag = flags or ("--" + name.replace("_", "-"),)
    choices = cfg.choices_for(section, name)
    if choices:  # the shell completes the value too
        kwargs.setdefault("autocompletion",
                          lambda incomplete: [c for c in choices if c.startswith(incomplete)])
    return typer.Option(*flag, help=escape(cfg.help_for(section, name)), rich_help_panel=panel,
                        show_default=False, **kwargs)


# The flags of every setting in ModelConfig / TrainConfig that a command line may give:
# (section, name, type, help panel, flag names if not --name). `train` and `config show`
# take them all (``with_settings``); each is declared here once.
SETTINGS = (
    [("model", name, kind, MODEL, ()) for name, kind in (
        ("cell", str), ("nonlinearity", str), ("embedding_dim", int), ("hidden_size", int),
        ("num_layers", int), ("dropout", float), ("proj_size", int))]
    + [("model", "tie_weights", bool, MODEL, ("--tie-weights/--no-tie-weights",)),
       ("model", "bidirectional", bool, MODEL, ("--bidirectional",))]
    + [("train", name, kind, DATA, ()) for name, kind in (
        ("seq_length", int), ("batch_size", int), ("batching", str), ("val_fraction", float),
        ("val_file", str), ("cache_dir", str))]
    + [("train", name, kind, OPTIM, ()) for name, kind in (
        ("optimizer", str), ("lr", float), ("decay", str), ("min_lr_ratio", float),
        ("weight_decay", float), ("grad_clip", float), ("warmup_steps", int))]
    + [("train", name, kind, BUDGET, ()) for name, kind in (
        ("max_steps", int), ("epochs", float), ("max_time", float), ("eval_every", int),
        ("sample_every", int))]
    + [("train", "tensorboard", bool, BUDGET, ("--tensorboard/--no-tensorboard",))]
    + [("train", name, kind, RUN, ()) for name, kind in (
        ("out", str), ("seed", int), ("device", str), ("dtype", str))]
)


def with_settings(command):
    """Give ``command`` one option per entry of SETTINGS, after its own parameters; it
    receives what was typed as ``settings``: {section: {name: value or None}}."""
    own = [p for p in signature(command, eval_str=True).parameters.values()
           if p.name != "settings"]
    added = [Parameter(name, Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                 Optional[kind], _opt(section, name, *flags, panel=panel)])
             for section, name, kind, panel, flags in SETTINGS]

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        settings: dict[str, dict[str, Any]] = {section: {} for section in cfg.SECTIONS}
        for section, name, *_ in SETTINGS:
            settings[section][name] = values.pop(name)
        return command(settings=settings, **values)

    run.__signature__ = Signature(own + added)
    return run


# Where sample, inspect, plot and runs look for runs when given none: one option, and
# an environment variable for a session spent elsewhere.
RunsDir = Annotated[Path, typer.Option(
    "--runs-dir", envvar="CHARRNN_RUNS_DIR", help="Folder of run folders where the newest "
    "run is looked for when none is given (or set CHARRNN_RUNS_DIR).")]


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


@app.command(epilog="Example: charrnn train shakespeare.txt --cell lstm --max-time 300",
             rich_help_panel=USE)
@with_settings
def train(
    text: Annotated[Optional[Path], typer.Argument(
        help="UTF-8 text file to learn from (optional with --resume).",
        show_default=False, autocompletion=lambda incomplete: _complete_text(incomplete))]
        = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="TOML file with \\[model] and \\[train] tables (see configs/); "
        "flags override it.", rich_help_panel=RUN)] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue a run exactly: its folder or a checkpoint in it.",
        rich_help_panel=RUN)] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        help="Start from this checkpoint's weights (same model and vocabulary).",
        rich_help_panel=RUN)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Let a new run replace the checkpoints and metrics of the run "
        "already in its --out folder.", rich_help_panel=RUN)] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar or samples; print the summary only.",
        rich_help_panel=RUN)] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Also print the final summary as JSON on stdout.",
        rich_help_panel=RUN)] = False,
    settings: Optional[dict] = None,
) -> None:
    """Train a model on TEXT; checkpoints and metrics go to a run folder under runs/.

    TEXT is a UTF-8 file, or the name of a corpus fetched by charrnn download."""
    from charrnn.checkpoint import load_checkpoint, resolve_checkpoint
    from charrnn.download import resolve_text
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
    model_config, train_config = cfg.resolve(config, settings, base)
    if resume:
        _say_changed(source["train_config"], train_config)
    if text is None:
        if not resume:
            raise ConfigError("give the TEXT file to train on, e.g. charrnn train input.txt")
        text = Path(source["corpus"]["path"])
    text = resolve_text(text)
    if train_config.tensorboard:
        from charrnn.tblog import require

        require()
    result = run_training(text, model_config, train_config,
                          resume=source if resume else None,
                          resume_path=source_path if resume else None,
                          init_from=source if init_from else None, overwrite=overwrite,
                          progress=not quiet,
                          start_time=STARTED, on_start=None if quiet else _show_start)
    if result.rank != 0:  # under torchrun, rank 0 reports for the group
        return
    err.print(f"[bold]done[/bold]: {result.step} steps in {result.elapsed:.0f}s (first step "
              f"after {result.first_step_s:.1f}s), {result.chars_per_s:,.0f} chars/s; val loss "
              f"{result.val_loss:.4f} nats/char ({result.val_loss / LN2:.3f} bits/char), best "
              f"{result.best_val_loss:.4f}")
    err.print(escape(f"checkpoints: {result.run_dir}/best.pt, {result.run_dir}/last.pt"))
    # Without a path, sample reads the newest run under runs/: name any other folder.
    default = Path(result.run_dir).resolve().parent == Path("runs").resolve()
    where = "" if default else f" {shlex.quote(str(result.run_dir))}"
    err.print(escape(f"next: charrnn sample{where} --len 200"))
    if as_json:
        print(json.dumps(_train_summary(result)))


def _train_summary(result: Any) -> dict[str, Any]:
    """The end of a run for scripts (no NaN: JSON has none, a missing number is null)."""
    def number(x: float, digits: int | None = None) -> float | None:
        if x != x or abs(x) == float("inf"):
            return None
        return x if digits is None else round(x, digits)

    bits = 1 / LN2
    return {"run_dir": str(result.run_dir), "step": result.step,
            "elapsed_s": number(result.elapsed, 3),
            "first_step_s": number(result.first_step_s, 3), "val_loss": number(result.val_loss),
            "val_bpc": number(result.val_loss * bits),
            "best_val_loss": number(result.best_val_loss),
            "best_val_bpc": number(result.best_val_loss * bits),
            "chars_per_s": number(result.chars_per_s, 1),
            "best": str(Path(result.run_dir) / "best.pt"),
            "last": str(Path(result.run_dir) / "last.pt")}


def _say_changed(saved: dict[str, Any], now: cfg.TrainConfig) -> None:
    changed = cfg.changes(saved, now, ignore=("out", "cache_dir"))
    if changed:
        err.print("resuming with changed training settings: " + "; ".join(changed))


def _show_start(info: dict[str, Any]) -> None:
    err.print(f"[bold]charrnn train[/bold] {escape(info['text'])}: {info['chars']:,} characters, "
              f"vocabulary {info['vocab_size']}, train {info['train_chars']:,} / "
              f"val {info['val_chars']:,}")
    err.print(f"model: {info['model']} ({info['parameters']:,} parameters) on "
              f"{info['device']} {info['dtype']}; {info['batching']} batches of "
              f"{info['batch_size']}x{info['seq_length']}; budget {info['budget']}")
    if info["processes"] > 1:
        err.print(f"data parallel: {info['processes']} processes, "
                  f"{info['batch_size'] // info['processes']} rows of each batch apiece")
    err.print(f"run folder: {escape(info['run_dir'])}")


@app.command(epilog="Example: charrnn sample --len 500 --prime 'ROMEO:' --temperature 0.8",
             rich_help_panel=USE)
def sample(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="Checkpoint file or run folder \\[default: best.pt of the newest run under "
             "--runs-dir]", show_default=False)] = None,
    runs_dir: RunsDir = Path("runs"),
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
        help="Same seed, same text \\[default: random].")] = None,
    num_samples: Annotated[int, typer.Option(
        help="Independent samples, generated together as one batch, separated by a blank "
        "line.")] = 1,
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

    path = resolve_checkpoint(checkpoint, runs_dir)
    if checkpoint is None or Path(checkpoint).is_dir():
        err.print(escape(f"sampling from {path}"))
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
        else:
            columns = list(steps)
            stream.write("\n\n".join((prime or "") + "".join(col[i] for col in columns)
                                     for i in range(num_samples)))
        # Exactly the text asked for; on a terminal, a newline so the prompt starts afresh.
        if stream.isatty():
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


# The example forward pass of `inspect` for a model built from flags: L steps, N sequences,
# V characters (tiny-shakespeare's).
EXAMPLE_L, EXAMPLE_N, EXAMPLE_V = 5, 3, 65


@app.command(epilog="Example: charrnn inspect --cell rnn --input-size 10 --hidden-size 20 "
             "--num-layers 2 --seq-length 5 --batch-size 3 --no-batch-first --verify",
             rich_help_panel=LOOK)
def inspect(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="Checkpoint file or run folder \\[default: the newest run under --runs-dir, or "
             "with model flags the model they build].", show_default=False)] = None,
    runs_dir: RunsDir = Path("runs"),
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
    seq_length: Annotated[Optional[int], typer.Option(
        help="L: time steps of the example forward pass \\[default: the run's seq_length; "
             "5 for a model built from flags].", rich_help_panel="Forward pass",
        show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="N: sequences in the example forward pass \\[default: the run's batch_size; "
             "3 for a model built from flags].", rich_help_panel="Forward pass",
        show_default=False)] = None,
    vocab_size: Annotated[Optional[int], typer.Option(
        help="V: vocabulary size of a model built from flags \\[default: 65].",
        rich_help_panel="Forward pass", show_default=False)] = None,
    equations: Annotated[bool, typer.Option(
        "--equations", help="Write out the cell's equations with this model's sizes, which "
        "parameter rows hold which gate, and how layers, directions and h_n stack.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Recompute the forward pass from the equations and compare.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
    corpus: Annotated[Optional[Path], typer.Option(
        help="With a checkpoint: count each vocabulary character in this text file "
             "(e.g. the training text).")] = None,
    activations: Annotated[Optional[str], typer.Option(
        "--activations", metavar="TEXT_OR_FILE", rich_help_panel="Neurons",
        help="Run the trained model over this text (or the file it names) and colour each "
             "character by what the chosen neurons do there.")] = None,
    layer: Annotated[Optional[int], typer.Option(
        help="Layer whose neurons to show, 0 = the lowest (default: the top one).",
        rich_help_panel="Neurons", show_default=False)] = None,
    neuron: Annotated[Optional[list[int]], typer.Option(
        help="A neuron to show, by index; repeat for several.", rich_help_panel="Neurons",
        show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option(
        help="Show the K neurons that follow --signal best (|correlation|), or without a "
             "signal the K that vary most (default: 5).", rich_help_panel="Neurons",
        show_default=False)] = None,
    signal: Annotated[Optional[str], typer.Option(
        help="What to rank neurons against: quote (inside double quotes), line-position "
             "(characters since the line began), indent (leading spaces) or brackets "
             "(nesting depth of ( [ {).", rich_help_panel="Neurons",
        show_default=False)] = None,
    state: Annotated[str, typer.Option(
        help="h: each layer's output; c: an LSTM's cell state, shown as tanh(c).",
        rich_help_panel="Neurons")] = "h",
    predictions: Annotated[bool, typer.Option(
        "--predictions", help="Also show the likeliest next characters, with their "
        "probabilities, at every position.", rich_help_panel="Neurons")] = False,
    html: Annotated[Optional[Path], typer.Option(
        help="Write the neuron view to this self-contained HTML page instead of the "
             "terminal.", rich_help_panel="Neurons", show_default=False)] = None,
) -> None:
    """Explain a model: its parameters, costs, the tensor shapes of a forward pass and the
    equations; or, with --activations, what its neurons do over a text.

    Without a checkpoint or model flags it explains the newest run under --runs-dir, like
    sample; model flags (or --vocab-size, --no-batch-first) build a model instead."""
    given = {"cell": cell, "nonlinearity": nonlinearity, "embedding_dim": embedding_dim,
             "hidden_size": hidden_size, "num_layers": num_layers, "proj_size": proj_size,
             "bidirectional": bidirectional}
    named = [n for n, v in given.items() if v is not None]
    neuron_flags = {"--layer": layer, "--neuron": neuron or None, "--top": top,
                    "--signal": signal, "--state": None if state == "h" else state,
                    "--predictions": predictions or None, "--html": html}
    for name, value in (("--seq-length", seq_length), ("--batch-size", batch_size),
                        ("--vocab-size", vocab_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    from charrnn import views
    from charrnn.checkpoint import (latest_checkpoint, load_checkpoint, model_from_checkpoint,
                                    resolve_checkpoint)
    from charrnn.data import load_text
    from charrnn.errors import CheckpointError
    from charrnn.inspect import describe, describe_checkpoint

    if activations is not None:
        other = [flag for flag, on in (("--equations", equations), ("--verify", verify),
                                       ("--corpus", corpus)) if on]
        if other:
            raise ConfigError(f"{other[0]} does not go with --activations; run them as two "
                              "commands")
        if named:
            raise ConfigError(f"the checkpoint fixes the model; drop "
                              f"--{named[0].replace('_', '-')}")
        from charrnn.activations import activation_report, read_text
        from charrnn.html_page import check_path, write_page

        if html is not None:
            check_path(html)
        path = resolve_checkpoint(checkpoint, runs_dir)
        model, vocab = model_from_checkpoint(load_checkpoint(path), path)
        text, source = read_text(activations)
        report = activation_report(model, vocab, text, layer=layer, neurons=neuron, top=top,
                                   signal_name=signal, state=state, source=source)
        report["checkpoint"] = str(path)
        if checkpoint is None or Path(checkpoint).is_dir():
            err.print(f"read the neurons of {path}")
        if report["truncated_from"]:
            err.print(f"note: showing the first {len(report['text']):,} of "
                      f"{report['truncated_from']:,} characters")
        if html is not None:
            write_page(report, html, title=f"charrnn activations: {path}")
            err.print(f"wrote {html}")
        elif as_json:
            print(json.dumps(report))
        else:
            views.render_activations(report, Console(highlight=False),
                                     predictions=predictions)
        return

    needs = next((flag for flag, value in neuron_flags.items() if value is not None), None)
    if needs:
        raise ConfigError(f"{needs} needs --activations TEXT_OR_FILE (the text to run the "
                          "model over)")
    ckpt_info, path = None, None
    if checkpoint is not None:
        if named:
            raise ConfigError(f"the checkpoint fixes the model; drop "
                              f"--{named[0].replace('_', '-')}")
        path = resolve_checkpoint(checkpoint)
    elif not named and vocab_size is None and batch_first:
        try:
            path = latest_checkpoint(runs_dir)
        except CheckpointError:  # no run yet: the model the default flags build
            pass
    if path is not None:
        ckpt = load_checkpoint(path)
        model, vocab = model_from_checkpoint(ckpt, path)
        trained = ckpt.get("train_config") or {}
        optimizer = trained.get("optimizer")
        report = describe(model.config, vocab_size=len(vocab),
                          seq_length=seq_length or trained.get("seq_length", EXAMPLE_L),
                          batch_size=batch_size or trained.get("batch_size", EXAMPLE_N),
                          batch_first=True, verify=verify, model=model,
                          train_config=cfg.build("train", {"optimizer": optimizer}
                                                 if optimizer else {}))
        corpus_text = None if corpus is None else load_text(corpus, what="corpus file")
        ckpt_info = describe_checkpoint(ckpt, corpus=corpus_text)
        ckpt_info["path"] = str(path)
        if not batch_first:
            err.print("note: a trained model is batch-first; showing that layout")
    else:
        if corpus is not None:
            raise ConfigError("--corpus counts a checkpoint's vocabulary; give the checkpoint "
                              "too, e.g. charrnn inspect runs/<run> --corpus input.txt")
        model_config = cfg.build("model", {k: v for k, v in given.items() if v is not None})
        report = describe(model_config, vocab_size=vocab_size or EXAMPLE_V,
                          seq_length=seq_length or EXAMPLE_L, batch_size=batch_size or EXAMPLE_N,
                          batch_first=batch_first, verify=verify)
    if checkpoint is None or Path(checkpoint).is_dir():
        err.print(escape(f"describing {path}" if path else
                         "describing the model the flags build (not a trained run)"))
    if as_json:
        if ckpt_info is not None:
            report["checkpoint"] = ckpt_info
        print(json.dumps(report, indent=2))
    else:
        out = Console(highlight=False)
        if ckpt_info is not None and not equations:
            views.render_checkpoint(ckpt_info, out)
        views.render_inspect(report, out, equations=equations)
    if verify and not report["verify_ok"]:
        raise CharRNNError("verification failed: the equations and the module disagree "
                           "(see the differences above)")


# --- everyday use: eval, runs, plot, download, config --------------------------------
# Each reads files and calls one library function (scoring, runs, plot, download).


@app.command("eval", epilog="Example: charrnn eval runs/<run> held_out.txt --json",
             rich_help_panel=USE)
def eval_(
    checkpoint: Annotated[Path, typer.Argument(
        help="Checkpoint file, or a run folder (its best.pt).", show_default=False)],
    text: Annotated[str, typer.Argument(
        help="UTF-8 text to score, or the name of a downloaded corpus.", show_default=False)],
    skip_unknown: Annotated[bool, typer.Option(
        "--skip-unknown", help="Leave out characters the model's vocabulary lacks (they are "
        "counted and reported) instead of stopping with an error.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar or notes on stderr.")] = False,
) -> None:
    """Score any text: nats and bits per character, and perplexity.

    One deterministic pass carrying the hidden state: the computation of training's val loss."""
    from charrnn.checkpoint import resolve_checkpoint
    from charrnn.download import resolve_text
    from charrnn.scoring import score_text
    from charrnn.train import resolve_device

    path = resolve_checkpoint(checkpoint)
    text_path = resolve_text(text)
    if not quiet:
        err.print(f"scoring {text_path} with {path}")
    score = score_text(path, text_path, skip_unknown=skip_unknown,
                       device=resolve_device(device), progress=not quiet)
    if score.unknown_count and not quiet:
        shown = " ".join(repr(ch) for ch in score.unknown_chars[:10])
        err.print(escape(f"left out {score.unknown_count:,} character(s) outside the "
                         f"vocabulary ({len(score.unknown_chars)} distinct: {shown})"))
    if as_json:
        print(json.dumps(score.to_dict()))
    else:
        print(f"{score.nats_per_char:.4f} nats/char  {score.bits_per_char:.4f} bits/char  "
              f"perplexity {score.perplexity:.3f}  ({score.scored:,} characters scored)")


@app.command("runs", epilog="Example: charrnn runs --sort loss", rich_help_panel=LOOK)
def runs_(
    folder: Annotated[Optional[Path], typer.Argument(
        help="Folder that holds run folders, or one run folder \\[default: --runs-dir].",
        show_default=False)] = None,
    runs_dir: RunsDir = Path("runs"),
    sort: Annotated[str, typer.Option(
        help="time: newest first; loss: lowest best val loss first.")] = "time",
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List training runs with their corpus, model, steps, best val loss and time.

    Newest first. The table goes to stdout; --json gives the same facts to scripts."""
    from charrnn.runs import list_runs, runs_table

    folder = folder or runs_dir
    summaries = list_runs(folder, sort)
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    elif not summaries:
        err.print(f"no runs under {folder} yet; start one with: charrnn train TEXT")
    else:
        # A terminal gets a table that fits it; a pipe or a file gets every column whole.
        out = Console(highlight=False)
        if out.is_terminal:
            out.print(runs_table(summaries, width=out.width))
        else:
            Console(highlight=False, width=10_000).print(runs_table(summaries))


@app.command(epilog="Example: charrnn plot runs/a runs/b -o loss.png", rich_help_panel=LOOK)
def plot(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="RUN", help="Run folders (or their metrics.csv) to draw together "
        "\\[default: the newest run under --runs-dir].", show_default=False)] = None,
    runs_dir: RunsDir = Path("runs"),
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Image to write: .png, .svg or .pdf.")] = Path("loss.png"),
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 1200,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 500,
    title: Annotated[Optional[str], typer.Option(help="Title above the two panels.")] = None,
) -> None:
    """Draw train and val loss against steps and seconds, several runs overlaid.

    Needs matplotlib: pip install 'charrnn\\[plot]'."""
    from charrnn.plot import plot_runs
    from charrnn.runs import list_runs, read_metrics

    if not run_dirs:
        newest = list_runs(runs_dir) if runs_dir.is_dir() else []
        if not newest:
            raise CharRNNError(f"no runs under {runs_dir}/ to plot; give run folders, e.g. "
                               f"charrnn plot {runs_dir}/<run>")
        run_dirs = [Path(newest[0].path)]
    names = [p.parent.name if p.is_file() else p.name for p in run_dirs]
    labels = [str(p) if names.count(n) > 1 else n for p, n in zip(run_dirs, names)]
    runs = [(label, read_metrics(p)) for label, p in zip(labels, run_dirs)]
    path = plot_runs(runs, output, width=width, height=height, title=title)
    err.print(f"wrote {path} ({width}x{height} pixels; {len(runs)} run(s))")


def _complete_corpus(incomplete: str) -> list[str]:
    from charrnn.download import CORPORA

    return [name for name in CORPORA if name.startswith(incomplete)]


def _complete_text(incomplete: str) -> list[str]:
    """Corpus names, then the files and folders whose path starts with ``incomplete``."""
    import glob

    paths = sorted(p + os.sep if os.path.isdir(p) else p
                   for p in glob.glob(glob.escape(incomplete) + "*"))
    return _complete_corpus(incomplete) + paths


@app.command(epilog="Example: charrnn download tinyshakespeare --to data/",
             rich_help_panel=SETUP)
def download(
    name: Annotated[str, typer.Argument(
        help="Corpus to fetch: tinyshakespeare.", autocompletion=_complete_corpus,
        show_default=False)],
    to: Annotated[Path, typer.Option(
        "--to", help="Folder to save it in; `charrnn train NAME` looks in data/.")]
        = Path("data"),
    url: Annotated[Optional[str], typer.Option(
        help="Fetch from this URL instead (a mirror, or file://); the sha256 is still "
             "checked.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a file of the same name whose sha256 differs.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 30.0,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar or notes; print only the path.")] = False,
) -> None:
    """Fetch a known corpus and verify its sha256; print the file's path on stdout."""
    from charrnn.download import corpus, download as fetch

    entry = corpus(name)
    if timeout <= 0:
        raise ConfigError(f"--timeout must be greater than 0, got {timeout:g}")
    if not quiet:
        err.print(f"{entry.name}: {entry.about}")
    result = fetch(name, to, url=url, force=force, timeout=timeout, progress=not quiet)
    if not quiet:
        err.print(f"downloaded {result.size:,} bytes from {url or entry.url}; sha256 verified"
                  if result.fetched else f"{result.path} is already there; sha256 verified")
    print(result.path)


@app.command(epilog="Example: charrnn prepare big_corpus.txt", rich_help_panel=SETUP)
def prepare(
    text: Annotated[Path, typer.Argument(
        help="UTF-8 text file to encode ahead of training.", show_default=False)],
    cache_dir: Annotated[Path, typer.Option(
        "--cache-dir", help="Folder for the cache; train uses .cache/ beside its run folder, "
        "which is this default for runs under runs/.")] = Path("runs/.cache"),
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar; print only the path of the ids.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Scan and encode TEXT once into a memory-mapped cache, so that training on it
    (however large) starts at once and reads it without loading it into memory."""
    from charrnn.corpus import ReadingBar
    from charrnn.corpus import prepare as prepare_corpus
    from charrnn.download import resolve_text

    text = resolve_text(text)
    start = time.perf_counter()
    stages: set[str] = set()  # the passes that had to read the file: scan, encode

    def count(stage: str, nbytes: int) -> None:
        stages.add(stage)
        bar.update(stage, nbytes)

    with ReadingBar(not quiet and not as_json, [text]) as bar:
        scan, vocab, ids = prepare_corpus(text, cache_dir, on_read=count)
    seconds = time.perf_counter() - start
    ids_path = Path(ids.filename)
    if ids_path.is_relative_to(Path.cwd()):
        ids_path = ids_path.relative_to(Path.cwd())
    result = {"text": str(text), "bytes": scan.size, "chars": scan.chars,
              "vocab_size": len(vocab), "dtype": str(ids.dtype), "sha256": scan.sha256,
              "ids": str(ids_path), "cached": "encode" not in stages,
              "seconds": round(seconds, 3),
              "mb_per_s": round(scan.size / 1e6 / seconds, 1) if stages else None}
    if as_json:
        print(json.dumps(result))
        return
    if not quiet:
        how = ("already cached, unchanged" if not stages else
               "checked again, content unchanged" if "encode" not in stages else
               f"encoded in {seconds:.2f}s, {result['mb_per_s']:,} MB/s")
        err.print(escape(f"{text}: {scan.chars:,} characters, {len(vocab)} distinct, "
                         f"{ids.dtype} ids ({how})"))
    print(ids_path)


config_app = typer.Typer(
    help="See the settings a run would use.", no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(config_app, name="config", rich_help_panel=SETUP,
              epilog="Example: charrnn config show --config configs/tiny.toml")


@config_app.command("show", epilog="Example: charrnn config show --config configs/tiny.toml "
                    "--lr 1e-3 > mine.toml")
@with_settings
def config_show(
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="TOML file with \\[model] and \\[train] tables (see configs/).")]
        = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")]
        = False,
    settings: Optional[dict] = None,
) -> None:
    """Print the settings a train with the same --config and flags would use (defaults <
    --config file < flags) as TOML that --config reads: a dry run of the precedence."""
    model_config, train_config = cfg.resolve(config, settings)
    if as_json:
        print(json.dumps({"model": cfg.to_dict(model_config),
                          "train": cfg.to_dict(train_config)}, indent=2))
    else:
        print(cfg.to_toml(model_config, train_config), end="")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and an exit code."""
    try:
        code = app(args=argv, prog_name="charrnn", standalone_mode=False)
    except CharRNNError as e:
        rank = os.environ.get("RANK", "0")  # set by torchrun: name the process that failed
        where = "" if rank == "0" else f" (rank {rank})"
        err.print(f"[bold red]error{where}:[/bold red] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":
            err.print(escape(f"interrupted: saved {e.checkpoint}; continue with "
                             f"charrnn train --resume {Path(e.checkpoint).parent}"),
                      soft_wrap=True)
        sys.exit(128 + e.signum)
    except _UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else " (see 'charrnn --help')"
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
