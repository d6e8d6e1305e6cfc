"""``charrnn inspect``: what a model is (its parameters, the tensor shapes of a forward
pass, the equations, checked against the module with --verify) or, with
``--activations``, what its neurons do over a text. Flags that belong to one of the two
views are refused in the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from charrnn import config as cfg
from charrnn.cli.common import check_at_least, err, load_model, product_console, say_which
from charrnn.cli.options import RUNS, Json, RunsDir, flag_name, with_settings
from charrnn.errors import CharRNNError, ConfigError
from charrnn.reports import InspectReport

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
        given = {k: v for k, v in settings["model"].items() if v is not None}
        cfg.check_given(given, given)
        report = describe(cfg.build("model", given),
                          vocab_size=vocab_size or EXAMPLE_V, seq_length=seq_length or EXAMPLE_L,
                          batch_size=batch_size or EXAMPLE_N, batch_first=batch_first,
                          verify=verify)
    say_which(checkpoint, "describing", path or "the model the flags build (not a trained run)")
    _print_report(report, as_json, equations)
    if verify and not report["verify_ok"]:
        raise CharRNNError("verification failed: the equations and the module disagree "
                           "(see the differences above)")


def _check_example(seq_length: int | None, batch_size: int | None,
                   vocab_size: int | None) -> None:
    check_at_least(1, {"--seq-length": seq_length, "--batch-size": batch_size,
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
        raise ConfigError(f"the checkpoint fixes the model; drop {flag_name(stack[0])}")
    if neurons:
        other = [name for name in DESCRIBE_FLAGS if name in typed]
        if other:
            raise ConfigError(f"{flag_name(other[0])} does not go with --activations; run them as "
                              "two commands")
    needs = [name for name in NEURON_FLAGS if name in typed and not neurons]
    if needs:
        raise ConfigError(f"{flag_name(needs[0])} needs --activations TEXT_OR_FILE (the text to "
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
                         verify: bool, corpus: Path | None) -> InspectReport:
    from charrnn.checkpoint import load_checkpoint
    from charrnn.data import load_text
    from charrnn.inspect import describe_trained

    return describe_trained(load_checkpoint(path), path, seq_length=seq_length,
                            batch_size=batch_size, verify=verify, corpus=None if corpus is None
                            else load_text(corpus, what="corpus file"))


def _print_report(report: InspectReport, as_json: bool, equations: bool) -> None:
    from charrnn import views

    if as_json:
        print(json.dumps(report, indent=2))
        return
    with product_console() as out:
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
    model, vocab, path = load_model(checkpoint, runs_dir, "cpu")
    text, source = read_text(text_or_file)
    report = activation_report(model, vocab, text, source=source, **choice)
    report["checkpoint"] = str(path)
    say_which(checkpoint, "read the neurons of", path)
    if report["truncated_from"]:
        err.print(f"note: showing the first {len(report['text']):,} of "
                  f"{report['truncated_from']:,} characters")
    if html is not None:
        write_page(report, html, title=f"charrnn activations: {path}")
        err.print(Text(f"wrote {html}"))
    elif as_json:
        print(json.dumps(report))
    else:
        with product_console() as out:
            views.render_activations(report, out, predictions=predictions)


# --- everyday use: eval, runs, plot, download, config --------------------------------
# Each reads files and calls one library function (scoring, runs, plot, download).

