"""``charrnn sample -i``: one prime after another at a prompt, each continuation written
as it is drawn.

The loop reads a line, and either carries out a command (``:temperature 0.7``,
``:keep on`` ...; ``INTERACTIVE_HELP`` lists them) or hands the line to
``sample.Session.turn`` as a prime. Continuations go to stdout; the prompt, replies and
one-line errors to stderr, so a redirected stdout holds the generated text alone. A bad
line never ends the session; Ctrl-C stops a continuation, and at the prompt ends it.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
from typing import Any

from rich.console import Console
from rich.text import Text

from charrnn.errors import CharRNNError, ConfigError
from charrnn.sample import Session, until_stop

err = Console(stderr=True, highlight=False, soft_wrap=True)

PROMPT = "> "
INTERACTIVE_HELP = r"""Type a prime and press Enter: its continuation follows (--len new
characters, then a newline). The Enter key is not part of the prime; type \n for a
newline, \t for a tab, \\ for a backslash. An empty line carries on where the last
continuation ended when :keep is on, else starts from a newline as `charrnn sample`
does. A line that starts with : or / is a command (:: or // starts a prime with one
: or /); a command without its value shows the current one.
  :temperature T  (:t)     :len N  (:n)     :top-k K|off  (:k)     :top-p P|off  (:p)
  :greedy on|off           :seed N|random   :stop TEXT|off
  :beam B|off    write the likeliest continuation a search keeping B finds
  :keep on|off   each prime continues from where the last continuation ended
  :reset         forget that state          :show   all settings
  :help  (:h)    this                       :quit  (:q, Ctrl-D)  end the session
Ctrl-C stops a continuation and shows the prompt again; at the prompt it ends the
session (exit status 130)."""
_COMMANDS = {  # what each command and its short forms change
    **dict.fromkeys(("temperature", "temp", "t"), "temperature"),
    **dict.fromkeys(("len", "length", "n"), "length"),
    **dict.fromkeys(("top-k", "top_k", "topk", "k"), "top_k"),
    **dict.fromkeys(("top-p", "top_p", "topp", "p"), "top_p"),
    **dict.fromkeys(("greedy", "seed", "stop", "keep", "reset", "show", "beam"), None),
    **dict.fromkeys(("help", "h", "?"), "help"), **dict.fromkeys(("quit", "q", "exit"), "quit"),
}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def interact(session: Session, stop: str | None) -> None:
    """The loop of ``sample -i``: read a line, then carry out a command or write the
    continuation of the prime it holds, until :quit or the end of the input."""
    on_terminal = sys.stdin.isatty()
    if on_terminal:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        err.print(Text("type a prime and press Enter; :help lists the commands, :quit or "
                       "Ctrl-D ends the session"))
    settings = {"stop": stop}    # what the loop applies itself; the rest is the session's
    while True:
        try:
            line = _read_line(PROMPT).removesuffix("\r")
        except EOFError:
            sys.stderr.write("\n")      # after the last prompt
            return
        except KeyboardInterrupt:
            sys.stderr.write("\n")       # the shell's prompt starts a line of its own
            raise
        except UnicodeDecodeError as e:
            err.print(Text(f"error: that line is not valid {e.encoding} text; type another"))
            continue
        try:
            if line[:1] in (":", "/") and line[:2] not in ("::", "//"):
                reply = _session_command(session, settings, line[1:])
                if reply is None:
                    return
                err.print(Text(reply))
                continue
            text = _unescape(line[1:] if line[:2] in ("::", "//") else line)
            session.stop = settings["stop"]     # a searched turn is cut there
            stopped = _TurnStop()               # Ctrl-C during the turn (_write_turn)
            chars = session.turn(text, halt=stopped.halt)     # an error in the prime: now
        except CharRNNError as e:
            err.print(Text(f"error: {' '.join(str(e).splitlines())}"))
            continue
        _write_turn(chars, settings["stop"], stopped)


def _read_line(prompt: str) -> str:
    """A line of input without its newline (EOFError at the end of the input). On a
    terminal, readline shows the prompt and edits the line; otherwise the prompt goes
    to stderr, so that stdout holds the continuations alone."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return input(prompt)
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return input()


def _unescape(text: str) -> str:
    """\\n, \\t and \\\\ in a typed prime; any other backslash stays as typed."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


class _TurnStop(threading.Event):
    """Ctrl-C during a turn. A beam search asks ``halt`` between steps and takes the
    request: it ends with the continuation it kept so far, which is then written whole."""

    def __init__(self) -> None:
        super().__init__()
        self.searched = False         # a search ended on it

    def halt(self) -> bool:
        if self.is_set():
            self.clear()
            self.searched = True
            return True
        return False


def _write_turn(chars, stop: str | None, stopped: _TurnStop) -> None:
    """Write the characters as they come, until the last, the --stop text, or Ctrl-C
    (which sets ``stopped`` and stops this continuation only; a beam search ended by it
    writes what it kept so far); then a newline."""
    out, written = sys.stdout, 0
    live = out.isatty()
    with _ctrl_c_sets(stopped):
        for ch in until_stop(chars, stop):
            out.write(ch)
            written += 1
            if live:
                out.flush()
            if stopped.is_set():
                break
        out.write("\n")
        out.flush()
    if stopped.is_set() or stopped.searched:
        err.print(Text(f"stopped after {written:,} character(s)"))


@contextlib.contextmanager
def _ctrl_c_sets(stopped: threading.Event):
    """Ctrl-C (SIGINT) sets ``stopped`` instead of interrupting, while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stopped.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Settings of drawing a sample, which a beam search has no use for.
DRAWING_ONLY = ("temperature", "top_k", "top_p", "greedy", "seed")


def _session_command(session: Session, settings: dict[str, Any], line: str) -> str | None:
    """Carry out one command (``line`` without its : or /): the reply to show, or None
    to end the session. A bad command or value raises ``ConfigError``."""
    word, _, rest = line.partition(" ")
    word, value = word.lower(), rest.strip()
    if word not in _COMMANDS:
        raise ConfigError(f"unknown command :{word}; :help lists them")
    name = _COMMANDS[word] or word
    if name == "quit":
        return None
    if name == "help":
        return INTERACTIVE_HELP
    if name == "reset":
        session.reset()
        return "forgot the state: the next prime starts afresh"
    if name == "show":
        return ", ".join(_show(session, settings, n) for n in (
            "length", "temperature", "top_k", "top_p", "greedy", "beam", "seed", "keep",
            "stop"))
    if not value:
        return _show(session, settings, name)
    if name == "stop":
        settings["stop"] = None if value == "off" else _unescape(rest)
    elif name == "seed":
        session.reseed(None if value.lower() == "random" else _parse(int, name, value))
    elif name in ("greedy", "keep"):
        session.configure(**{name: _parse(_on_off, name, value)})
    elif name in ("top_k", "top_p", "beam") and value.lower() in ("off", "none"):
        session.configure(**{name: None})
    else:
        kind = float if name in ("temperature", "top_p") else int    # len, top-k, beam
        session.configure(**{name: _parse(kind, name, value)})
    if name in DRAWING_ONLY and session.settings()["beam"] is not None:
        return (f"{_show(session, settings, name)} (not used while beam search is on; "
                ":beam off draws again)")
    return _show(session, settings, name)


def _show(session: Session, settings: dict[str, Any], name: str) -> str:
    """A setting as the command that sets it would take it, e.g. 'top-k off'."""
    value = settings["stop"] if name == "stop" else session.settings()[name]
    label = {"length": "len", "top_k": "top-k", "top_p": "top-p"}.get(name, name)
    if value is None:
        shown = "random" if name == "seed" else "off"
    elif isinstance(value, bool):
        shown = "on" if value else "off"
    elif name == "stop":
        shown = repr(value)
    else:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
    if name == "keep" and value:
        shown += " (continuing)" if session.continues else " (nothing yet)"
    return f"{label} {shown}"


def _on_off(value: str) -> bool:
    words = {"on": True, "yes": True, "true": True, "1": True,
             "off": False, "no": False, "false": False, "0": False}
    if value.lower() not in words:
        raise ValueError(value)
    return words[value.lower()]


def _parse(kind, name: str, value: str):
    try:
        return kind(value)
    except ValueError:
        what = {int: "a whole number", float: "a number"}.get(kind, "on or off")
        raise ConfigError(f"{name.replace('_', '-')} takes {what}, got {value!r}") from None
