"""What several commands do the same way: the stderr console, flag bounds, the model a
command reads, the files its TEXT arguments name, and where its text output goes."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from charrnn.errors import ConfigError

# Notes, progress and errors: stdout is kept for what a command produces.
err = Console(stderr=True, highlight=False, soft_wrap=True)


def check_at_least(low: int, values: dict[str, int | None]) -> None:
    """A one-line ``ConfigError`` for the first flag given below ``low``."""
    for flag, value in values.items():
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")


def load_model(checkpoint: Path | None, runs_dir: Path, device: str):
    """The model, vocabulary and file of a checkpoint (the newest run's by default),
    on ``device``."""
    from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from charrnn.device import resolve_device

    path = resolve_checkpoint(checkpoint, runs_dir)
    model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    return model.to(resolve_device(device)), vocab, path


def say_which(checkpoint: Path | None, doing: str, path: Path | str | None) -> None:
    """Name on stderr the file a command chose, when the user named none (or a folder)."""
    if checkpoint is None or checkpoint.is_dir():
        err.print(Text(f"{doing} {path}"))


def text_files(inputs: list[Path], quiet: bool) -> list[Path]:
    """The files that TEXT arguments name (``corpus.expand_inputs``); a note on stderr
    for files named more than once and for empty files a folder or pattern held."""
    from charrnn.corpus import expand_inputs
    from charrnn.views import first_few

    repeats: list[Path] = []
    empty: list[Path] = []
    paths = expand_inputs(inputs, on_duplicate=repeats.append, on_empty=empty.append)
    if not quiet:
        for files, what in ((repeats, "file(s) named more than once, read once where first "
                             "named"), (empty, "empty file(s) left out")):
            if files:
                err.print(Text(f"note: {len(files)} {what}: {first_few(files)}"))
    return paths


def stdin_text(what: str) -> str:
    """All of stdin as text, read once and checked as a text file is: UTF-8, a leading
    byte-order mark dropped."""
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} (stdin) is not UTF-8 text (byte {raw[e.start]:#04x} at "
                          f"offset {e.start}); convert it, e.g. iconv -f latin1 -t utf-8") \
            from None


@contextlib.contextmanager
def product_console():
    """The console a command draws its product on (a table, a report) on stdout: the
    terminal's own, fitted to it; for a pipe or a file, lines as long as they need to be
    (nothing cut to 80 columns), with no trailing spaces."""
    out = Console(highlight=False)
    if out.is_terminal:
        yield out
        return
    drawn = io.StringIO()
    yield Console(file=drawn, highlight=False, width=10_000, color_system=None)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in drawn.getvalue().splitlines()))


@contextlib.contextmanager
def output_to(output: Path | None):
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
