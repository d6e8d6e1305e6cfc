"""The process around a command: when it started, how it ends.

``main`` is the one place where every outcome becomes an exit status and at most one
line on stderr. ``STARTED`` is when the process began, so that ``train --max-time``
counts the interpreter's own start-up too. SIGTERM and SIGHUP unwind like Ctrl-C
(training saves first, see ``charrnn.train``), and a reader of stdout that goes away
(``charrnn sample | head``) is not an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from charrnn.cli.common import err
from charrnn.errors import CharRNNError, TrainingInterrupted

# typer re-exports click's BadParameter (from click itself, or from the copy of click
# that newer typer releases carry); its parent is the UsageError of every bad flag.
_UsageError = typer.BadParameter.__mro__[1]


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


class _ForgivingStderr:
    """stderr for narration, which is optional: once its reader has gone (``charrnn
    train ... 2>&1 | head -1``), what is written to it goes nowhere, and the command
    goes on as if it had been read. A run is never stopped or lost for a note."""

    def __init__(self, stream) -> None:
        # None: the process was started with stderr closed (``2>&-``).
        self._stream, self._gone = stream or _nowhere(), stream is None

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):     # a pipe closed, a full disk, a closed file
                self._forget()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._forget()

    def _forget(self) -> None:
        self._gone = True
        _to_devnull(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _to_devnull(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null: later writes, the interpreter's
    own flush at exit included, go nowhere instead of failing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(fd, stream.fileno())
        finally:
            os.close(fd)


def _nowhere(mode: str = "w"):
    """A stream to or from /dev/null, for one the process was started without."""
    return open(os.devnull, mode, encoding="utf-8")


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


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning as one line on stderr, without its source line."""
    err.print(Text(f"warning: {' '.join(str(message).split())}"))


def main(argv: list[str] | None = None) -> None:
    """Entry point, and the one place where every outcome becomes an exit status and at
    most one line on stderr: 0 done; 1 an error (a ``CharRNNError`` says what to do; an
    unexpected one is named, with the traceback under --debug or CHARRNN_DEBUG=1); 2 a
    bad command line; 128 + N stopped by signal N (130: Ctrl-C)."""
    from charrnn.cli.app import app

    handlers = {signum: signal.signal(signum, _stop) for signum in (
        signal.SIGTERM, getattr(signal, "SIGHUP", None)) if signum is not None
        and threading.current_thread() is threading.main_thread()}
    rank = os.environ.get("RANK", "0")  # set by torchrun: name the process that failed
    where = "" if rank == "0" else f" (rank {rank})"
    stdout, stderr, stdin, show = sys.stdout, sys.stderr, sys.stdin, warnings.showwarning
    # A stream the process was started without (``>&-``, ``<&-``) reads as empty and
    # writes nowhere.
    sys.stdout = _PipeAwareStdout(stdout or _nowhere())
    sys.stderr, sys.stdin = _ForgivingStderr(stderr), stdin or _nowhere("r")
    warnings.showwarning = _warn_in_one_line
    try:
        code = app(args=argv, prog_name="charrnn", standalone_mode=False)
        if code == 130:   # the command library's answer to Ctrl-C; no command returns it
            err.print("aborted")
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
        # A reader such as `head` has all it wanted: not an error.
        _to_devnull(stdout)
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
        sys.stdout, sys.stderr, sys.stdin, warnings.showwarning = stdout, stderr, stdin, show
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(label: str, message: str, status: int = 1) -> None:
    err.print(Text.assemble((label, "bold red"), " ", one_line(message)))
    sys.exit(status)


def one_line(message: str) -> str:
    """``message`` on one line: its newlines as spaces, and any other character that is
    not printable (a value typed with a control character, a line or record separator
    that would start a new line for some readers) escaped as Python writes it."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1]
                   for ch in " ".join(message.split("\n")))
