"""Text generation: warm the hidden state on a prime, then one character per step.

The prime runs through the trained ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` once. After
that, calling the whole module for every character costs more in overhead than in
arithmetic, so ``Stepper`` advances the state with torch's fused single-step cell
functions (``torch.lstm_cell`` ...) on the very same weight tensors (tests check it
against the module, step by step, for every kind of cell). ``generate`` returns the text
of each sample, ``stream`` yields one sample's characters as they are drawn, and a
``Session`` samples turn after turn (``charrnn sample -i``), carrying the state from one
turn to the next when asked; none of them prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from charrnn import threads
from charrnn.data import Vocab
from charrnn.errors import ConfigError, DataError, SettingError
from charrnn.model import CharRNN, Hidden

MAX_BEAM = 1_000     # continuations a search may keep: each is a row of every step


class Stepper:
    """One time step of a trained ``CharRNN``'s recurrent stack, layer by layer."""

    def __init__(self, model: CharRNN) -> None:
        rnn = model.rnn
        if rnn.bidirectional:
            raise ValueError("a bidirectional model cannot generate text")
        self.model = model
        self.mode = rnn.mode  # "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"
        self.num_layers = rnn.num_layers
        self.layers = []
        for k in range(rnn.num_layers):
            w = {name: getattr(rnn, f"{name}_l{k}", None)
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
            self.layers.append(w)
        self.cell = {"LSTM": torch.lstm_cell, "GRU": torch.gru_cell,
                     "RNN_TANH": torch.rnn_tanh_cell, "RNN_RELU": torch.rnn_relu_cell}[self.mode]

    def split(self, hidden: Hidden) -> list:
        """nn.* state (num_layers, B, ...) -> one state per layer."""
        if self.mode == "LSTM":
            h, c = hidden
            return [(h[k], c[k]) for k in range(self.num_layers)]
        return [hidden[k] for k in range(self.num_layers)]

    def join(self, states: list) -> Hidden:
        """One state per layer -> the nn.* state (num_layers, B, ...); ``split`` undone."""
        if self.mode == "LSTM":
            return (torch.stack([h for h, _ in states]), torch.stack([c for _, c in states]))
        return torch.stack(states)

    def step(self, idx: torch.Tensor, states: list) -> tuple[torch.Tensor, list]:
        """Ids (B,) and per-layer states -> next-character logits (B, V) and new states."""
        x = self.model.embedding(idx)                        # (B,) -> (B, E)
        new_states = []
        for w, state in zip(self.layers, states):
            if self.mode == "LSTM" and w["weight_hr"] is not None:
                state = _projected_lstm_cell(x, state, w)
            else:
                state = self.cell(x, state, w["weight_ih"], w["weight_hh"], w["bias_ih"],
                                  w["bias_hh"])
            new_states.append(state)
            x = state[0] if self.mode == "LSTM" else state   # (B, H_out)
        return self.model.head(x), new_states                # (B, H_out) -> (B, V)


def _projected_lstm_cell(x, state, w):
    """LSTM step with proj_size: h = W_hr (o * tanh(c)); torch has no fused cell for it."""
    h, c = state
    gates = F.linear(x, w["weight_ih"], w["bias_ih"]) + F.linear(h, w["weight_hh"], w["bias_hh"])
    i, f, g, o = gates.chunk(4, dim=1)                       # (B, 4H) -> 4 x (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = F.linear(torch.sigmoid(o) * torch.tanh(c), w["weight_hr"])  # (B, H) -> (B, P)
    return h, c


@dataclass(frozen=True)
class Sampling:
    """How each next character is drawn: the argmax (``greedy``), or a draw from the
    distribution divided by ``temperature`` and cut to the ``top_k`` likeliest
    characters and to those whose probabilities reach ``top_p`` (None: no cut). Checked
    when made, for every caller (``generate``, ``stream``, ``Session``, the command
    line): a bad value raises a one-line ``SettingError`` that names it."""
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise SettingError("top-k", f"must be at least 1, got {self.top_k}")
        if not 0 < self.temperature < math.inf:     # a NaN fails too
            raise SettingError("temperature", "must be greater than 0 and finite, got "
                               f"{self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise SettingError("top-p", f"must be in (0, 1], got {self.top_p}")

    def choose(self, logits: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Next ids (B,) from logits (B, V)."""
        if self.greedy:
            return logits.argmax(dim=-1)
        # Shifted so that the largest is 0: a tiny temperature then sends the others to
        # -inf (never inf - inf), and the draw tends to the argmax as it should.
        logits = (logits.float() - logits.float().amax(dim=-1, keepdim=True)) / self.temperature
        if self.top_k is not None and self.top_k < logits.size(-1):
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]        # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            # Drop a token when the tokens ranked above it already reach top_p.
            drop = (cum - sorted_logits.softmax(dim=-1)) >= self.top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        probs = logits.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def until_stop(chars: Iterable[str], stop: str | None) -> Iterator[str]:
    """``chars`` up to and including the first place where they spell ``stop`` (all of
    them when ``stop`` is None): where ``sample --stop`` ends a sample."""
    tail = ""     # the latest characters, as many as ``stop`` has
    for ch in chars:
        yield ch
        if stop is not None:
            tail = (tail + ch)[-len(stop):]
            if tail == stop:
                return


def default_prime(vocab: Vocab) -> str:
    """What generation starts from when the user gives no prime: a newline (the start
    of a line) if the text had one, else its most common-looking first character."""
    return "\n" if "\n" in vocab.chars else (" " if " " in vocab.chars else vocab.chars[0])


def generate(model: CharRNN, vocab: Vocab, length: int, *, prime: str | None = None,
             num_samples: int = 1, seed: int | None = None, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False) -> list[str]:
    """The ``length`` new characters of each of ``num_samples`` samples, drawn together
    as one batch (the prime is not repeated); ``Sampling`` says how each is drawn."""
    steps = list(_steps(model, vocab, length, prime, num_samples, seed, Sampling(
        temperature, top_k, top_p, greedy)))
    if not steps:
        return [""] * num_samples
    ids = torch.stack(steps, dim=1)                               # length x (B,) -> (B, length)
    return [vocab.decode(row) for row in ids]


def stream(model: CharRNN, vocab: Vocab, length: int, *, prime: str | None = None,
           seed: int | None = None, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, greedy: bool = False) -> Iterator[str]:
    """One sample's new characters, yielded as they are drawn.

    Like ``generate``, the prime is checked here, before the first character (a prime
    with characters outside the vocabulary raises ``DataError``). The same seed gives
    the same text; no seed draws from a fresh random state."""
    steps = _steps(model, vocab, length, prime, 1, seed, Sampling(
        temperature, top_k, top_p, greedy))
    return (vocab.chars[int(idx)] for idx in steps)


class Session:
    """Sampling turn after turn from one model, as ``charrnn sample -i`` does: the
    settings (length, how to draw, keep), one random generator for the whole session,
    and the recurrent state where the last turn ended.

    Each ``turn(prime)`` yields ``length`` new characters after ``prime``. With ``keep``
    off it starts from a zero state, exactly as ``stream(prime=...)`` with the same
    settings does; with ``keep`` on it carries on from the state after the last
    character of the previous turn, so that the model reads the prime as the next
    text after it. The state is recorded character by character, so a turn that is
    not read to its end leaves the state after the last character it yielded. The
    generator is seeded once (``reseed``) and draws on across turns: the same session,
    turn for turn, with the same seed gives the same text. Nothing here prints.
    """

    def __init__(self, model: CharRNN, vocab: Vocab, *, length: int = 200,
                 sampling: Sampling = Sampling(), keep: bool = False,
                 seed: int | None = None, beam: int | None = None) -> None:
        self.model = model.eval()   # for the session's life: no dropout
        self.vocab = vocab
        self.stepper = Stepper(model)
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device)
        self.sampling = sampling
        self.length, self.keep, self.beam = 1, keep, None
        self.stop: str | None = None      # where a searched turn is cut (``until_stop``)
        self.configure(length=length, beam=beam)
        self.seed: int | None = None
        self.reseed(seed)
        self._end: tuple[list, torch.Tensor] | None = None  # (states, last character's id)

    def configure(self, **settings: Any) -> None:
        """Change some of length, keep, beam (None: draw, don't search) and
        ``Sampling``'s temperature, top_k, top_p (None: no cut) and greedy; a bad value
        raises ``ConfigError`` and changes nothing."""
        unknown = set(settings) - {"length", "keep", "beam", *Sampling.__dataclass_fields__}
        if unknown:
            raise ConfigError(f"no setting named {', '.join(sorted(unknown))}")
        length = settings.pop("length", self.length)
        keep = settings.pop("keep", self.keep)
        beam = settings.pop("beam", self.beam)
        if length < 1:
            raise SettingError("length", f"must be at least 1, got {length}")
        if beam is not None:
            check_beam(beam)
        self.sampling = replace(self.sampling, **settings)
        self.length, self.keep, self.beam = length, keep, beam

    def reseed(self, seed: int | None) -> None:
        """Start the random draws again from ``seed`` (None: a fresh random state)."""
        if seed is None:
            self.generator.seed()
        elif not -2**63 <= seed < 2**64:
            raise ConfigError(f"seed must be between -2**63 and 2**64 - 1, got {seed}")
        else:
            self.generator.manual_seed(seed)
        self.seed = seed

    def reset(self) -> None:
        """Forget where the last turn ended: the next turn starts from a zero state."""
        self._end = None

    @property
    def continues(self) -> bool:
        """Whether the next turn carries on from the end of the last one."""
        return self.keep and self._end is not None

    def settings(self) -> dict[str, Any]:
        return dict(length=self.length, **vars(self.sampling), beam=self.beam,
                    seed=self.seed, keep=self.keep)

    def turn(self, prime: str, halt: Callable[[], bool] | None = None) -> Iterator[str]:
        """The new characters after ``prime``, yielded as they are drawn.

        An empty prime carries on from the last turn's end when ``continues``, and
        otherwise starts from ``default_prime``. The prime is checked here, before the
        first character: characters outside the vocabulary raise ``DataError``.
        ``halt``, asked before each step of a beam search: True ends it there, with the
        likeliest continuation kept so far (a drawn turn ends where its reader stops)."""
        if not prime and not self.continues:
            prime = default_prime(self.vocab)
        ids = torch.as_tensor(self.vocab.encode(prime, what="the prime text").astype(
            "int64"), device=self.device)
        end = self._end if self.continues else None
        if self.beam is not None:
            return self._searched(ids, end, halt)
        return self._turn(ids, end, self.length, self.sampling)

    @torch.no_grad()
    def _searched(self, ids: torch.Tensor, end: tuple[list, torch.Tensor] | None,
                  halt: Callable[[], bool] | None) -> Iterator[str]:
        """A turn of ``beam_search``: the likeliest continuation, decided whole, then
        yielded; the state after it is where the next turn carries on."""
        states = None
        if end is not None:
            states, last = end
            ids = torch.cat([last, ids])
        (found,) = _beam_search(self.model, self.stepper, self.vocab, ids, states,
                                self.length, self.beam, 1, self.stop, halt)
        new = torch.as_tensor(self.vocab.encode(found.text, what="text").astype("int64"),
                              device=self.device)
        self._end = _warm(self.model, self.stepper, torch.cat([ids, new]).unsqueeze(0),
                          states)
        yield from found.text

    @torch.no_grad()
    def _turn(self, ids: torch.Tensor, end: tuple[list, torch.Tensor] | None, length: int,
              sampling: Sampling) -> Iterator[str]:
        if end is None:
            states = None
        else:   # the last character of the last turn is read first, then the prime
            states, last = end
            ids = torch.cat([last, ids])
        states, idx = _warm(self.model, self.stepper, ids.unsqueeze(0), states)
        for _ in range(length):
            logits, states = self.stepper.step(idx, states)
            idx = sampling.choose(logits, self.generator)         # (1,)
            self._end = (states, idx)                            # one store: never half-set
            yield self.vocab.chars[int(idx)]


def _steps(model: CharRNN, vocab: Vocab, length: int, prime: str | None, num_samples: int,
           seed: int | None, sampling: Sampling) -> Iterator[torch.Tensor]:
    """Check the prime, seed a generator, and return the iterator of drawn ids (B,)."""
    prime_ids = _prime_ids(model, vocab, prime)
    generator = torch.Generator(device=prime_ids.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return _draw(model, length, prime_ids, num_samples, sampling, generator)


def _prime_ids(model: CharRNN, vocab: Vocab, prime: str | None) -> torch.Tensor:
    """The ids (T,) of ``prime`` (``default_prime`` when None) on the model's device; a
    ``DataError`` for an empty prime or characters outside the vocabulary."""
    if prime is not None and not prime:
        raise DataError("the prime text is empty; leave --prime out or give some text")
    ids = vocab.encode(default_prime(vocab) if prime is None else prime,
                       what="the prime text")
    return torch.as_tensor(ids.astype("int64"), device=next(model.parameters()).device)


@contextmanager
def _evaluating(model: CharRNN):
    """The model in eval mode (no dropout) inside, and as it was after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def _draw(model: CharRNN, length: int, prime_ids: torch.Tensor, num_samples: int,
          sampling: Sampling, generator: torch.Generator) -> Iterator[torch.Tensor]:
    with _evaluating(model):
        stepper = Stepper(model)
        batch = prime_ids.unsqueeze(0).expand(num_samples, -1)   # (T,) -> (B, T)
        states, idx = _warm(model, stepper, batch, None)
        for _ in range(length):
            logits, states = stepper.step(idx, states)
            idx = sampling.choose(logits, generator)
            yield idx


def _warm(model: CharRNN, stepper: Stepper, batch: torch.Tensor,
          states: list | None) -> tuple[list, torch.Tensor]:
    """The per-layer states after reading all of ``batch`` (B, T) but its last column,
    starting from ``states`` (None: zero), and that last column (B,): the input of the
    first step. All but the last character go through the module in one call."""
    if batch.size(1) > 1:
        hidden = None if states is None else stepper.join(states)
        _, hidden = model(batch[:, :-1], hidden)
        states = stepper.split(hidden)
    elif states is None:
        states = zero_states(model, batch.size(0), batch.device)
    return states, batch[:, -1]


@dataclass(frozen=True)
class Beam:
    """One continuation found by ``beam_search``: its text and its log-probability
    under the model (nats, the sum over its characters of log p(character | all
    before it))."""
    text: str
    nats: float


@torch.no_grad()
def beam_search(model: CharRNN, vocab: Vocab, length: int, *, prime: str | None = None,
                beam: int = 8, results: int = 1, stop: str | None = None) -> list[Beam]:
    """The ``results`` likeliest continuations of ``length`` characters that a search
    keeping the ``beam`` likeliest at each step finds, likeliest first; each cut where
    it first spells ``stop`` (``until_stop``), its log-probability that of what is left,
    and each text once (two cut the same way are one; then fewer may come back).

    At each step every kept continuation is extended by each of its ``beam`` likeliest
    next characters, and the ``beam`` likeliest of those (by their whole log-probability)
    are kept. ``beam=1`` is greedy decoding exactly: the argmax at each step. All kept
    continuations step as one batch, so a beam of B costs less than B samples (beam 8:
    about 3.5 times one, BENCHMARKS.md)."""
    check_beam(beam)
    if not 1 <= results <= beam:
        raise SettingError("beam", f"must keep at least the {results} continuation(s) asked "
                           f"for, got {beam}")
    ids = _prime_ids(model, vocab, prime)
    with _evaluating(model):
        return _beam_search(model, Stepper(model), vocab, ids, None, length, beam, results,
                            stop)


def check_beam(beam: int) -> None:
    """A one-line ``SettingError`` for a beam out of 1 to ``MAX_BEAM``."""
    if beam < 1:
        raise SettingError("beam", f"must be at least 1, got {beam}")
    if beam > MAX_BEAM:
        raise SettingError("beam", f"must be at most {MAX_BEAM:,} (each kept continuation is "
                           f"a row of every step), got {beam}")


def _beam_search(model: CharRNN, stepper: Stepper, vocab: Vocab, ids: torch.Tensor,
                 start: list | None, length: int, beam: int, results: int,
                 stop: str | None, halt: Callable[[], bool] | None = None) -> list[Beam]:
    """``beam_search`` after reading ``ids`` (T,) from the states ``start`` (None: zero);
    ``halt`` (see ``Session.turn``) may end it before ``length`` steps."""
    device = ids.device
    states, idx = _warm(model, stepper, ids.unsqueeze(0), start)   # one continuation, (1,)
    scores = torch.zeros(1, dtype=torch.float64, device=device)    # its log-probability
    # Per step, each kept continuation's parent among the step before's, its character
    # and that character's log-probability: the texts are read back once, at the end.
    parents, chars, logps = [], [], []
    for _ in range(length):
        if halt is not None and halt():
            break
        logits, states = stepper.step(idx, states)                 # (K, V)
        logp = torch.log_softmax(logits.double(), dim=-1)          # (K, V)
        if beam == 1:   # greedy: the argmax of the logits themselves, ties as greedy breaks them
            best, parent = logits.argmax(dim=-1), torch.zeros(1, dtype=torch.long,
                                                              device=device)
        else:
            top = logp.topk(min(beam, logp.size(1)), dim=-1)      # each one's likeliest
            total = (scores.unsqueeze(1) + top.values).flatten()  # (K * k,)
            keep = total.topk(min(beam, total.numel())).indices
            parent, best = keep // top.indices.size(1), top.indices.flatten()[keep]
        step_logp = logp[parent, best]
        scores = scores[parent] + step_logp
        parents.append(parent)
        chars.append(best)
        logps.append(step_logp)
        states = [tuple(t[parent] for t in s) if isinstance(s, tuple) else s[parent]
                  for s in states]
        idx = best
    if not parents:
        return [Beam("", 0.0)]
    # As lists, step by step (the first steps keep fewer than ``beam``).
    back, drawn = [p.tolist() for p in parents], [c.tolist() for c in chars]
    drawn_logp = [lp.tolist() for lp in logps]
    found: dict[str, float] = {}       # each text once (cut at ``stop``, two may meet)
    for k in scores.argsort(descending=True).tolist():
        ids_k, logps_k = [], []
        for t in range(len(parents) - 1, -1, -1):                   # read back from the end
            ids_k.append(drawn[t][k])
            logps_k.append(drawn_logp[t][k])
            k = back[t][k]
        text = "".join(until_stop((vocab.chars[i] for i in reversed(ids_k)), stop))
        found.setdefault(text, sum(logps_k[::-1][:len(text)]))
        if len(found) == results:
            break
    ranked = sorted(found.items(), key=lambda item: item[1], reverse=True)
    return [Beam(text, nats) for text, nats in ranked[:results]]


@torch.no_grad()
def nats_of(model: CharRNN, vocab: Vocab, prime: str | None, text: str) -> float:
    """The log-probability (nats) the model gives ``text`` after ``prime``
    (``default_prime`` when None), read from a zero state: the sum over the characters of
    ``text`` of log p(character | everything before it)."""
    prime_ids = _prime_ids(model, vocab, prime)
    text_ids = torch.as_tensor(vocab.encode(text, what="the text").astype("int64"),
                               device=prime_ids.device)
    ids = torch.cat([prime_ids, text_ids])
    with _evaluating(model):
        logits, _ = model(ids[:-1].unsqueeze(0))                       # (1, T - 1, V)
    logp = torch.log_softmax(logits[0].double(), dim=-1)              # (T - 1, V)
    return float(logp[len(prime_ids) - 1:].gather(1, text_ids.unsqueeze(1)).sum())


def pick_threads(model: CharRNN, batch: int, requested: int = 0) -> threads.Choice:
    """Set the thread count to draw ``batch`` samples at a time with: ``requested``
    (0: the fastest for a few sampling steps of this model, see ``charrnn.threads``)."""
    device = next(model.parameters()).device
    stepper, idx = Stepper(model), torch.zeros(batch, dtype=torch.long, device=device)
    states = zero_states(model, batch, device)

    @torch.no_grad()
    def work() -> None:
        for _ in range(8):
            stepper.step(idx, states)
    return threads.pick(requested, device.type, work)


def zero_states(model: CharRNN, batch: int, device) -> list:
    c = model.config
    h = torch.zeros(batch, c.proj_size or c.hidden_size, device=device)
    if c.cell == "lstm":
        return [(h, torch.zeros(batch, c.hidden_size, device=device))
                for _ in range(c.num_layers)]
    return [h for _ in range(c.num_layers)]
