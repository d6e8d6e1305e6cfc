"""``charrnn sample``: text from a trained model, on stdout or into a file, or prime
after prime at a prompt (``-i``, ``charrnn.interactive``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn.cli.common import (check_at_least, err, load_model, output_to, say_which,
                                stdin_text)
from charrnn.cli.options import RUNS, Device, Json, NewestRun, RunsDir, Threads
from charrnn.errors import ConfigError, SettingError

MAX_SAMPLES, MAX_SAMPLE_LENGTH = 10_000, 100_000_000


# The options of `sample`, declared once here so that the command reads as a list.
Length = Annotated[int, typer.Option(
    "--len", "-n", help="New characters to generate per sample.")]
Prime = Annotated[Optional[str], typer.Option(
    help="Text to start from; printed before the new characters.")]
PrimeFile = Annotated[Optional[Path], typer.Option(
    "--prime-file", help="Start from the text of this UTF-8 file (as --prime).",
    show_default=False)]
Stop = Annotated[Optional[str], typer.Option(
    "--stop", help="End a sample where the new characters first contain this text "
    "(it is written too).", show_default=False)]
Temperature = Annotated[float, typer.Option(
    "--temperature", "-t", help="Below 1: safer, more repetitive; above 1: wilder.")]
TopK = Annotated[Optional[int], typer.Option(
    help="Draw only from the K most likely characters.")]
TopP = Annotated[Optional[float], typer.Option(
    help="Draw only from the most likely characters whose probabilities add up to P.")]
Greedy = Annotated[bool, typer.Option(
    "--greedy", help="Always take the most likely character.")]
Seed = Annotated[Optional[int], typer.Option(
    help="Same seed, same text \\[default: random].")]
NumSamples = Annotated[int, typer.Option(
    help="Independent samples, each written as it is drawn, separated by a blank line "
    "(with --seed S, sample i uses seed S + i).")]
Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Write the text to this file instead of stdout.")]
Interactive = Annotated[bool, typer.Option(
    "--interactive", "-i", help="Type a prime, get its continuation, again and again; "
    "the flags above set where the settings start (type :help at the prompt).")]
KeepState = Annotated[bool, typer.Option(
    "--keep-state", help="With -i: each prime continues from where the last "
    "continuation ended (as :keep on).")]


Beam = Annotated[Optional[int], typer.Option(
    "--beam", help="Search instead of drawing: keep the B likeliest continuations at each "
    "step and write the likeliest (--beam 1 is --greedy); its log-probability goes to "
    "stderr (or --json). With --num-samples N, the N likeliest.", show_default=False)]


def sample(checkpoint: NewestRun = None, runs_dir: RunsDir = RUNS, length: Length = 200,
           prime: Prime = None, prime_file: PrimeFile = None, stop: Stop = None,
           temperature: Temperature = 1.0, top_k: TopK = None, top_p: TopP = None,
           greedy: Greedy = False, beam: Beam = None, seed: Seed = None,
           num_samples: NumSamples = 1, output: Output = None, as_json: Json = False,
           interactive: Interactive = False, keep_state: KeepState = False,
           device: Device = "auto", threads: Threads = 0) -> None:
    """Generate text from a trained model (text on stdout, nothing else).

    With -i, a prompt takes one prime after another and writes each continuation as it
    is drawn; commands such as :temperature 0.7 or :keep on change the settings between
    turns (:help lists them)."""
    how = _sampling(temperature, top_k, top_p, greedy)
    _check(length, num_samples, stop, beam, seed, searching={
        "--temperature": temperature != 1.0, "--top-k": top_k is not None,
        "--top-p": top_p is not None, "--greedy": greedy, "--seed": seed is not None})
    _check_interactive(interactive, keep_state, num_samples, {
        "--prime": prime, "--prime-file": prime_file, "--output": output,
        "--json": as_json or None})
    prime = _prime(prime, prime_file)
    output = None if output is not None and str(output) == "-" else output   # - is stdout
    if output is not None:
        from charrnn.files import check_output

        check_output(output, "--output")
    from charrnn.sample import Session, beam_search, pick_threads, stream

    model, vocab, path = load_model(checkpoint, runs_dir, device)
    say_which(checkpoint, "sampling from", path)
    pick_threads(model, beam or 1, threads)
    if interactive:
        from charrnn.interactive import interact

        interact(Session(model, vocab, length=length, sampling=how, keep=keep_state,
                         seed=seed, beam=beam), stop)
        return
    if beam is not None:
        found = beam_search(model, vocab, length, prime=prime, beam=beam,
                            results=num_samples, stop=stop)
        _write([iter(b.text) for b in found], prime, None, output, length * num_samples,
               as_json, [b.nats for b in found], model, vocab)
    else:   # each sample drawn and written as it comes (the first checks the prime)
        _write([stream(model, vocab, length, prime=prime, seed=None if seed is None else
                       seed + i, **vars(how)) for i in range(num_samples)],
               prime, stop, output, length * num_samples, as_json, None, model, vocab)
    if output:
        err.print(Text(f"wrote {num_samples} sample(s) to {output}"))


def _sampling(temperature: float, top_k: int | None, top_p: float | None, greedy: bool):
    """``sample.Sampling`` of the flags; a bad one named as its flag (``--top-k``)."""
    from charrnn.sample import Sampling

    try:
        return Sampling(temperature, top_k, top_p, greedy)
    except SettingError as e:
        raise ConfigError(f"--{e.name} {e.rule}") from None


def _check(length: int, num_samples: int, stop: str | None, beam: int | None,
           seed: int | None, searching: dict[str, bool]) -> None:
    check_at_least(1, {"--len": length, "--num-samples": num_samples, "--beam": beam})
    if seed is not None and not -2**63 <= seed <= 2**64 - num_samples:
        raise ConfigError(f"--seed must be between -2**63 and 2**64 - {num_samples} (sample i "
                          f"uses seed + i), got {seed}")
    if length > MAX_SAMPLE_LENGTH:
        raise ConfigError(f"--len must be at most {MAX_SAMPLE_LENGTH:,}, got {length}")
    if num_samples > MAX_SAMPLES:
        raise ConfigError(f"--num-samples must be at most {MAX_SAMPLES:,}, got {num_samples}")
    if stop == "":
        raise ConfigError("--stop needs some text to stop at, e.g. --stop $'\\n\\n'")
    if beam is None:
        return
    from charrnn.sample import check_beam

    try:
        check_beam(beam)
    except SettingError as e:
        raise ConfigError(f"--{e.name} {e.rule}") from None
    drawing = [flag for flag, given in searching.items() if given]
    if drawing:
        raise ConfigError(f"{drawing[0]} sets how characters are drawn, and --beam searches "
                          "instead of drawing; give one of them")
    if num_samples > beam:
        raise ConfigError(f"--num-samples {num_samples} asks for more continuations than "
                          f"--beam {beam} keeps; give --beam {num_samples} or more")


def _prime(prime: str | None, prime_file: Path | None) -> str | None:
    """The prime: --prime, or the text of --prime-file (- for stdin, read once)."""
    if prime_file is None:
        return prime
    if prime is not None:
        raise ConfigError("--prime and --prime-file exclude each other; give one")
    if str(prime_file) == "-":
        text = stdin_text("--prime-file -")
    else:
        from charrnn.files import read_small_text

        text = read_small_text(prime_file, what="prime file")
    if not text:
        raise ConfigError(f"--prime-file {prime_file} is empty; give a file with some text, "
                          "or leave it out to start from the beginning of a line")
    return text


def _check_interactive(interactive: bool, keep_state: bool, num_samples: int,
                       others: dict[str, object]) -> None:
    """-i writes one continuation of each typed prime to stdout: the flags that say
    otherwise are refused with it, and --keep-state without it."""
    if not interactive:
        if keep_state:
            raise ConfigError("--keep-state only applies to --interactive (-i)")
        return
    given = [flag for flag, value in others.items() if value is not None]
    given += ["--num-samples"] * (num_samples != 1)
    if given:
        raise ConfigError(f"{', '.join(given)} cannot go with --interactive, which writes one "
                          "continuation of each prime typed at its prompt to stdout")


def _write(samples, prime: str | None, stop: str | None, output: Path | None, total: int,
           as_json: bool, nats: list[float] | None, model, vocab) -> None:
    """Each sample after its prime, a blank line between two, each ending at ``stop``;
    a progress bar on a terminal's stderr while the text goes elsewhere. With
    ``as_json``, one JSON object per sample instead: its prime, text and
    log-probability. ``nats``: the samples' log-probabilities, when known (a search),
    said on stderr."""
    from charrnn.progress import bar as progress_bar
    from charrnn.sample import default_prime, nats_of, until_stop

    notes = []      # said after the text, which may be on the same terminal
    with output_to(output) as out, progress_bar(not out.isatty(), total=total, unit="char",
                                                leave=False, delay=1.0) as bar:
        for i, sample in enumerate(samples):
            kept: list[str] = []        # the new text, for JSON only: a sample streams
            written = 0
            if not as_json:
                out.write(("\n\n" if i else "") + (prime or ""))
            for ch in until_stop(sample, stop):
                written += 1
                bar.update()
                if as_json:
                    kept.append(ch)
                else:
                    out.write(ch)
                    if ch == "\n":
                        out.flush()
            score = nats[i] if nats is not None else None
            if as_json:
                text = "".join(kept)
                score = nats_of(model, vocab, prime, text) if score is None else score
                out.write(json.dumps({"prime": default_prime(vocab) if prime is None else prime,
                                      "text": text, "nats": score, "chars": written}) + "\n")
            elif score is not None:
                notes.append(f"log-probability {score:.4f} nats ({score / max(1, written):.4f}"
                             f" per character) of the {written:,} new characters")
        # Exactly the text asked for; on a terminal, a newline so the prompt starts afresh.
        if out.isatty() and not as_json:
            out.write("\n")
    for note in notes:
        err.print(Text(note))
