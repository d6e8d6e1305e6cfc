"""`charrnn sample -i`: primes and commands on stdin, one continuation per prime on
stdout, each checked against a plain sample or a plain torch loop written here."""

from __future__ import annotations

import contextlib
import io
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

import pytest
import torch

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.config import ModelConfig
from charrnn.errors import ConfigError, DataError
from charrnn.model import CharRNN
from charrnn.sample import Sampling, Session, Stepper, beam_search, generate

from helpers import CELLS, child_env, prime_sensitive_model, run, save_model

CHARS = "\n /:abcdefghij"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random 2-layer LSTM over CHARS, its weights scaled up fivefold so that what
    it predicts depends clearly on all it has read, and its greedy text varies instead
    of repeating one character (a tiny trained model mostly repeats spaces whatever
    came before, and so do most random ones)."""
    torch.manual_seed(5)
    config = ModelConfig(cell="lstm", embedding_dim=8, hidden_size=16, num_layers=2)
    model = CharRNN(len(CHARS), config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)
    path = tmp_path_factory.mktemp("interactive") / "model.pt"
    save_model(model, CHARS, path)
    return path


def piped(path, lines: list[str], *flags: str) -> subprocess.CompletedProcess:
    """``charrnn sample -i PATH FLAGS`` in a fresh process, ``lines`` piped to its stdin."""
    done = subprocess.run([sys.executable, "-m", "charrnn", "sample", "-i", str(path),
                           "--device", "cpu", *flags], input="".join(f"{line}\n" for line
                                                                       in lines),
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def session(capsys, monkeypatch):
    """``session(PATH, LINES, *FLAGS)``: ``charrnn sample -i PATH FLAGS`` in this process,
    reading ``lines`` from its stdin (not a terminal, as when they are piped in)."""
    def start(path, lines: list[str], *flags: str) -> SimpleNamespace:
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
        code, out, err = run(["sample", "-i", str(path), "--device", "cpu", *flags], capsys)
        assert code == 0, err
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return start


def turns(stdout: str, *lengths: int) -> list[str]:
    """The continuations in a session's stdout, of these lengths, each with its newline."""
    found, at = [], 0
    for n in lengths:
        assert stdout[at + n] == "\n", stdout
        found.append(stdout[at:at + n])
        at += n + 1
    assert at == len(stdout), stdout
    return found


def sampled(path, capsys, prime: str, *flags: str) -> str:
    """The new text of a plain ``charrnn sample --prime PRIME FLAGS``."""
    code, out, err = run(["sample", str(path), "--device", "cpu", "--prime", prime, *flags],
                         capsys)
    assert code == 0 and out.startswith(prime), err
    return out[len(prime):]


def plain_greedy(model, text: str, n: int, carried=None):
    """Reference: read ``text`` with nn.LSTM from ``carried`` (hidden state and the
    logits of the next character; None: zero state), then take the most likely
    character n times, reading each. The new text and what to carry on from."""
    hidden, logits = carried if carried is not None else (None, None)
    chars = []
    with torch.no_grad():
        if text:
            ids = torch.tensor([[CHARS.index(ch) for ch in text]])
            logits, hidden = model(ids, hidden)
            logits = logits[0, -1]
        for _ in range(n):
            nxt = int(logits.argmax())
            chars.append(CHARS[nxt])
            logits, hidden = model(torch.tensor([[nxt]]), hidden)
            logits = logits[0, -1]
    return "".join(chars), (hidden, logits)


def test_with_keep_off_each_greedy_turn_is_a_fresh_sample_of_its_prime(
        checkpoint, capsys, session):
    done = session(checkpoint, ["abc", "hij", "a\\nb"], "--greedy", "--len", "40")
    first, second, third = turns(done.stdout, 40, 40, 40)
    assert first == sampled(checkpoint, capsys, "abc", "--greedy", "--len", "40")
    assert second == sampled(checkpoint, capsys, "hij", "--greedy", "--len", "40")
    assert third == sampled(checkpoint, capsys, "a\nb", "--greedy", "--len", "40")  # \n typed
    model, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    assert first == plain_greedy(model.eval(), "abc", 40)[0]
    assert done.stderr == "> " * 4 + "\n"          # the prompts, and a newline at the end


@pytest.mark.parametrize("how", [[":keep on"], [":k 3", ":keep on", ":k off"], "--keep-state"])
def test_with_keep_on_a_prime_continues_the_text_of_the_turns_before(
        checkpoint, capsys, how, session):
    commands, flags = (how, []) if isinstance(how, list) else ([], [how])
    done = session(checkpoint, [*commands, "abc", "hij", "", "de"], "--greedy", "--len", "30",
                   *flags)
    outs = turns(done.stdout, 30, 30, 30, 30)
    model, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    model.eval()
    expected, carried = [], None
    for prime in ("abc", "hij", "", "de"):    # an empty line: carry on where it ended
        new, carried = plain_greedy(model, prime, 30, carried)
        expected.append(new)
    assert outs == expected
    assert outs[1] == sampled(checkpoint, capsys, "abc" + outs[0] + "hij", "--greedy",
                              "--len", "30")
    assert outs[1] != plain_greedy(model, "hij", 30)[0]   # the text before did matter


def test_reset_forgets_the_state_and_keep_off_stops_carrying_it(checkpoint, capsys, session):
    done = session(checkpoint, [":keep on", "abc", ":reset", "hij", ":keep off", "hij"],
                   "--greedy", "--len", "25")
    outs = turns(done.stdout, 25, 25, 25)
    fresh = sampled(checkpoint, capsys, "hij", "--greedy", "--len", "25")
    assert outs[1] == outs[2] == fresh
    assert "forgot the state" in done.stderr


def test_settings_typed_at_the_prompt_draw_what_the_same_flags_draw(checkpoint, capsys, session):
    done = session(checkpoint, ["abc", ":t 0.7", ":seed 9", "abc", ":temperature 2",
                                ":top-k 3", ":top-p 0.8", ":len 17", ":seed 4", "ba",
                                ":greedy on", "ba", ":greedy off", ":k off", ":p off",
                                ":n 50", ":t 1", ":seed 11", "ba"], "--len", "60", "--seed", "1")
    outs = turns(done.stdout, 60, 60, 17, 17, 50)
    assert outs[0] == sampled(checkpoint, capsys, "abc", "--len", "60", "--seed", "1")
    assert outs[1] == sampled(checkpoint, capsys, "abc", "--len", "60", "--seed", "9", "-t",
                              "0.7")
    assert outs[2] == sampled(checkpoint, capsys, "ba", "--len", "17", "--seed", "4", "-t",
                              "2", "--top-k", "3", "--top-p", "0.8")
    assert outs[3] == sampled(checkpoint, capsys, "ba", "--len", "17", "--greedy")
    assert outs[4] == sampled(checkpoint, capsys, "ba", "--len", "50", "--seed", "11")
    assert outs[1] != outs[0] and outs[2] != outs[3]
    replies = done.stderr.replace("> ", "").splitlines()
    assert replies[:2] == ["temperature 0.7", "seed 9"] and "greedy on" in replies


def test_flags_set_where_the_settings_start_and_stop_applies_to_each_turn(
        checkpoint, capsys, session):
    full = sampled(checkpoint, capsys, "ab", "--greedy", "--len", "80")
    stop = full[30:32]
    expected = full[:full.index(stop) + len(stop)]
    done = session(checkpoint, ["ab", "ab", ":show"], "--greedy", "--len", "80", "--stop",
                   stop)
    assert done.stdout == f"{expected}\n{expected}\n"
    assert (f"len 80, temperature 1, top-k off, top-p off, greedy on, beam off, seed random, "
            f"keep off, stop {stop!r}") in done.stderr


BAD = [(":t 0", "temperature must be greater than 0"), (":t -1", "temperature must be"),
       (":temperature warm", "temperature takes a number, got 'warm'"),
       (":t nan", "temperature must be"), (":len 0", "length must be at least 1"),
       (":top-k 0", "top-k must be at least 1"), (":p 1.5", "top-p must be in (0, 1]"),
       (":greedy maybe", "greedy takes on or off"), (":seed x", "seed takes a whole number"),
       (":seed 99999999999999999999999", "seed must be between"),
       (":bogus 3", "unknown command :bogus"), ("/nope", "unknown command :nope"),
       ("abz", "the prime text has 1 character(s) not in the model's vocabulary: z"),
       ("ü€ab", "the prime text has 2 character(s)")]


def test_a_bad_command_value_or_prime_is_one_line_and_the_session_goes_on(
        checkpoint, capsys, session):
    lines = [line for bad, _ in BAD for line in (bad, "ab")]
    done = session(checkpoint, lines, "--greedy", "--len", "20")
    good = sampled(checkpoint, capsys, "ab", "--greedy", "--len", "20")
    assert turns(done.stdout, *[20] * len(BAD)) == [good] * len(BAD)   # nothing changed
    errors = done.stderr.replace("> ", "").splitlines()
    assert errors[-1] == "" and len(errors[:-1]) == len(BAD)   # the last: a newline at the end
    for line, (bad, message) in zip(errors, BAD):
        assert line.startswith("error: ") and message in line, (bad, line)


def test_the_end_of_the_input_or_quit_ends_the_session_with_status_0(checkpoint):
    assert piped(checkpoint, []).stdout == ""
    done = piped(checkpoint, ["ab", ":quit", "ab"], "--len", "10")
    assert len(done.stdout) == 11
    done = subprocess.run([sys.executable, "-m", "charrnn", "sample", "-i", str(checkpoint),
                           "--len", "10"], input="ab", env=child_env(), capture_output=True,
                          text=True, timeout=300)             # a last line without its newline
    assert done.returncode == 0 and len(done.stdout) == 11, done.stderr


def test_a_line_starting_with_a_doubled_colon_or_slash_is_a_prime(checkpoint, capsys, session):
    done = session(checkpoint, ["::ab", "//a", ""], "--greedy", "--len", "20")
    assert turns(done.stdout, 20, 20, 20) == [
        sampled(checkpoint, capsys, ":ab", "--greedy", "--len", "20"),
        sampled(checkpoint, capsys, "/a", "--greedy", "--len", "20"),
        sampled(checkpoint, capsys, "\n", "--greedy", "--len", "20")]  # as sample without --prime


def test_the_same_seed_and_input_give_the_same_session(checkpoint, session):
    lines = ["abc", "hij", ":keep on", "ab", "", ":t 1.5", "cd"]
    a = session(checkpoint, lines, "--seed", "3", "--len", "50").stdout
    b = session(checkpoint, lines, "--seed", "3", "--len", "50").stdout
    c = session(checkpoint, lines, "--seed", "4", "--len", "50").stdout
    assert a == b and a != c and len(turns(a, *[50] * 5)) == 5
    again = session(checkpoint, ["abc", ":seed 3", "abc"], "--seed", "3", "--len", "50")
    first, second = turns(again.stdout, 50, 50)
    assert first == second == turns(a, *[50] * 5)[0]          # :seed starts the draws again


@pytest.mark.parametrize("flags, expected", [
    (["-i", "--num-samples", "2"], "--num-samples cannot go with --interactive"),
    (["-i", "--output", "x.txt"], "--output cannot go with --interactive"),
    (["-i", "--prime", "ab", "--prime-file", "p.txt"],
     "--prime, --prime-file cannot go with --interactive"),
    (["--keep-state"], "--keep-state only applies to --interactive"),
    (["-i", "-t", "0"], "--temperature must be greater than 0"),
])
def test_flags_that_do_not_fit_are_refused_in_one_line(checkpoint, capsys, flags, expected):
    code, out, err = run(["sample", str(checkpoint), *flags], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


# --------------------------------------------------------------------- the library
@pytest.mark.parametrize("name", CELLS)
def test_a_session_that_keeps_its_state_draws_as_the_module_reading_all_its_text(name):
    """Every kind of cell, drawing (not greedy): each turn's characters against the
    plain module carrying its hidden state over all the text (every prime and every
    drawn character), drawing from its logits with one generator for the session."""
    model, vocab = prime_sensitive_model("abcdefghij", num_layers=2, **CELLS[name])
    settings = dict(temperature=0.8, top_k=6)
    session = Session(model, vocab, length=25, keep=True, seed=13,
                      sampling=Sampling(**settings))
    primes = ["jabbed", "", "b", "hig"]
    outs = ["".join(session.turn(prime)) for prime in primes]

    generator, expected, hidden, logits = torch.Generator().manual_seed(13), [], None, None
    with torch.no_grad():
        for prime in primes:
            if prime:
                ids = torch.tensor([[vocab.chars.index(ch) for ch in prime]])
                logits, hidden = model(ids, hidden)
            new = ""
            for _ in range(25):
                idx = Sampling(**settings).choose(logits[:, -1], generator)    # (1,)
                new += vocab.chars[int(idx)]
                logits, hidden = model(idx.unsqueeze(1), hidden)
            expected.append(new)
    assert outs == expected


def test_a_turn_read_in_part_leaves_the_state_after_its_last_character():
    model, vocab = prime_sensitive_model("abcdefghij", num_layers=2, cell="gru")
    session = Session(model, vocab, length=40, sampling=Sampling(greedy=True), keep=True)
    turn = session.turn("jab")
    first = "".join(next(turn) for _ in range(10))           # then the reader stops
    turn.close()
    rest = "".join(session.turn("ed"))
    assert rest == generate(model, vocab, 40, prime="jab" + first + "ed", greedy=True)[0]
    session.reset()
    assert "".join(session.turn("ed")) == generate(model, vocab, 40, prime="ed",
                                                   greedy=True)[0]


def test_session_settings_are_checked_and_a_bad_one_changes_nothing():
    model, vocab = prime_sensitive_model("abc", num_layers=1)
    session = Session(model, vocab, sampling=Sampling(temperature=0.5))
    with pytest.raises(ConfigError, match="top-p must be in"):
        session.configure(temperature=2.0, top_p=0.0)
    with pytest.raises(ConfigError, match="length must be at least 1"):
        session.configure(length=0, temperature=2.0)
    assert session.sampling == Sampling(temperature=0.5) and session.length == 200
    with pytest.raises(DataError, match="not in the model's vocabulary: z"):
        session.turn("abz")                          # at once, before any character
    session.configure(keep=True)
    assert not session.continues                     # nothing read yet
    assert len("".join(session.turn(""))) == 200     # from the default prime
    assert session.continues


# --------------------------------------------------------------------- on a terminal
class Screen:
    """The terminal a child process runs on, read as it writes; every wait ends on
    what it shows (the deadline only bounds a hung process)."""

    def __init__(self, fd: int, proc: subprocess.Popen, timeout: float = 300) -> None:
        self.fd, self.proc, self.deadline = fd, proc, time.monotonic() + timeout
        self.shown, self.at = b"", 0       # all it showed; where the last wait ended

    def wait_for(self, done) -> bytes:
        """Read until ``done(what it showed after the last wait)`` holds; that text."""
        self._read(done)
        new, self.at = self.shown[self.at:], len(self.shown)
        return new

    def until(self, wanted: bytes) -> bytes:
        """Read until ``wanted`` shows; what it showed after the last wait, up to and
        including ``wanted`` (the next wait starts after it)."""
        self._read(lambda new: wanted in new)
        start, end = self.at, self.shown.index(wanted, self.at) + len(wanted)
        self.at = end
        return self.shown[start:end]

    def within(self, seconds: float, done) -> bool:
        """Whether ``done(what it showed after the last wait)`` holds within ``seconds``
        (False too if the process ends first)."""
        end = time.monotonic() + seconds
        while not done(self.shown[self.at:]):
            if self.proc.poll() is not None or time.monotonic() > end:
                return False
            self._take(0.1)
        self.at = len(self.shown)
        return True

    def _take(self, wait: float) -> None:
        """What the terminal has for us within ``wait`` seconds, if anything."""
        if select.select([self.fd], [], [], wait)[0]:
            with contextlib.suppress(OSError):     # the process has just closed it
                self.shown += os.read(self.fd, 65536)

    def rest(self) -> bytes:
        """What it showed after the last wait, once the process has ended."""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:                  # the writers closed the terminal: all is read
                break
            if not chunk:
                break
            self.shown += chunk
        return self.shown[self.at:]

    def _read(self, done) -> None:
        while not done(self.shown[self.at:]):
            assert self.proc.poll() is None, self.shown[-2000:]
            assert time.monotonic() < self.deadline, self.shown[-2000:]
            self._take(0.1)


def test_on_a_terminal_ctrl_c_stops_a_continuation_and_the_prompt_comes_back(checkpoint):
    """A continuation of 100,000,000 characters, stopped by ^C typed at the terminal;
    the session goes on; ^C at the prompt then ends it with status 130."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    # A session of its own whose controlling terminal is this one, so that ^C typed
    # there is a SIGINT to the process, as in a shell.
    start = ("import fcntl, os, sys, termios; os.setsid(); "
             "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
             "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    proc = subprocess.Popen([sys.executable, "-c", start, "-m", "charrnn", "sample", "-i",
                             str(checkpoint), "--len", "100000000", "--device", "cpu"],
                            stdin=follower, stdout=follower, stderr=follower,
                            env=child_env(TERM="dumb"))
    os.close(follower)
    screen = Screen(leader, proc)
    try:
        screen.until(b":help lists the commands")
        screen.until(b"> ")
        os.write(leader, b"abc\r")
        screen.until(b"abc")
        screen.wait_for(lambda new: len(new) > 5000)             # the text is coming
        os.write(leader, b"\x03")
        screen.until(b"stopped after")
        screen.until(b"> ")
        os.write(leader, b":len 5\r")
        assert b"len 5" in screen.until(b"> ")
        os.write(leader, b"hij\r")
        screen.until(b"hij")
        shown = screen.until(b"> ").replace(b"\r\n", b"\n")
        assert len(shown) == 1 + 5 + 1 + 2, shown    # newline, 5 new characters, newline, prompt
        # ^C at the prompt ends the session. It is typed once readline echoes a key:
        # CPython's readline sees a signal only when it interrupts its wait for a key,
        # so one that comes as readline starts waiting counts at the next key. Typed
        # again only if no newline (written as the session ends) came within seconds.
        os.write(leader, b"x")
        screen.until(b"x")
        while True:
            os.write(leader, b"\x03")
            if screen.within(5.0, lambda new: b"\n" in new) or proc.poll() is not None:
                break
        assert proc.wait(timeout=60) == 130
        assert screen.rest().strip() in (b"", b"aborted")     # a fresh line for the shell
    finally:
        proc.kill()
        proc.wait()
        os.close(leader)


def test_a_beam_in_the_session_writes_what_sample_beam_writes(checkpoint, session, capsys):
    """``:beam B`` in ``sample -i``: each continuation is the one ``sample --beam B``
    writes for the same prime; ``:beam off`` draws again."""
    done = session(checkpoint, [":beam 4", "abc", "ba", ":beam off", ":greedy on", "abc"],
                   "--len", "30")
    assert turns(done.stdout, 30, 30, 30) == [
        sampled(checkpoint, capsys, "abc", "--len", "30", "--beam", "4"),
        sampled(checkpoint, capsys, "ba", "--len", "30", "--beam", "4"),
        sampled(checkpoint, capsys, "abc", "--len", "30", "--greedy")]
    assert "beam 4" in done.stderr and "beam off" in done.stderr


def test_a_halted_beam_turn_ends_with_the_search_of_the_steps_it_took():
    model, vocab = prime_sensitive_model("abcdefghij", num_layers=2, cell="lstm")
    asked = []

    def halt() -> bool:       # True from its 8th question: 7 steps were taken
        asked.append(1)
        return len(asked) >= 8

    session = Session(model, vocab, length=200, beam=3)
    halted = "".join(session.turn("jab", halt=halt))
    assert len(halted) == 7
    assert halted == beam_search(model, vocab, 7, prime="jab", beam=3)[0].text


def test_ctrl_c_during_a_beam_turn_ends_the_search_and_the_session_goes_on(
        checkpoint, session, monkeypatch):
    """The search stops at the next step, not when its 100,000 steps are done."""
    original, steps = Stepper.step, []

    def step(self, idx, states):
        steps.append(1)
        if len(steps) == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, idx, states)

    monkeypatch.setattr(Stepper, "step", step)
    done = session(checkpoint, [":beam 2", "abc", ":beam off", ":len 5", "abc"],
                   "--len", "100000")
    first, second = done.stdout[:-7], done.stdout[-6:-1]       # each with its newline
    assert done.stdout[-7] == "\n" and done.stdout[-1] == "\n"
    # The search took 10 steps (one more the signal could land in): its text is written
    # whole, not cut after its first character.
    assert len(steps) < 100 and len(first) in (10, 11) and len(second) == 5
    assert f"stopped after {len(first)} character(s)" in done.stderr


def test_drawing_settings_given_during_a_beam_search_say_they_wait(checkpoint, session):
    done = session(checkpoint, [":beam 3", ":t 0.5", ":top-k 5", ":beam off", ":t 0.7"])
    replies = [line.removeprefix("> ") for line in done.stderr.splitlines()]
    assert "temperature 0.5 (not used while beam search is on; :beam off draws again)" \
        in replies
    assert "top-k 5 (not used while beam search is on; :beam off draws again)" in replies
    assert "temperature 0.7" in replies


def test_a_beam_session_that_keeps_its_state_reads_on_from_what_it_wrote():
    model, vocab = prime_sensitive_model("abcdefghij", num_layers=2, cell="lstm")
    session = Session(model, vocab, length=25, keep=True, beam=1)
    first = "".join(session.turn("jab"))
    rest = "".join(session.turn("ed"))
    assert first == generate(model, vocab, 25, prime="jab", greedy=True)[0]
    assert rest == generate(model, vocab, 25, prime="jab" + first + "ed", greedy=True)[0]
