"""Per-character scores of ``charrnn eval``: ``--per-char FILE`` and ``--html FILE``.

For every scored position of the text, in text order, one record:

    pos      the character's position in the text scored (0-based; with --skip-unknown,
             in the text without the characters left out). Position 0 is context only
             and never scored; with --max-chars only the scored stretches are written.
    char     the character, and ``id`` its id in the model's vocabulary
    logprob  ln p(char | every character before it), natural log, <= 0: the float32
             log_softmax of the model's logits at the character (written with ``repr``,
             so it reads back as exactly that number). The records' logprobs add up to
             minus the reported total, nats_per_char * scored.
    rank     1 + the number of characters the model found strictly likelier (1: its top
             guess). Characters tied with the true one share its rank, the best of the tie.
    top      the ``--top`` likeliest characters (5 by default) as [char, probability]
             pairs, likeliest first, ties in vocabulary order; probabilities rounded to
             6 significant digits.

A FILE whose name ends in ``.csv`` gets a CSV table with the columns pos, char, id,
logprob, rank, top (``top`` is the same JSON list, as a string); any other name JSON
Lines, one object a line; ``-`` writes JSON Lines to stdout. ``--html FILE`` draws the
text on backgrounds coloured by each character's surprisal (-logprob), on the scale of
``inspect --activations --html`` (``drawing.probability_rgb`` of p = e^logprob: green
expected, red surprising), with p, the surprisal, the rank and the top guesses on hover:
the first ``HTML_MAX_CHARS`` scored characters, since a browser cannot draw more.

The text is scored as up to 64 streams side by side (``scoring.stream_plan``), so the
records of a forward call belong to as many places in the text. Each stream's records go,
as fixed-size binary rows, to its own temporary file (in a hidden folder beside the
output, or in the corpus cache for ``-``); when the pass ends the files are read back one
after the other, in text order, a bounded number of rows at a time, and formatted. So the
memory used is bounded however long the text; the disk holds about 50 bytes a character
(with --top 5) until the end. Files are written whole or not at all (``atomic_write``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from charrnn import drawing, html_page
from charrnn.data import Vocab
from charrnn.errors import CharRNNError, ConfigError
from charrnn.files import atomic_write

TOP = 5                      # predictions per record by default (--top)
HTML_MAX_CHARS = 100_000     # scored characters drawn on the HTML page, at most
READ_ROWS = 1 << 15          # records read back from a stream's file at a time
COLUMNS = ("pos", "char", "id", "logprob", "rank", "top")
FIRST = "first character: context only, not scored"   # its hover text on the page
STDOUT = "-"


@dataclass
class Outputs:
    """What ``charrnn eval`` writes besides the score."""

    records: Path | None = None    # --per-char FILE (None: not asked for, or stdout)
    stdout: bool = False           # --per-char -
    html: Path | None = None       # --html FILE
    top: int = TOP                 # predictions per record

    @property
    def csv(self) -> bool:
        return self.records is not None and self.records.name.lower().endswith(".csv")

    def spill_folder(self, fallback: Path) -> Path:
        """Where the streams' temporary files go: beside the file written, else in
        ``fallback`` (the corpus cache)."""
        target = self.records or self.html
        return fallback if target is None else target.parent


def record_dtype(top: int) -> np.dtype:
    """One record as a fixed-size binary row (its position follows from its stream's)."""
    return np.dtype([("id", "<i4"), ("logprob", "<f4"), ("rank", "<i4"),
                     ("top_id", "<i4", (top,)), ("top_p", "<f4", (top,))])


class Recorder:
    """The ``per_char`` of ``scoring.nats_sum``: each forward call's records, appended
    to the file of the stream they belong to. ``chunks()`` then gives them back in text
    order."""

    def __init__(self, plan: np.ndarray, ids: np.ndarray, top: int, vocab_size: int,
                 folder: Path) -> None:
        self.plan = plan
        self.ids = ids
        self.top = min(top, vocab_size)
        self.dtype = record_dtype(self.top)
        self.paths = [folder / f"stream-{s:02d}.rec" for s in range(len(plan))]
        self.files: list[IO[bytes]] = []
        try:
            for path in self.paths:
                self.files.append(open(path, "wb"))
        except OSError:
            self.close()
            raise

    def __call__(self, at: np.ndarray, scored: np.ndarray, logp: torch.Tensor,
                 lp: torch.Tensor) -> None:
        rows = np.empty(scored.shape, self.dtype)                          # (S, T)
        rows["logprob"] = lp.cpu().numpy()
        rows["rank"] = ((logp > lp[..., None]).sum(dim=-1) + 1).cpu().numpy()
        rows["id"] = self.ids[np.minimum(at, len(self.ids) - 1)]
        k = self.top
        if k:
            values, order = torch.sort(logp, dim=-1, descending=True, stable=True)
            rows["top_id"] = order[..., :k].cpu().numpy()
            rows["top_p"] = values[..., :k].exp().cpu().numpy()
        for s, n in enumerate(scored.sum(axis=1).tolist()):   # a prefix of each row
            if n:
                self.files[s].write(rows[s, :n].tobytes())

    def close(self) -> None:
        for f in self.files:
            f.close()

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, records) in text order, at most READ_ROWS at a time."""
        self.close()
        for (start, end), path in zip(self.plan.tolist(), self.paths):
            done = 0
            with open(path, "rb") as f:
                while True:
                    rows = np.fromfile(f, self.dtype, count=READ_ROWS)
                    if not len(rows):
                        break
                    yield start + done + np.arange(len(rows)), rows
                    done += len(rows)
            if done != end - start:    # pragma: no cover - a bug, not a user's error
                raise CharRNNError(f"per-character records of stream {path.name}: {done} "
                                   f"written, {end - start} expected")


@contextlib.contextmanager
def spill(outputs: Outputs, fallback: Path) -> Iterator[Path]:
    """A hidden temporary folder for the streams' files (removed at the end, whatever
    happens), or a one-line ``ConfigError`` when it cannot be made."""
    folder = outputs.spill_folder(fallback)
    flag = "--html" if outputs.records is None and outputs.html is not None else "--per-char"
    try:
        made = tempfile.TemporaryDirectory(prefix=".charrnn-eval-", dir=folder)
    except OSError as e:
        raise ConfigError(f"cannot write {flag}: no temporary folder in {folder} "
                          f"({e.strerror or e}); write to a folder you can write to") from None
    with made as name:
        yield Path(name)


# ----------------------------------------------------------------------------- writers

class _Lines:
    """JSON Lines, or CSV with the same columns."""

    def __init__(self, out: IO[str], vocab: Vocab, as_csv: bool) -> None:
        self.out = out
        self.csv = csv.writer(out, lineterminator="\n") if as_csv else None
        self.chars = vocab.chars
        self.quoted = [json.dumps(ch, ensure_ascii=False) for ch in vocab.chars]
        if self.csv is not None:
            self.csv.writerow(COLUMNS)

    def write(self, pos: np.ndarray, rows: np.ndarray) -> None:
        q = self.quoted
        fields = zip(pos.tolist(), rows["id"].tolist(), rows["logprob"].tolist(),
                     rows["rank"].tolist(), rows["top_id"].tolist(), rows["top_p"].tolist())
        if self.csv is not None:
            self.csv.writerows(
                (p, self.chars[i], i, repr(lp), r,
                 "[" + ", ".join([f"[{q[a]}, {b:.6g}]" for a, b in zip(ta, tb)]) + "]")
                for p, i, lp, r, ta, tb in fields)
            return
        self.out.write("".join([
            f'{{"pos": {p}, "char": {q[i]}, "id": {i}, "logprob": {lp!r}, "rank": {r}, '
            f'"top": [{", ".join([f"[{q[a]}, {b:.6g}]" for a, b in zip(ta, tb)])}]}}\n'
            for p, i, lp, r, ta, tb in fields]))

    def finish(self) -> None:
        pass


class _Page:
    """The HTML page, written as the records come: the first ``limit`` of them."""

    def __init__(self, out: IO[str], vocab: Vocab, *, title: str, meta: list[str],
                 first: str, limit: int) -> None:
        self.out, self.chars, self.left = out, vocab.chars, limit
        self.first = first
        self.last = -1           # position of the last character drawn
        out.write(html_page.head(title, meta) + "\n" + _legend() + "\n"
                  + html_page.TEXT_START)

    def write(self, pos: np.ndarray, rows: np.ndarray) -> None:
        n = min(len(rows), self.left)
        if n <= 0:
            return
        self.left -= n
        pieces, text, cells = [], [], []
        chars, rows = self.chars, rows[:n]
        for p, i, lp, r, ta, tb in zip(pos[:n].tolist(), rows["id"].tolist(),
                                       rows["logprob"].tolist(), rows["rank"].tolist(),
                                       rows["top_id"].tolist(), rows["top_p"].tolist()):
            if p != self.last + 1:
                pieces.append(html_page.coloured_spans("".join(text), cells))
                text, cells = [], []
                if p == 1:       # the text's first character: context only
                    pieces.append(html_page.coloured_spans(self.first,
                                                           [(drawing.NEUTRAL, FIRST)]))
                else:
                    pieces.append(html_page.gap(p - self.last - 1))
            self.last = p
            prob = math.exp(lp)
            text.append(chars[i])
            cells.append((drawing.probability_rgb(prob), html_page.prediction_tip(
                chars[i], prob, [(chars[a], b) for a, b in zip(ta, tb)],
                note=f", {-lp:.3f} nats, rank {r}")))
        pieces.append(html_page.coloured_spans("".join(text), cells))
        self.out.write("".join(pieces))

    def finish(self) -> None:
        self.out.write(html_page.TEXT_END + "\n" + html_page.TAIL + "\n")


def _legend() -> str:
    spans = "".join(html_page.span(f"{nats:g} nats", drawing.probability_rgb(math.exp(-nats)),
                                   f"p = {math.exp(-nats):.3f}")
                    for nats in (0.05, 0.25, 0.5, 1, 2, 4))
    return f'<p class="legend">surprisal, -ln p: {spans}</p>'


def page_meta(*, checkpoint: str, text: str, scored: int, nats: float,
              skipped: int = 0, sampled: bool = False) -> tuple[str, list[str]]:
    """The HTML page's title and the lines under it."""
    meta = [(f"{text}: {nats:.4f} nats/char, {nats / math.log(2):.4f} bits/char, "
             f"perplexity {math.exp(nats):.3f}, over {scored:,} characters scored"),
            ("each character on a background coloured by its surprisal, -ln p(character | "
             "the text before it): green expected, red surprising; hover for p, the "
             "surprisal, its rank among the model's guesses and the likeliest ones")]
    if scored > HTML_MAX_CHARS:
        meta.append(f"this page shows the first {HTML_MAX_CHARS:,} of the {scored:,} "
                    "characters scored (--per-char FILE writes them all)")
    if sampled:
        meta.append("--max-chars: only stretches spread over the text were scored; "
                    "… marks what lies between them")
    if skipped:
        meta.append(f"{skipped:,} character(s) outside the vocabulary were left out")
    return f"charrnn eval: {checkpoint}", meta


def write(outputs: Outputs, recorder: Recorder, vocab: Vocab, *, first: str,
          title: str, meta: list[str], progress: bool = False) -> None:
    """The records of ``recorder``, in text order, to the outputs asked for: each file
    written whole or not at all, stdout as they come."""
    from charrnn.progress import bar as progress_bar

    total = int(np.diff(recorder.plan).sum())
    with contextlib.ExitStack() as stack:
        writers: list[Any] = []
        if outputs.records is not None or outputs.stdout:
            out = sys.stdout if outputs.stdout else _text_file(
                stack, outputs.records, "--per-char")
            writers.append(_Lines(out, vocab, outputs.csv))
        if outputs.html is not None:
            writers.append(_Page(_text_file(stack, outputs.html, "--html"), vocab,
                                 title=title, meta=meta, first=first, limit=HTML_MAX_CHARS))
        bar = stack.enter_context(progress_bar(progress, total=total, unit="char",
                                               unit_scale=True, leave=False, delay=1.0,
                                               desc="writing"))
        for pos, rows in recorder.chunks():
            for writer in writers:
                writer.write(pos, rows)
            bar.update(len(rows))
        for writer in writers:
            writer.finish()


def _text_file(stack: contextlib.ExitStack, path: Path, flag: str) -> IO[str]:
    """A UTF-8 text stream to ``path`` through ``atomic_write``: renamed into place when
    ``stack`` closes without an exception, removed otherwise."""
    raw = stack.enter_context(atomic_write(
        path, what=f"{flag} ", error=ConfigError, fix="give a path in a writable folder"))
    stream = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=False)
    # Flushed before atomic_write syncs and renames the file (callbacks run last-in,
    # first-out); detached so that closing the wrapper leaves the file to atomic_write.
    stack.callback(lambda: stream.detach() if not stream.closed else None)
    stack.callback(stream.flush)
    return stream
