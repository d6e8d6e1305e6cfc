"""Text generation: warm the hidden state on a prime, then one character per step.

The prime runs through the trained ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` once. After
that, calling the whole module for every character costs more in overhead than in
arithmetic, so ``Stepper`` advances the state with torch's fused single-step cell
functions (``torch.lstm_cell`` ...) on the very same weight tensors (tests check it
against the module, step by step, for every kind of cell). ``generate`` returns the text
of each sample, ``stream`` yields one sample's characters as they are drawn; neither
prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from charrnn.data import Vocab
from charrnn.errors import DataError
from charrnn.model import CharRNN, Hidden


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


def choose(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, greedy: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next ids (B,) from logits (B, V): argmax, or a draw from the tempered,
    top-k and nucleus (top-p) truncated distribution."""
    if greedy:
        return logits.argmax(dim=-1)
    # Shifted so that the largest is 0: a tiny temperature then sends the others to
    # -inf (never inf - inf), and the draw tends to the argmax as it should.
    logits = (logits.float() - logits.float().amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]          # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def default_prime(vocab: Vocab) -> str:
    """What generation starts from when the user gives no prime: a newline (the start
    of a line) if the text had one, else its most common-looking first character."""
    return "\n" if "\n" in vocab.chars else (" " if " " in vocab.chars else vocab.chars[0])


def generate(model: CharRNN, vocab: Vocab, length: int, *, prime: str | None = None,
             num_samples: int = 1, seed: int | None = None, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False) -> list[str]:
    """The ``length`` new characters of each of ``num_samples`` samples, drawn together
    as one batch (the prime is not repeated); ``choose`` says how each is drawn."""
    steps = list(_steps(model, vocab, length, prime, num_samples, seed, dict(
        temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)))
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
    steps = _steps(model, vocab, length, prime, 1, seed, dict(
        temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy))
    return (vocab.chars[int(idx)] for idx in steps)


def _steps(model: CharRNN, vocab: Vocab, length: int, prime: str | None, num_samples: int,
           seed: int | None, choice: dict[str, Any]) -> Iterator[torch.Tensor]:
    """Check the prime, seed a generator, and return the iterator of drawn ids (B,)."""
    if prime is not None and not prime:
        raise DataError("the prime text is empty; leave --prime out or give some text")
    prime = prime if prime is not None else default_prime(vocab)
    ids = vocab.encode(prime, what="the prime text")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    prime_ids = torch.as_tensor(ids.astype("int64"), device=device)
    return _draw(model, length, prime_ids, num_samples, dict(choice, generator=generator))


@torch.no_grad()
def _draw(model: CharRNN, length: int, prime_ids: torch.Tensor, num_samples: int,
          choice: dict[str, Any]) -> Iterator[torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        stepper = Stepper(model)
        batch = prime_ids.unsqueeze(0).expand(num_samples, -1)   # (T,) -> (B, T)
        if batch.size(1) > 1:
            _, hidden = model(batch[:, :-1])                     # warm up on all but the last
            states = stepper.split(hidden)
        else:
            states = zero_states(model, num_samples, prime_ids.device)
        idx = batch[:, -1]                                       # (B,)
        for _ in range(length):
            logits, states = stepper.step(idx, states)
            idx = choose(logits, **choice)
            yield idx
    finally:
        model.train(was_training)


def zero_states(model: CharRNN, batch: int, device) -> list:
    c = model.config
    h = torch.zeros(batch, c.proj_size or c.hidden_size, device=device)
    if c.cell == "lstm":
        return [(h, torch.zeros(batch, c.hidden_size, device=device))
                for _ in range(c.num_layers)]
    return [h for _ in range(c.num_layers)]
