"""``charrnn eval``: score any text with a trained model, and with --per-char or --html
each character's own score (``charrnn.scoring``, ``charrnn.per_char``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn.cli.common import check_at_least, err, text_files
from charrnn.cli.options import Device, Json, Quiet, Threads
from charrnn.errors import CharRNNError, ConfigError

# The arguments and options of `eval`, declared once here so that the command reads as
# a list.
Checkpoint = Annotated[Path, typer.Argument(
    help="Checkpoint file, or a run folder (its best.pt).", show_default=False)]
Texts = Annotated[list[Path], typer.Argument(
    help="UTF-8 text to score: a file, several, a folder or a pattern (read as one text, "
    "as train reads them), or the name of a downloaded corpus.", show_default=False,
    metavar="TEXT...")]
SkipUnknown = Annotated[bool, typer.Option(
    "--skip-unknown", help="Leave out characters the model's vocabulary lacks (they are "
    "counted and reported) instead of stopping with an error.")]
MaxChars = Annotated[int, typer.Option(
    "--max-chars", help="Score at most this many characters, spread evenly over "
    "the text, as training's --val-max-chars does (0 = all of it).")]
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Folder for the text's encoded ids [default: the corpus cache "
    "beside the run, else a temporary folder].", show_default=False)]
PerChar = Annotated[Optional[Path], typer.Option(
    "--per-char", metavar="FILE", help="Also write every scored character's log-"
    "probability, rank and the model's top guesses, in text order: JSON Lines, CSV if "
    "FILE ends in .csv, JSON Lines on stdout for -.", show_default=False)]
Html = Annotated[Optional[Path], typer.Option(
    "--html", metavar="FILE", help="Also draw the text coloured by surprisal, the top "
    "guesses on hover, as a self-contained HTML page (the first 100,000 characters "
    "scored).", show_default=False)]
Top = Annotated[int, typer.Option(
    "--top", help="Guesses kept per character by --per-char and --html.")]


def eval_(checkpoint: Checkpoint, text: Texts, skip_unknown: SkipUnknown = False,
          max_chars: MaxChars = 0, cache_dir: CacheDir = None, per_char: PerChar = None,
          html: Html = None, top: Top = 5, device: Device = "auto", threads: Threads = 0,
          as_json: Json = False, quiet: Quiet = False) -> None:
    """Score any text: nats and bits per character, and perplexity.

    Training's own computation of its val loss: the text in 64 streams at most, each
    carrying its hidden state, read in bounded memory however large it is. --per-char
    and --html add each character's own score."""
    from charrnn.checkpoint import resolve_checkpoint
    from charrnn.data import list_chars
    from charrnn.device import resolve_device
    from charrnn.scoring import score_text

    check_at_least(0, {"--max-chars": max_chars, "--top": top})
    path = resolve_checkpoint(checkpoint)
    stdin = "-" in [str(t) for t in text]
    if stdin and len(text) > 1:
        raise ConfigError("- (stdin) must be the only TEXT; save it to a file to score it "
                          "with others")
    with contextlib.ExitStack() as spool:
        if stdin:   # read once into a temporary folder, which holds its cache too
            cache_dir = Path(spool.enter_context(tempfile.TemporaryDirectory()))
            text = [_stdin_to(cache_dir / "stdin.txt")]
        paths = text_files(text, quiet)
        outputs = _eval_outputs(per_char, html, top, as_json, inputs=[path, *paths])
        if not quiet:
            label = "stdin" if stdin else str(paths[0]) if len(paths) == 1 else \
                f"{len(paths)} files"
            err.print(Text(f"scoring {label} with {path}"))
        try:
            score = score_text(path, paths, skip_unknown=skip_unknown, max_chars=max_chars,
                               cache_dir=cache_dir, device=resolve_device(device),
                               progress=not quiet, outputs=outputs, threads=threads)
        except CharRNNError as e:     # a problem of the text piped in: say so, not its copy
            if not stdin:
                raise
            raise type(e)(str(e).replace(str(paths[0]), "(stdin)")) from None
    if score.unknown_count and not quiet:
        err.print(Text(f"left out {score.unknown_count:,} character(s) outside the vocabulary "
                       f"({len(score.unknown_chars)} distinct: "
                       f"{list_chars(score.unknown_chars, 10)})"))
    if outputs is not None and not quiet:
        _say_written(outputs, score.scored)
    line = (f"{score.nats_per_char:.4f} nats/char  {score.bits_per_char:.4f} bits/char  "
            f"perplexity {score.perplexity:.3f}  ({score.scored:,} characters scored)")
    if as_json:
        print(json.dumps({**score.to_dict(), **({"text": "-"} if stdin else {})}))
    elif outputs is not None and outputs.stdout:   # stdout holds the records
        if not quiet:
            err.print(Text(line))
    else:
        print(line)


def _stdin_to(path: Path) -> Path:
    """stdin's bytes copied to ``path`` as they come (a text is read twice: checked,
    then encoded), in bounded memory however long."""
    with open(path, "wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f)
    return path


def _say_written(outputs, scored: int) -> None:
    """Name on stderr the files ``eval`` wrote besides the score."""
    from charrnn.per_char import HTML_MAX_CHARS

    if outputs.records is not None:
        err.print(Text(f"wrote {scored:,} per-character records to {outputs.records}"))
    if outputs.html is not None:
        err.print(Text(f"wrote {outputs.html}" + (
            f" (note: the page shows the first {HTML_MAX_CHARS:,} of the {scored:,} "
            "characters scored)" if scored > HTML_MAX_CHARS else "")))


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

