"""Scoring any text with a trained model: ``score_text(checkpoint, text) -> Score``.

The number is the one training reports for its validation text, computed by the same
function (``train.evaluate``): one deterministic pass over the whole text carrying the
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.data import Vocab, load_text
from charrnn.errors import DataError
from charrnn.train import LN2, evaluate



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
            shown = " ".join(repr(ch) for ch in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise DataError(f"{what} has {count:,} character(s) the model's vocabulary lacks "
                            f"({len(unknown)} distinct: {shown}{more}); pass --skip-unknown "
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
