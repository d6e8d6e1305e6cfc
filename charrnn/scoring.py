"""Scoring any text with a trained model: ``score_text(checkpoint, text) -> Score``.

The number is the one training reports for its validation text, computed by the same
function (``nats_sum``, below): a deterministic pass over the whole text, the first
character given as context and every later one predicted from the characters before it,
run as up to 64 streams side by side (``stream_plan``). So scoring a run's own held-out
text gives back its ``val_loss``. Loss is in nats per character; bits = nats / ln 2;
perplexity = e^nats. The text is read in bounded memory: its ids are written to a cache
folder and scored memory-mapped.

Characters the model's vocabulary lacks cannot be fed to it: they are counted, and
either refused (the default) or left out of the text before scoring.

``score_text(..., outputs=per_char.Outputs(...))`` also writes each character's own
log-probability, rank and top guesses, in text order (``charrnn eval --per-char FILE``,
``--html FILE``; see ``charrnn.per_char``).

    charrnn eval runs/<run>/best.pt held_out.txt --json
"""

from __future__ import annotations

import hashlib
import math
import mmap
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charrnn import corpus, files, per_char
from charrnn import threads as cpu_threads
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.data import Vocab, list_chars, text_pieces
from charrnn.errors import DataError
from charrnn.model import CharRNN
from charrnn.progress import bar as progress_bar

LN2 = math.log(2.0)  # nats per bit

# How a text is scored: cut into at most STREAMS contiguous streams of at least
# STREAM_CHARS characters each, scored side by side (a batch of streams, each carrying
# its own hidden state), so that a long text costs batched matrix products rather than
# one character per step. Every stream but the first reads the CONTEXT_CHARS characters
# before its own first (unscored) from a zero state, so that it starts with the context
# a single pass would have: the number stays that of one pass over the whole text
# (within 1e-6 nats per character on tiny-shakespeare's held-out 10%). A text shorter than
# 2 * STREAM_CHARS is one stream, exactly as before.
STREAMS = 64
STREAM_CHARS = 4096
CONTEXT_CHARS = 256
RELEASE_EVERY = 256      # forward calls between two releases of a memory-mapped text's pages
CHUNK_LOGITS = 1 << 23   # logits per forward call (32 MB of float32), at most
CHUNK_STEPS = 64         # time steps per forward call, at most: a batch of streams'
                         # gates stay in cache (2 CPU cores: about 1.3x 1024's speed)


# What ``nats_sum`` hands each forward call's log-probabilities to (see there).
PerCharSink = Callable[[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor], None]


class Stopped(Exception):
    """A pass given up because ``stop()`` said so."""


def stream_plan(n: int, max_chars: int | None = None) -> np.ndarray:
    """The streams that score ``ids[1:n]``: an (S, 2) array of [start, end) target
    positions. Without ``max_chars`` (or with at least n - 1) they tile the text;
    otherwise S streams of ``max_chars // S`` targets each, spread evenly over it."""
    targets = n - 1
    scored = targets if not max_chars or max_chars >= targets else max_chars
    count = int(np.clip(scored // STREAM_CHARS, 1, STREAMS))
    starts = 1 + np.arange(count, dtype=np.int64) * targets // count
    if scored == targets:
        ends = np.append(starts[1:], n)
    else:
        ends = starts + scored // count
    return np.stack([starts, ends], axis=1)


@torch.no_grad()
def nats_sum(model: CharRNN, ids: np.ndarray, device: torch.device, *,
             max_chars: int | None = None, part: tuple[int, int] = (0, 1),
             on_chunk: Callable[[int], None] | None = None,
             stop: Callable[[], bool] | None = None,
             per_char: PerCharSink | None = None) -> tuple[float, int]:
    """(total nats, characters scored) of predicting the targets of ``stream_plan``
    from every character before them, in float32. ``part=(k, n)``: only the streams
    k, k + n, ... (one process's share). ``on_chunk`` is told how many characters each
    forward call scored (for a progress bar); ``stop()`` is asked before each, and a
    True gives up the pass (``Stopped``).

    ``per_char`` (``charrnn.per_char``) is handed each forward call's log-probabilities:
    ``per_char(at, scored, logp, lp)`` with the (S, T) target positions, the (S, T) mask
    of those scored, the float32 log_softmax (S, T, V) and its (S, T) values at the
    targets. The total is then the float64 sum of exactly those values at the scored
    targets (within float rounding of the cross entropy computed without it), so that a
    file of them adds up to it; without ``per_char`` nothing of this is computed."""
    plan = stream_plan(len(ids), max_chars)[part[0]::part[1]]
    if len(plan) == 0:
        return 0.0, 0
    was_training = model.training
    model.eval()
    try:
        hidden = _context(model, ids, plan[:, 0], device)
        starts, ends = plan[:, 0], plan[:, 1]
        length = int((ends - starts).max())
        steps = _chunk_steps(len(plan), model.vocab_size)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for t in range(0, length, steps):
            if stop is not None and stop():
                raise Stopped
            at = starts[:, None] + t + np.arange(min(steps, length - t))      # (S, T) targets
            scored = at < ends[:, None]
            x = torch.from_numpy(ids[at - 1].astype(np.int64)).to(device)     # (S, T)
            y = ids[np.minimum(at, len(ids) - 1)].astype(np.int64)
            y = torch.from_numpy(np.where(scored, y, -100)).to(device)        # (S, T)
            logits, hidden = model(x, hidden)                                 # (S, T, V)
            if per_char is None:
                total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(),
                                         ignore_index=-100, reduction="sum")
            else:
                logp = logits.float().log_softmax(dim=-1)                     # (S, T, V)
                lp = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0].clamp(max=0.0)
                mask = torch.from_numpy(scored).to(device)
                total -= torch.where(mask, lp, 0.0).double().sum()
                per_char(at, scored, logp, lp)
            if on_chunk is not None:
                on_chunk(int(scored.sum()))
            if (t // steps) % RELEASE_EVERY == RELEASE_EVERY - 1:
                _release(ids)
    finally:
        model.train(was_training)
        _release(ids)
    return total.item(), int((ends - starts).sum())


def _chunk_steps(streams: int, vocab_size: int) -> int:
    """Time steps per forward call of a pass over ``streams`` streams."""
    return max(1, min(CHUNK_STEPS, CHUNK_LOGITS // (streams * vocab_size)))


def _release(ids: np.ndarray) -> None:
    """Drop the pages of memory-mapped ids already read from this process's resident
    memory (the kernel keeps them cached), so that a pass over a text larger than memory
    keeps a flat footprint."""
    mapped = getattr(ids, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def _context(model: CharRNN, ids: np.ndarray, starts: np.ndarray, device: torch.device):
    """The hidden state of each stream before its first target: a zero state for a
    stream that starts the text, else the state after reading the CONTEXT_CHARS
    characters before it."""
    later = starts > CONTEXT_CHARS
    if not later.any():
        return None
    at = starts[later, None] - 1 - CONTEXT_CHARS + np.arange(CONTEXT_CHARS)   # (S', C)
    _, hidden = model(torch.from_numpy(ids[at].astype(np.int64)).to(device))
    if later.all():
        return hidden
    index = torch.from_numpy(np.cumsum(later) - 1).to(device)  # stream -> its row in S'
    keep = torch.from_numpy(later).to(device)[None, :, None]

    def spread(h: torch.Tensor) -> torch.Tensor:  # (L, S', H) -> (L, S, H), zeros elsewhere
        return torch.where(keep, h[:, index], torch.zeros((), dtype=h.dtype, device=device))
    return tuple(map(spread, hidden)) if isinstance(hidden, tuple) else spread(hidden)


def evaluate(model: CharRNN, ids: np.ndarray, device: torch.device, *,
             max_chars: int | None = None,
             on_chunk: Callable[[int], None] | None = None) -> float:
    """Mean nats per character of the model on ``ids`` (see ``nats_sum``)."""
    total, count = nats_sum(model, ids, device, max_chars=max_chars, on_chunk=on_chunk)
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


def score_text(checkpoint: str | Path, text_path: str | Path | list[Path], *,
               skip_unknown: bool = False, max_chars: int | None = None,
               cache_dir: str | Path | None = None, device: str | torch.device = "cpu",
               progress: bool = False, outputs: per_char.Outputs | None = None,
               threads: int = 0) -> Score:
    """Nats, bits and perplexity per character of the model in ``checkpoint`` on the
    text at ``text_path`` (or the files of a list, read as one text as training reads
    them; see the module docstring), in bounded memory: the text's ids are written to
    ``cache_dir`` (by default the corpus cache beside the checkpoint's run, else a
    temporary folder) and scored memory-mapped. ``outputs``: the per-character records
    and the HTML page to write too (``charrnn.per_char``); their logprobs add up to
    minus the total. ``threads``: the CPU threads to score with (0: the fastest for a
    forward call of this model, ``charrnn.threads``)."""
    t0 = time.time()
    checkpoint = Path(checkpoint)
    paths = [Path(text_path)] if isinstance(text_path, (str, Path)) else list(text_path)
    model, vocab = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    if cache_dir is None and files.is_run(checkpoint.parent):
        cache_dir = checkpoint.parent.parent / ".cache"
    with (nullcontext(cache_dir) if cache_dir is not None else
          tempfile.TemporaryDirectory(prefix="charrnn-eval-")) as cache, \
            (per_char.spill(outputs, Path(cache)) if outputs is not None else
             nullcontext()) as spill, \
            corpus.ReadingBar(progress, paths) as reading:
        texts = corpus.cached_texts(paths, cache, what="text to score", on_read=reading.update)
        unknown = "".join(sorted(set(texts.vocab) - set(vocab.chars)))
        if unknown and not skip_unknown:
            count = texts.chars - sum(map(len, _known_pieces(texts, vocab, unknown)))
            raise DataError(f"text {texts.label} has {count:,} character(s) the model's "
                            f"vocabulary lacks ({len(unknown)} distinct: "
                            f"{list_chars(unknown, 10)}); pass --skip-unknown to score the "
                            "text without them")
        ids = (_known_ids(texts, vocab, unknown, Path(cache)) if unknown else
               corpus.cached_texts_ids(texts, vocab, cache, what="text to score",
                                       on_read=reading.update))
        if len(ids) < 2:
            raise DataError(f"text {texts.label} has {len(ids)} usable character(s); scoring "
                            "needs at least 2 (the first is only context)")
        device = torch.device(device)
        model.to(device)
        plan = stream_plan(len(ids), max_chars)
        _pick_threads(model, len(plan), device, threads)
        recorder = None if outputs is None else per_char.Recorder(
            plan, ids, outputs.top, len(vocab), spill)
        try:
            with progress_bar(progress, total=int(np.diff(plan).sum()), unit="char",
                              unit_scale=True, leave=False, delay=1.0, desc="scoring") as bar:
                total, scored = nats_sum(model, ids, device, max_chars=max_chars,
                                         on_chunk=bar.update, per_char=recorder)
            kept, first = len(ids), vocab.chars[int(ids[0])]
            nats = total / scored
            if recorder is not None:
                title, meta = per_char.page_meta(
                    checkpoint=str(checkpoint), text=texts.label, scored=scored, nats=nats,
                    skipped=texts.chars - kept, sampled=scored < kept - 1)
                per_char.write(outputs, recorder, vocab, first=first, title=title, meta=meta,
                               progress=progress)
        finally:
            if recorder is not None:
                recorder.close()
                recorder.ids = None
        del ids    # the memory map, before a temporary folder goes
    return Score(checkpoint=str(checkpoint), text=texts.label, characters=texts.chars,
                 scored=scored, nats_per_char=nats, bits_per_char=nats / LN2,
                 perplexity=math.exp(nats), unknown_count=texts.chars - kept,
                 unknown_chars=unknown, skipped_unknown=bool(unknown),
                 seconds=round(time.time() - t0, 3))


def _pick_threads(model: CharRNN, streams: int, device: torch.device, requested: int) -> None:
    """Set the thread count to score with: a forward call of the shape a pass makes,
    timed with each count (``charrnn.threads``), unless ``requested`` fixes it."""
    x = torch.zeros(streams, _chunk_steps(streams, model.vocab_size), dtype=torch.long,
                    device=device)

    @torch.no_grad()
    def work() -> None:
        model(x)
    cpu_threads.pick(requested, device.type, work)


def _known_pieces(texts: corpus.Texts, vocab: Vocab, unknown: str) -> Iterator[np.ndarray]:
    """The ids of ``texts`` joined, a piece at a time, without the characters of
    ``unknown``."""
    drop = dict.fromkeys(map(ord, unknown))
    for k, path in enumerate(texts.paths):
        if k:
            yield vocab.encode(corpus.SEPARATOR.translate(drop))
        for piece in text_pieces(path, what="text to score"):
            text = piece.raw.decode("ascii") if piece.text is None else piece.text
            yield vocab.encode(text.translate(drop), what=f"text {path}")


def _known_ids(texts: corpus.Texts, vocab: Vocab, unknown: str, cache: Path) -> np.ndarray:
    """The ids of the text without the characters of ``unknown``, memory-mapped from
    a file in ``cache`` (written there first when missing)."""
    key = hashlib.sha256(f"{vocab.chars}\0{unknown}".encode("utf-8", "surrogatepass"))
    target = cache / f"{texts.sha256[:16]}-{key.hexdigest()[:12]}-known.ids"
    if not target.exists():
        with files.atomic_write(target, what="the corpus cache ",
                                fix="give a writable folder with --cache-dir") as out:
            for ids in _known_pieces(texts, vocab, unknown):
                out.write(ids.tobytes())
    if target.stat().st_size == 0:
        return np.zeros(0, dtype=vocab.dtype)
    return np.memmap(target, dtype=vocab.dtype, mode="r")
