"""The ``charrnn`` command: train, sample, eval, inspect, runs, plot, download, config.

Each command parses its flags, builds configs, calls one library function and renders
the result: generated text and JSON on stdout, everything else on stderr. torch is
imported inside the commands, so ``charrnn --help`` answers at once. Errors a user
can cause are ``CharRNNError``s: one line on stderr, exit code 1.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import signal
import sys
import threading
import time
from inspect import Parameter, Signature, signature
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from charrnn import __version__
from charrnn import config as cfg
from charrnn.errors import CharRNNError, ConfigError, TrainingInterrupted



def _process_start() -> float:
    """When this process started, on the ``time.time()`` clock (Linux's /proc), so that
    the interpreter's own start-up counts against ``--max-time`` too; now, elsewhere or
    when charrnn is imported by a process that has long been running."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(after_name[19])    # field 22, starttime, in clock ticks
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf(
            "SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()
    return time.time() - age if 0.0 <= age < 10.0 else time.time()


STARTED = _process_start()  # the wall-clock budget of `train --max-time` counts from here

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


@app.command(epilog="Example: charrnn train shakespeare.txt --cell lstm --max-time 300",
             rich_help_panel=USE)
@with_settings()
def train(
    text: Annotated[Optional[list[Path]], typer.Argument(
        metavar="TEXT", help="UTF-8 text files, folders or quoted patterns to learn from, read as one text "
             "(optional with --resume).",
        show_default=False, autocompletion=lambda incomplete: _complete_text(incomplete))]
        = None,
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
    from charrnn.train import Origin
    from charrnn.train import train as run_training

    origin = Origin.open(resume, init_from)
    model_config, train_config, free = cfg.resolve(config, settings,
                                                   origin.settings() if origin else None)
    if origin is not None and origin.changes(train_config):
        err.print(Text("resuming with changed training settings: "
                       + "; ".join(origin.changes(train_config))))
    paths = (_text_files(text, quiet) if text else
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


def _text_files(inputs: list[Path], quiet: bool) -> list[Path]:
    """The files that TEXT arguments name (``corpus.expand_inputs``); a note on stderr
    for a file named more than once."""
    from charrnn.corpus import expand_inputs

    repeats: list[Path] = []
    paths = expand_inputs(inputs, on_duplicate=repeats.append)
    if repeats and not quiet:
        err.print(Text(f"note: {len(repeats)} file(s) named more than once, read once where "
                       f"first named: {', '.join(map(str, repeats[:3]))}"
                       + (", ..." if len(repeats) > 3 else "")))
    return paths


@app.command(epilog="Example: charrnn sample --len 500 --prime 'ROMEO:' --temperature 0.8",
             rich_help_panel=USE)
def sample(
    checkpoint: NewestRun = None,
    runs_dir: RunsDir = RUNS,
    length: Annotated[int, typer.Option(
        "--len", "-n", help="New characters to generate per sample.")] = 200,
    prime: Annotated[Optional[str], typer.Option(
        help="Text to start from; printed before the new characters.")] = None,
    prime_file: Annotated[Optional[Path], typer.Option(
        "--prime-file", help="Start from the text of this UTF-8 file (as --prime).",
        show_default=False)] = None,
    stop: Annotated[Optional[str], typer.Option(
        "--stop", help="End a sample where the new characters first contain this text "
        "(it is written too).", show_default=False)] = None,
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
        help="Independent samples, each written as it is drawn, separated by a blank line "
        "(with --seed S, sample i uses seed S + i).")] = 1,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the text to this file instead of stdout.")] = None,
    interactive: Annotated[bool, typer.Option(
        "--interactive", "-i", help="Type a prime, get its continuation, again and again; "
        "the flags above set where the settings start (type :help at the prompt).")]
        = False,
    keep_state: Annotated[bool, typer.Option(
        "--keep-state", help="With -i: each prime continues from where the last "
        "continuation ended (as :keep on).")] = False,
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """Generate text from a trained model (text on stdout, nothing else).

    With -i, a prompt takes one prime after another and writes each continuation as it
    is drawn; commands such as :temperature 0.7 or :keep on change the settings between
    turns (:help lists them)."""
    _check_sampling(length, temperature, top_k, top_p, num_samples)
    if stop == "":
        raise ConfigError("--stop needs some text to stop at, e.g. --stop $'\\n\\n'")
    if keep_state and not interactive:
        raise ConfigError("--keep-state only applies to --interactive (-i)")
    if interactive:
        given = [flag for flag, value in (("--prime", prime), ("--prime-file", prime_file),
                                          ("--output", output)) if value is not None]
        if given or num_samples != 1:
            raise ConfigError(f"{', '.join(given + ['--num-samples'] * (num_samples != 1))} "
                              "cannot go with --interactive, which writes one continuation "
                              "of each prime typed at its prompt to stdout")
        from charrnn.interactive import interact
        from charrnn.sample import Session, pick_threads

        model, vocab, path = _load_model(checkpoint, runs_dir, device)
        _say_which(checkpoint, "sampling from", path)
        pick_threads(model, 1, threads)
        interact(Session(model, vocab, length=length, temperature=temperature, top_k=top_k,
                          top_p=top_p, greedy=greedy, keep=keep_state, seed=seed), stop)
        return
    from tqdm import tqdm

    from charrnn.files import check_output, read_small_text
    from charrnn.sample import pick_threads, stream

    if prime_file is not None:
        if prime is not None:
            raise ConfigError("--prime and --prime-file exclude each other; give one")
        prime = read_small_text(prime_file, what="prime file")
    if output is not None:
        check_output(output, "--output")
    model, vocab, path = _load_model(checkpoint, runs_dir, device)
    _say_which(checkpoint, "sampling from", path)
    pick_threads(model, 1, threads)
    choice = dict(prime=prime, temperature=temperature, top_k=top_k, top_p=top_p,
                  greedy=greedy)
    # Each sample is drawn and written as it comes (the prime was checked by the first).
    samples = [stream(model, vocab, length, seed=None if seed is None else seed + i, **choice)
               for i in range(num_samples)]
    with _output(output) as out, tqdm(total=length * num_samples, unit="char", leave=False,
                                      delay=1.0, file=sys.stderr, disable=out.isatty()
                                      or not sys.stderr.isatty()) as bar:
        for i, sample in enumerate(samples):
            out.write(("\n\n" if i else "") + (prime or ""))
            tail = ""     # the latest new characters, as many as --stop has
            for ch in sample:
                out.write(ch)
                bar.update()
                if ch == "\n":
                    out.flush()
                if stop is not None:
                    tail = (tail + ch)[-len(stop):]
                    if tail == stop:
                        break
        # Exactly the text asked for; on a terminal, a newline so the prompt starts afresh.
        if out.isatty():
            out.write("\n")
    if output:
        err.print(Text(f"wrote {num_samples} sample(s) to {output}"))


MAX_SAMPLES, MAX_SAMPLE_LENGTH = 10_000, 100_000_000


def _check_sampling(length: int, temperature: float, top_k: int | None,
                    top_p: float | None, num_samples: int) -> None:
    _check_at_least(1, {"--len": length, "--top-k": top_k, "--num-samples": num_samples})
    if length > MAX_SAMPLE_LENGTH:
        raise ConfigError(f"--len must be at most {MAX_SAMPLE_LENGTH:,}, got {length}")
    if num_samples > MAX_SAMPLES:
        raise ConfigError(f"--num-samples must be at most {MAX_SAMPLES:,}, got {num_samples}")
    if not 0 < temperature < math.inf:
        raise ConfigError(f"--temperature must be greater than 0 and finite, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {top_p}")


def _check_at_least(low: int, values: dict[str, int | None]) -> None:
    for flag, value in values.items():
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")


def _load_model(checkpoint: Path | None, runs_dir: Path, device: str):
    """The model, vocabulary and file of a checkpoint (the newest run's by default),
    on ``device``."""
    from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from charrnn.device import resolve_device

    path = resolve_checkpoint(checkpoint, runs_dir)
    model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    return model.to(resolve_device(device)), vocab, path


def _say_which(checkpoint: Path | None, doing: str, path: Path | None) -> None:
    """Name on stderr the file a command chose, when the user named none (or a folder)."""
    if checkpoint is None or checkpoint.is_dir():
        err.print(Text(f"{doing} {path}"))


@contextlib.contextmanager
def _output(output: Path | None):
    """stdout, or the file ``output`` (a one-line error when it cannot be written)."""
    if output is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    # Through a temporary file renamed over ``output`` at the end: an interrupted sample
    # leaves the old file as it was, and a link is replaced, never written through.
    from charrnn.files import atomic_write

    with atomic_write(output, fix="choose another file with --output") as raw:
        stream = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        yield stream
        stream.flush()
        stream.detach()


# `inspect` explains a model, or (--activations) shows what its neurons do: flags that
# belong to one of the two views are refused in the other.
NEURON_FLAGS = ("layer", "neuron", "top", "signal", "state", "predictions", "html")
DESCRIBE_FLAGS = ("equations", "verify", "corpus")
STACK_FLAGS = ("cell", "nonlinearity", "embedding_dim", "hidden_size", "num_layers",
               "proj_size", "bidirectional")
FORWARD, NEURONS = "Forward pass", "Neurons"
MAX_EXAMPLE_CHARS = 1_000_000

BatchFirst = Annotated[bool, typer.Option(
    "--batch-first/--no-batch-first", help="Tensor layout: (N, L, H) or (L, N, H).",
    rich_help_panel=FORWARD)]
SeqLength = Annotated[Optional[int], typer.Option(
    help="L: time steps of the example forward pass \\[default: the run's seq_length; "
         "5 for a model built from flags].", rich_help_panel=FORWARD,
    show_default=False)]
BatchSize = Annotated[Optional[int], typer.Option(
    help="N: sequences in the example forward pass \\[default: the run's batch_size; "
         "3 for a model built from flags].", rich_help_panel=FORWARD,
    show_default=False)]
VocabSize = Annotated[Optional[int], typer.Option(
    help="V: vocabulary size of a model built from flags \\[default: 65].",
    rich_help_panel=FORWARD, show_default=False)]
Equations = Annotated[bool, typer.Option(
    "--equations", help="Write out the cell's equations with this model's sizes, which "
    "parameter rows hold which gate, and how layers, directions and h_n stack.")]
Verify = Annotated[bool, typer.Option(
    "--verify", help="Recompute the forward pass from the equations and compare.")]
Corpus = Annotated[Optional[Path], typer.Option(
    help="With a checkpoint: count each vocabulary character in this text file "
         "(e.g. the training text).")]
Activations = Annotated[Optional[str], typer.Option(
    "--activations", metavar="TEXT_OR_FILE", rich_help_panel=NEURONS,
    help="Run the trained model over this text (or the file it names) and colour each "
         "character by what the chosen neurons do there.")]
Layer = Annotated[Optional[int], typer.Option(
    help="Layer whose neurons to show, 0 = the lowest (default: the top one).",
    rich_help_panel=NEURONS, show_default=False)]
Neuron = Annotated[Optional[list[int]], typer.Option(
    help="A neuron to show, by index; repeat for several.", rich_help_panel=NEURONS,
    show_default=False)]
Top = Annotated[Optional[int], typer.Option(
    help="Show the K neurons that follow --signal best (|correlation|), or without a "
         "signal the K that vary most (default: 5).", rich_help_panel=NEURONS,
    show_default=False)]
Signal = Annotated[Optional[str], typer.Option(
    help="What to rank neurons against: quote (inside double quotes), line-position "
         "(characters since the line began), indent (leading spaces) or brackets "
         "(nesting depth of ( [ {).", rich_help_panel=NEURONS, show_default=False)]
State = Annotated[str, typer.Option(
    help="h: each layer's output; c: an LSTM's cell state, shown as tanh(c).",
    rich_help_panel=NEURONS)]
Predictions = Annotated[bool, typer.Option(
    "--predictions", help="Also show the likeliest next characters, with their "
    "probabilities, at every position.", rich_help_panel=NEURONS)]
Html = Annotated[Optional[Path], typer.Option(
    help="Write the neuron view to this self-contained HTML page instead of the "
         "terminal.", rich_help_panel=NEURONS, show_default=False)]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@app.command(epilog="Example: charrnn inspect --cell rnn --input-size 10 --hidden-size 20 "
             "--num-layers 2 --seq-length 5 --batch-size 3 --no-batch-first --verify",
             rich_help_panel=LOOK)
@with_settings(*STACK_FLAGS)
def inspect(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="Checkpoint file or run folder \\[default: the newest run under --runs-dir, or "
             "with model flags the model they build].", show_default=False)] = None,
    runs_dir: RunsDir = RUNS,
    batch_first: BatchFirst = True,
    seq_length: SeqLength = None,
    batch_size: BatchSize = None,
    vocab_size: VocabSize = None,
    equations: Equations = False,
    verify: Verify = False,
    as_json: Json = False,
    corpus: Corpus = None,
    activations: Activations = None,
    layer: Layer = None,
    neuron: Neuron = None,
    top: Top = None,
    signal: Signal = None,
    state: State = "h",
    predictions: Predictions = False,
    html: Html = None,
    settings: Optional[dict] = None,
) -> None:
    """Explain a model: its parameters, costs, the tensor shapes of a forward pass and the
    equations; or, with --activations, what its neurons do over a text.

    Without a checkpoint or model flags it explains the newest run under --runs-dir, like
    sample; model flags (or --vocab-size, --no-batch-first) build a model instead."""
    typed = [name for name in ctx.params if ctx.get_parameter_source(name).name != "DEFAULT"]
    _check_example(seq_length, batch_size, vocab_size)
    _check_view_flags(typed, given_checkpoint=checkpoint is not None,
                      neurons=activations is not None)
    if activations is not None:
        return _show_neurons(checkpoint, runs_dir, activations, as_json=as_json, html=html,
                             predictions=predictions, layer=layer, neurons=neuron, top=top,
                             signal_name=signal, state=state)
    from charrnn.inspect import EXAMPLE_L, EXAMPLE_N, EXAMPLE_V, describe

    builds = any(name in typed for name in STACK_FLAGS) or vocab_size or not batch_first
    path = _run_to_describe(checkpoint, runs_dir, builds=bool(builds))
    if path is not None:
        report = _describe_checkpoint(path, seq_length, batch_size, verify, corpus)
        if not batch_first:
            err.print("note: a trained model is batch-first; showing that layout")
    elif corpus is not None:
        raise ConfigError("--corpus counts a checkpoint's vocabulary; give the checkpoint "
                          "too, e.g. charrnn inspect runs/<run> --corpus input.txt")
    else:
        report = describe(cfg.build("model", {k: v for k, v in settings["model"].items()
                                              if v is not None}),
                          vocab_size=vocab_size or EXAMPLE_V, seq_length=seq_length or EXAMPLE_L,
                          batch_size=batch_size or EXAMPLE_N, batch_first=batch_first,
                          verify=verify)
    _say_which(checkpoint, "describing", path or "the model the flags build (not a trained run)")
    _print_report(report, as_json, equations)
    if verify and not report["verify_ok"]:
        raise CharRNNError("verification failed: the equations and the module disagree "
                           "(see the differences above)")


def _check_example(seq_length: int | None, batch_size: int | None,
                   vocab_size: int | None) -> None:
    _check_at_least(1, {"--seq-length": seq_length, "--batch-size": batch_size,
                        "--vocab-size": vocab_size})
    if (seq_length or 1) * (batch_size or 1) > MAX_EXAMPLE_CHARS or (vocab_size or 0) > 1 << 21:
        raise ConfigError(f"the example forward pass is for reading: keep --seq-length x "
                          f"--batch-size within {MAX_EXAMPLE_CHARS:,} and --vocab-size within "
                          f"{1 << 21:,}")


def _check_view_flags(typed: list[str], given_checkpoint: bool, neurons: bool) -> None:
    """Refuse the flags that belong to the other view of ``inspect``, and model flags
    where a checkpoint fixes the model."""
    stack = [name for name in STACK_FLAGS if name in typed]
    if stack and (given_checkpoint or neurons):
        raise ConfigError(f"the checkpoint fixes the model; drop {_flag(stack[0])}")
    if neurons:
        other = [name for name in DESCRIBE_FLAGS if name in typed]
        if other:
            raise ConfigError(f"{_flag(other[0])} does not go with --activations; run them as "
                              "two commands")
    needs = [name for name in NEURON_FLAGS if name in typed and not neurons]
    if needs:
        raise ConfigError(f"{_flag(needs[0])} needs --activations TEXT_OR_FILE (the text to "
                          "run the model over)")


def _run_to_describe(checkpoint: Path | None, runs_dir: Path, builds: bool) -> Path | None:
    """The checkpoint ``inspect`` explains: the one given; else, unless flags build a
    model, the newest run's; None when there is none (the default model is explained)."""
    from charrnn.checkpoint import latest_checkpoint, resolve_checkpoint
    from charrnn.errors import CheckpointError

    if checkpoint is not None:
        return resolve_checkpoint(checkpoint)
    if builds:
        return None
    try:
        return latest_checkpoint(runs_dir)
    except CheckpointError:  # no run yet: the model the default flags build
        return None


def _describe_checkpoint(path: Path, seq_length: int | None, batch_size: int | None,
                         verify: bool, corpus: Path | None) -> dict[str, Any]:
    from charrnn.checkpoint import load_checkpoint
    from charrnn.data import load_text
    from charrnn.inspect import describe_trained

    return describe_trained(load_checkpoint(path), path, seq_length=seq_length,
                            batch_size=batch_size, verify=verify, corpus=None if corpus is None
                            else load_text(corpus, what="corpus file"))


def _print_report(report: dict[str, Any], as_json: bool, equations: bool) -> None:
    from charrnn import views

    if as_json:
        print(json.dumps(report, indent=2))
        return
    out = Console(highlight=False)
    if "checkpoint" in report and not equations:
        views.render_checkpoint(report["checkpoint"], out)
    views.render_inspect(report, out, equations=equations)


def _show_neurons(checkpoint: Path | None, runs_dir: Path, text_or_file: str, *,
                  as_json: bool, html: Path | None, predictions: bool, **choice: Any) -> None:
    """``inspect --activations``: what the chosen neurons do over a text."""
    from charrnn import views
    from charrnn.activations import activation_report, read_text
    from charrnn.html_page import check_path, write_page

    if html is not None:
        check_path(html)
    model, vocab, path = _load_model(checkpoint, runs_dir, "cpu")
    text, source = read_text(text_or_file)
    report = activation_report(model, vocab, text, source=source, **choice)
    report["checkpoint"] = str(path)
    _say_which(checkpoint, "read the neurons of", path)
    if report["truncated_from"]:
        err.print(f"note: showing the first {len(report['text']):,} of "
                  f"{report['truncated_from']:,} characters")
    if html is not None:
        write_page(report, html, title=f"charrnn activations: {path}")
        err.print(Text(f"wrote {html}"))
    elif as_json:
        print(json.dumps(report))
    else:
        views.render_activations(report, Console(highlight=False), predictions=predictions)


# --- everyday use: eval, runs, plot, download, config --------------------------------
# Each reads files and calls one library function (scoring, runs, plot, download).


@app.command("eval", epilog="Example: charrnn eval runs/<run> held_out.txt --json",
             rich_help_panel=USE)
def eval_(
    checkpoint: Annotated[Path, typer.Argument(
        help="Checkpoint file, or a run folder (its best.pt).", show_default=False)],
    text: Annotated[list[Path], typer.Argument(
        help="UTF-8 text to score: a file, several, a folder or a pattern (read as one text, "
        "as train reads them), or the name of a downloaded corpus.", show_default=False,
        metavar="TEXT...")],
    skip_unknown: Annotated[bool, typer.Option(
        "--skip-unknown", help="Leave out characters the model's vocabulary lacks (they are "
        "counted and reported) instead of stopping with an error.")] = False,
    max_chars: Annotated[int, typer.Option(
        "--max-chars", help="Score at most this many characters, spread evenly over "
        "the text, as training's --val-max-chars does (0 = all of it).")] = 0,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Folder for the text's encoded ids [default: the corpus cache "
        "beside the run, else a temporary folder].", show_default=False)] = None,
    per_char: Annotated[Optional[Path], typer.Option(
        "--per-char", metavar="FILE", help="Also write every scored character's log-"
        "probability, rank and the model's top guesses, in text order: JSON Lines, CSV if "
        "FILE ends in .csv, JSON Lines on stdout for -.", show_default=False)] = None,
    html: Annotated[Optional[Path], typer.Option(
        "--html", metavar="FILE", help="Also draw the text coloured by surprisal, the top "
        "guesses on hover, as a self-contained HTML page (the first 100,000 characters "
        "scored).", show_default=False)] = None,
    top: Annotated[int, typer.Option(
        "--top", help="Guesses kept per character by --per-char and --html.")] = 5,
    device: Device = "auto",
    threads: Threads = 0,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Score any text: nats and bits per character, and perplexity.

    Training's own computation of its val loss: the text in 64 streams at most, each
    carrying its hidden state, read in bounded memory however large it is. --per-char
    and --html add each character's own score."""
    from charrnn.checkpoint import resolve_checkpoint
    from charrnn.data import list_chars
    from charrnn.device import resolve_device
    from charrnn.scoring import score_text

    _check_at_least(0, {"--max-chars": max_chars, "--top": top})
    path = resolve_checkpoint(checkpoint)
    paths = _text_files(text, quiet)
    outputs = _eval_outputs(per_char, html, top, as_json, inputs=[path, *paths])
    if not quiet:
        label = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files"
        err.print(Text(f"scoring {label} with {path}"))
    score = score_text(path, paths, skip_unknown=skip_unknown, max_chars=max_chars,
                       cache_dir=cache_dir, device=resolve_device(device), progress=not quiet,
                       outputs=outputs, threads=threads)
    if score.unknown_count and not quiet:
        err.print(Text(f"left out {score.unknown_count:,} character(s) outside the vocabulary "
                       f"({len(score.unknown_chars)} distinct: "
                       f"{list_chars(score.unknown_chars, 10)})"))
    if outputs is not None and not quiet:
        from charrnn.per_char import HTML_MAX_CHARS

        if outputs.records is not None:
            err.print(Text(f"wrote {score.scored:,} per-character records to "
                           f"{outputs.records}"))
        if outputs.html is not None:
            err.print(Text(f"wrote {outputs.html}" + (
                f" (note: the page shows the first {HTML_MAX_CHARS:,} of the "
                f"{score.scored:,} characters scored)" if score.scored > HTML_MAX_CHARS
                else "")))
    line = (f"{score.nats_per_char:.4f} nats/char  {score.bits_per_char:.4f} bits/char  "
            f"perplexity {score.perplexity:.3f}  ({score.scored:,} characters scored)")
    if as_json:
        print(json.dumps(score.to_dict()))
    elif outputs is not None and outputs.stdout:   # stdout holds the records
        if not quiet:
            err.print(Text(line))
    else:
        print(line)


def _eval_outputs(per_char: Path | None, html: Path | None, top: int, as_json: bool, *,
                  inputs: list[Path]):
    """What ``eval`` writes besides the score (``per_char.Outputs``), or None; a
    one-line ``ConfigError`` for outputs that cannot be or must not be written."""
    from charrnn.files import check_output
    from charrnn.per_char import STDOUT, TOP, Outputs

    if per_char is None and html is None:
        if top != TOP:
            raise ConfigError("--top needs --per-char FILE or --html FILE (the outputs that "
                              "list the top guesses)")
        return None
    stdout = per_char is not None and str(per_char) == STDOUT
    if stdout and as_json:
        raise ConfigError("--per-char - writes the records to stdout, where --json would "
                          "write the score too; drop --json (the score goes to stderr) or "
                          "give --per-char a file name")
    if html is not None and str(html) == STDOUT:
        raise ConfigError("--html writes a file; give its name (- is for --per-char only)")
    named = {flag: check_output(p, flag) for flag, p in (("--per-char", per_char),
                                                         ("--html", html))
             if p is not None and str(p) != STDOUT}
    if len(named) == 2 and _same_file(per_char, html):
        raise ConfigError(f"--per-char and --html name the same file {html}; give each its "
                          "own")
    for flag, p in named.items():
        for given in inputs:
            if _same_file(p, given):
                raise ConfigError(f"cannot write {flag} {p}: it would replace the file being "
                                  "read; choose another file name")
    return Outputs(records=named.get("--per-char"), stdout=stdout, html=named.get("--html"),
                   top=top)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links, or the same path twice)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


@app.command(epilog="Example: charrnn export runs/<run> -o model.onnx", rich_help_panel=USE)
def export(
    checkpoint: NewestRun = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="File to write; a name ending in .onnx, .ts (TorchScript) or "
        ".html sets the format.", show_default=False)] = ...,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="onnx, torchscript or html \\[default: from the file name].",
        show_default=False)] = None,
    runs_dir: RunsDir = RUNS,
    as_json: Json = False,
) -> None:
    """Write the model for programs without charrnn: ONNX, TorchScript, or a web page.

    ONNX and TorchScript take ids (batch, time) and the state h (and c for an LSTM), and
    give logits and the new state; the vocabulary travels inside. Each is run by its
    runtime and checked against the model before it is written. The web page generates
    text in the browser by itself, with no network."""
    from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from charrnn.export import export as export_model
    from charrnn.export import format_for
    from charrnn.files import check_output

    chosen = format_for(output, fmt)
    check_output(output, "--output")
    path = resolve_checkpoint(checkpoint, runs_dir)
    ckpt = load_checkpoint(path)
    model, vocab = model_from_checkpoint(ckpt, path)
    _say_which(checkpoint, "exporting", path)
    result = export_model(model, vocab, ckpt, output, chosen)
    if as_json:
        print(json.dumps(dict(path=str(result.path), format=result.format, bytes=result.bytes,
                              max_difference=result.max_difference,
                              float32_rounding=result.rounding,
                              checked_with=result.checked_with)))
        return
    checked = ("open it in a browser (?len=300&run=1 after its name generates at once)"
               if result.max_difference is None
               else f"run by {result.checked_with}, its outputs equal the model's within "
               f"{result.max_difference:.1e} (torch's own float32 rounding there: "
               f"{result.rounding:.1e})")
    err.print(Text(f"wrote {result.path} ({result.format}, {result.bytes / 1e6:.2f} MB); "
                   f"{checked}"))


@app.command("runs", epilog="Example: charrnn runs --sort loss", rich_help_panel=LOOK)
def runs_(
    folder: Annotated[Optional[Path], typer.Argument(
        help="Folder that holds run folders, or one run folder \\[default: --runs-dir].",
        show_default=False)] = None,
    runs_dir: RunsDir = RUNS,
    sort: Annotated[str, typer.Option(
        help="time: newest first; loss: lowest best val loss first.")] = "time",
    as_json: Json = False,
) -> None:
    """List training runs with their corpus, model, steps, best val loss and time.

    Newest first. The table goes to stdout; --json gives the same facts to scripts."""
    from charrnn import views
    from charrnn.runs import list_runs

    folder = folder or runs_dir
    summaries = list_runs(folder, sort)
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    elif not summaries:
        err.print(Text(f"no runs under {folder} yet; start one with: charrnn train TEXT"))
    else:
        # A terminal gets a table that fits it; a pipe or a file gets every column whole.
        out = Console(highlight=False)
        if out.is_terminal:
            out.print(views.runs_table(summaries, width=out.width))
        else:
            Console(highlight=False, width=10_000).print(views.runs_table(summaries))


@app.command(epilog="Example: charrnn plot runs/a runs/b -o loss.png", rich_help_panel=LOOK)
def plot(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="RUN", help="Run folders (or their metrics.csv) to draw together "
        "\\[default: the newest run under --runs-dir].", show_default=False)] = None,
    runs_dir: RunsDir = RUNS,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Image to write: .png, .svg or .pdf.")] = Path("loss.png"),
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 1200,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 500,
    title: Annotated[Optional[str], typer.Option(help="Title above the two panels.")] = None,
) -> None:
    """Draw train and val loss against steps and seconds, several runs overlaid.

    Needs matplotlib: pip install 'charrnn-cli\\[plot]'."""
    from charrnn.plot import plot_runs
    from charrnn.files import read_metrics
    from charrnn.runs import list_runs

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
    err.print(Text(f"wrote {path} ({width}x{height} pixels; {len(runs)} run(s))"))


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
    quiet: Quiet = False,
) -> None:
    """Fetch a known corpus and verify its sha256; print the file's path on stdout."""
    from charrnn.download import corpus, download as fetch

    entry = corpus(name)
    if not 0 < timeout <= 3600:
        raise ConfigError(f"--timeout must be greater than 0 and at most 3600 seconds, got "
                          f"{timeout:g}")
    if not quiet:
        err.print(Text(f"{entry.name}: {entry.about}"))
    result = fetch(name, to, url=url, force=force, timeout=timeout, progress=not quiet)
    if not quiet:
        err.print(Text(f"downloaded {result.size:,} bytes from {url or entry.url}; sha256 "
                       "verified" if result.fetched else
                       f"{result.path} is already there; sha256 verified"))
    print(result.path)


@app.command(epilog="Example: charrnn prepare big_corpus.txt", rich_help_panel=SETUP)
def prepare(
    text: Annotated[list[Path], typer.Argument(
        metavar="TEXT", help="UTF-8 text files, folders or quoted patterns to encode ahead of training, "
             "read as one text as train reads them.", show_default=False)],
    cache_dir: Annotated[Path, typer.Option(
        "--cache-dir", help="Folder for the cache; train uses .cache/ beside its run folder, "
        "which is this default for runs under runs/.")] = Path("runs/.cache"),
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Scan and encode TEXT once into a memory-mapped cache, so that training on it
    (however large) starts at once and reads it without loading it into memory."""
    from charrnn.corpus import ReadingBar, prepare_texts

    paths = _text_files(text, quiet or as_json)
    start = time.perf_counter()
    stages: set[str] = set()  # the passes that had to read the file: scan, encode

    def count(stage: str, nbytes: int) -> None:
        stages.add(stage)
        bar.update(stage, nbytes)

    with ReadingBar(not quiet and not as_json, paths) as bar:
        texts, vocab, ids = prepare_texts(paths, cache_dir, on_read=count)
    seconds = time.perf_counter() - start
    ids_path = Path(ids.filename)
    if ids_path.is_relative_to(Path.cwd()):
        ids_path = ids_path.relative_to(Path.cwd())
    result = {"text": texts.label, "files": [str(p) for p in paths], "bytes": texts.size,
              "chars": texts.chars, "vocab_size": len(vocab), "dtype": str(ids.dtype),
              "sha256": texts.sha256, "ids": str(ids_path), "cached": "encode" not in stages,
              "seconds": round(seconds, 3),
              "mb_per_s": round(texts.size / 1e6 / seconds, 1) if stages else None}
    if as_json:
        print(json.dumps(result))
        return
    if not quiet:
        how = ("already cached, unchanged" if not stages else
               "checked again, content unchanged" if "encode" not in stages else
               f"encoded in {seconds:.2f}s, {result['mb_per_s']:,} MB/s")
        err.print(Text(f"{texts.label}: {texts.chars:,} characters, {len(vocab)} distinct, "
                       f"{ids.dtype} ids ({how})"))
    print(ids_path)


config_app = typer.Typer(
    help="See the settings a run would use.", no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(config_app, name="config", rich_help_panel=SETUP,
              epilog="Example: charrnn config show --config configs/tiny.toml")


@config_app.command("show", epilog="Example: charrnn config show --config configs/tiny.toml "
                    "--lr 1e-3 > mine.toml")
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


class _Stopped(BaseException):
    """SIGTERM or SIGHUP outside training (which saves first, see ``train``): unwinds
    like Ctrl-C, so that what was being written is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame) -> None:
    raise _Stopped(signum)


class _PipeClosed(BaseException):
    """The reader of stdout went away (``charrnn sample | head``)."""


class _PipeAwareStdout:
    """stdout, whose writes raise ``_PipeClosed`` when the reader has gone, past the
    command-line library (which would turn a broken pipe into exit status 1)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise _PipeClosed from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise _PipeClosed from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    """Entry point, and the one place where every outcome becomes an exit status and at
    most one line on stderr: 0 done; 1 an error (a ``CharRNNError`` says what to do; an
    unexpected one is named, with the traceback under --debug or CHARRNN_DEBUG=1); 2 a
    bad command line; 128 + N stopped by signal N (130: Ctrl-C)."""
    handlers = {signum: signal.signal(signum, _stop) for signum in (
        signal.SIGTERM, getattr(signal, "SIGHUP", None)) if signum is not None
        and threading.current_thread() is threading.main_thread()}
    rank = os.environ.get("RANK", "0")  # set by torchrun: name the process that failed
    where = "" if rank == "0" else f" (rank {rank})"
    stdout = sys.stdout
    sys.stdout = _PipeAwareStdout(stdout)
    try:
        code = app(args=argv, prog_name="charrnn", standalone_mode=False)
        sys.stdout.flush()
    except CharRNNError as e:
        _fail(f"error{where}:", str(e))
    except TrainingInterrupted as e:
        if rank == "0":
            err.print(Text(f"interrupted: saved {e.checkpoint}; continue with charrnn train "
                           f"--resume {Path(e.checkpoint).parent}" if e.checkpoint else
                           "interrupted before training began; nothing was saved"))
        sys.exit(128 + e.signum)
    except _UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else " (see 'charrnn --help')"
        _fail("usage error:", e.format_message() + hint, status=2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except _Stopped as e:
        err.print(f"stopped by signal {e.signum}")
        sys.exit(128 + e.signum)
    except (BrokenPipeError, _PipeClosed):
        # A reader such as `head` has all it wanted: not an error. Later writes (and
        # the flush at exit) go nowhere instead of failing.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        sys.exit(0)
    except MemoryError:
        _fail(f"error{where}:", "out of memory; use a smaller model (--hidden-size, "
              "--num-layers), a smaller --batch-size or --seq-length, or a shorter text")
    except Exception as e:  # noqa: BLE001 - a bug: one line, unless asked for the traceback
        if os.environ.get("CHARRNN_DEBUG", "") not in ("", "0"):
            raise
        if isinstance(e, OSError) and e.strerror:
            _fail(f"error{where}:", f"{e.strerror}" + (f": {e.filename}" if e.filename else ""))
        _fail(f"error{where}:", f"unexpected {type(e).__name__}: {str(e)[:300]}; this is a "
              "bug in charrnn: run the command again with --debug to see where, and report it")
    finally:
        sys.stdout = stdout
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(label: str, message: str, status: int = 1) -> None:
    err.print(Text.assemble((label, "bold red"), " ", " ".join(message.split("\n"))))
    sys.exit(status)
