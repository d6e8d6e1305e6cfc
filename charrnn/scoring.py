"""Scoring any text with a trained model: ``score_text(checkpoint, text) -> Score``.

The number is the one training reports for its validation text, computed by the same
function (``evaluate``, below): one deterministic pass over the whole text carrying the
hidden state, the first character given as context and every later one predicted from
all the characters before it. So scoring a run's own held-out text gives back its
``val_loss``. Loss is in nats per character; bits = nats / ln 2; perplexity = e^nats.

Characters the model's vocabulary lacks cannot be fed to it: they are counted, and
either refused (the default) or left out of the text before scoring.

    charrnn eval runs/<run>/best.pt held_out.txt --json
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.data import Vocab, list_chars, load_text
from charrnn.errors import DataError
from charrnn.model import CharRNN

LN2 = math.log(2.0)  # nats per bit
EVAL_CHUNK = 1024    # time steps per forward call


@torch.no_grad()
def evaluate(model: CharRNN, ids: np.ndarray, device: torch.device,
             on_chunk: Callable[[int], None] | None = None) -> float:
    """Mean nats per character of predicting ``ids[1:]`` from ``ids[:-1]`` in one
    deterministic pass that carries the hidden state across chunks (float32).
    ``on_chunk`` is told how many characters each chunk scored (for a progress bar)."""
    was_training = model.training
    model.eval()
    total, count, hidden = 0.0, 0, None
    for start in range(0, len(ids) - 1, EVAL_CHUNK):
        chunk = torch.from_numpy(ids[start:start + EVAL_CHUNK + 1].astype(np.int64))
        chunk = chunk.to(device).unsqueeze(0)                        # (1, T' + 1)
        x, y = chunk[:, :-1], chunk[:, 1:]                           # (1, T'), T' <= T
        logits, hidden = model(x, hidden)                            # (1, T, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(),
                                 reduction="sum").item()
        count += y.numel()
        if on_chunk is not None:
            on_chunk(y.numel())
    model.train(was_training)
    return total / count


@dataclass
class Score:
    checkpoint: str
    text: str
    characters: int         # characters in the file
    scored: int             # characters predicted: those kept, less the first
    nats_per_char: float
    bits_per_char: float
    perplexity: float
    unknown_count: int      # occurrences of characters outside the vocabulary
    unknown_chars: str      # the distinct ones, in code-point order
    skipped_unknown: bool   # True: they were left out; False: there were none
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def known_ids(text: str, vocab: Vocab, *, skip_unknown: bool, what: str
              ) -> tuple[np.ndarray, str, int]:
    """(ids, distinct unknown characters, how many times they occur): the text's ids
    with unknown characters left out when ``skip_unknown``, else a ``DataError``."""
    unknown = vocab.unknown(text)
    count = 0
    if unknown:
        kept = text.translate(dict.fromkeys(map(ord, unknown)))
        count = len(text) - len(kept)
        if not skip_unknown:
            raise DataError(f"{what} has {count:,} character(s) the model's vocabulary lacks "
                            f"({len(unknown)} distinct: {list_chars(unknown, 10)}); pass "
                            "--skip-unknown "
                            "to score the text without them")
        text = kept
    return vocab.encode(text, what=what), unknown, count


def score_text(checkpoint: str | Path, text_path: str | Path, *, skip_unknown: bool = False,
               device: str | torch.device = "cpu", progress: bool = False) -> Score:
    """Nats, bits and perplexity per character of the model in ``checkpoint`` on the
    text at ``text_path``; see the module docstring."""
    t0 = time.time()
    model, vocab = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    text = load_text(text_path, what="text to score")
    ids, unknown, count = known_ids(text, vocab, skip_unknown=skip_unknown,
                                    what=f"text {text_path}")
    if len(ids) < 2:
        raise DataError(f"text {text_path} has {len(ids)} usable character(s); scoring needs "
                        "at least 2 (the first is only context)")
    device = torch.device(device)
    model.to(device)
    with tqdm(total=len(ids) - 1, disable=not progress, unit="char", unit_scale=True,
              leave=False, delay=1.0, desc="scoring") as bar:
        nats = evaluate(model, ids, device, on_chunk=bar.update)
    return Score(checkpoint=str(checkpoint), text=str(text_path), characters=len(text),
                 scored=len(ids) - 1, nats_per_char=nats, bits_per_char=nats / LN2,
                 perplexity=math.exp(nats), unknown_count=count, unknown_chars=unknown,
                 skipped_unknown=bool(unknown), seconds=round(time.time() - t0, 3))
