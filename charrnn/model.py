"""The character-level language model: embedding -> nn.RNN/LSTM/GRU -> linear head.

    ids (B, T) -> embedding (B, T, E) -> recurrent stack (B, T, D*H_out)
               -> dropout -> linear (B, T, V) logits over the next character

``H_out`` is ``proj_size`` for a projected LSTM and ``hidden_size`` otherwise; D is 2
for a bidirectional stack (which ``inspect`` explains but ``train`` refuses), else 1. The
recurrent module is PyTorch's own (batch-first), so its parameters keep PyTorch's names
(``rnn.weight_ih_l0`` ...) and ``charrnn inspect`` can explain them one by one.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from charrnn.config import ModelConfig

# torch says, at every forward pass of a projected LSTM, that oneDNN has no kernel for it
# and its own is used: a fact about speed (BENCHMARKS.md), not something to act on.
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN",
                        category=UserWarning)

# LSTM: (h, c) with h (D*num_layers, B, H_out) and c (D*num_layers, B, hidden_size);
# RNN/GRU: h (D*num_layers, B, hidden_size).
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def make_rnn(config: ModelConfig, *, batch_first: bool = True) -> nn.RNNBase:
    """The bare ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` that ``config`` describes."""
    common = dict(input_size=config.embedding_dim, hidden_size=config.hidden_size,
                  num_layers=config.num_layers, batch_first=batch_first,
                  dropout=config.dropout if config.num_layers > 1 else 0.0,
                  bidirectional=config.bidirectional)
    if config.cell == "lstm":
        return nn.LSTM(proj_size=config.proj_size, **common)
    if config.cell == "gru":
        return nn.GRU(**common)
    return nn.RNN(nonlinearity=config.nonlinearity, **common)


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        directions = 2 if config.bidirectional else 1
        head_in = (config.proj_size or config.hidden_size) * directions
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim)
        self.rnn = make_rnn(config)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(head_in, vocab_size)
        if config.tie_weights:
            # Both are (V, E); ModelConfig checked that E equals the head's input size.
            self.head.weight = self.embedding.weight

    def forward(self, idx: torch.Tensor, hidden: Hidden | None = None
                ) -> tuple[torch.Tensor, Hidden]:
        x = self.embedding(idx)                  # (B, T) -> (B, T, E)
        out, hidden = self.rnn(x, hidden)        # (B, T, E) -> (B, T, D*H_out)
        logits = self.head(self.drop(out))       # (B, T, D*H_out) -> (B, T, V)
        return logits, hidden

    def num_parameters(self) -> int:
        """Distinct parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())


def parameter_count(vocab_size: int, c: ModelConfig) -> int:
    """What ``CharRNN(vocab_size, c).num_parameters()`` will be, without building it."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[c.cell]
    directions = 2 if c.bidirectional else 1
    h_out = c.proj_size or c.hidden_size
    total = vocab_size * c.embedding_dim                                # embedding
    for layer in range(c.num_layers):
        inputs = c.embedding_dim if layer == 0 else h_out * directions
        per_direction = gates * c.hidden_size * (inputs + h_out + 2)     # W_ih, W_hh, biases
        per_direction += h_out * c.hidden_size if c.proj_size else 0     # W_hr
        total += directions * per_direction
    total += vocab_size * (h_out * directions + 1)                      # head
    return total - (vocab_size * c.embedding_dim if c.tie_weights else 0)


def training_bytes(vocab_size: int, c: ModelConfig, batch_size: int, seq_length: int) -> int:
    """Roughly the memory a training step takes: float32 weights, gradients and two
    optimiser moments, and the activations kept for backward (each layer's gates and
    states, the logits and their gradient) for every character of the batch."""
    directions = 2 if c.bidirectional else 1
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[c.cell]
    per_char = (c.embedding_dim + c.num_layers * directions * (gates + 3) * c.hidden_size
                + 3 * vocab_size)
    return 4 * (4 * parameter_count(vocab_size, c) + batch_size * seq_length * per_char)


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph between windows while keeping the state's values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()
