"""What a run trains and validates on: its texts read through the cache, the vocabulary
(or the checkpoint's, checked), the held-out text and the batches.

``read_texts`` is the first thing a run does after checking its folder; everything after
it reads ``RunTexts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn import config as cfg
from charrnn import corpus, distributed
from charrnn.data import RandomBatches, StreamBatches, Vocab, make_batches, split
from charrnn.errors import DataError
from charrnn.resume import Origin
from charrnn.scoring import stream_plan


@dataclass
class RunTexts:
    texts: corpus.Texts                 # the training files, scanned
    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    val_chars: int                      # of the validation text, this process scores per pass
    val_only: str                       # characters only the validation text has
    val_empty: list[Path]               # empty files a --val-file folder or pattern held
    batches: StreamBatches | RandomBatches


def read_texts(paths: list[Path], c: cfg.TrainConfig, group: distributed.Group,
               run_dir: Path, origin: Origin | None, *, allow_changed_text: bool,
               progress: bool, pin: bool) -> RunTexts:
    """Scan and encode the texts (cached in ``--cache-dir``, by default beside the runs),
    build the vocabulary (or check the checkpoint's), cut the validation text and make
    the batches (this process's rows of them under torchrun)."""
    cache_dir = Path(c.cache_dir) if c.cache_dir else run_dir.parent / ".cache"
    # --val-file: a file, folder or pattern, read as one text as the training text is.
    val_empty: list[Path] = []
    val_paths = corpus.expand_inputs([c.val_file], on_empty=val_empty.append) \
        if c.val_file else []
    gone = [path for path in val_paths if not path.exists()]
    if gone:
        raise DataError(f"validation file {gone[0]} does not exist; give an existing file, "
                        "folder or pattern with --val-file (with --resume too, to name its "
                        "new place)")
    what, val_what = "training text", "validation file"
    reading = corpus.ReadingBar(progress, paths + val_paths)
    with group.first_on_each_machine(), reading:
        texts = corpus.cached_texts(paths, cache_dir, what=what, on_read=reading.update)
        val_texts = corpus.cached_texts(val_paths, cache_dir, what=val_what,
                                        on_read=reading.update) if val_paths else None
        if origin is not None:    # before encoding a text that a resume will refuse
            origin.check_text(texts, allow_changed_text)
        vocab = corpus.vocab_for([texts] + ([val_texts] if val_texts else []),
                                 Vocab(origin.checkpoint["vocab"]) if origin else None,
                                 source=str(origin.path) if origin else None)
        ids = corpus.cached_texts_ids(texts, vocab, cache_dir, what=what,
                                      on_read=reading.update)
        val = corpus.cached_texts_ids(val_texts, vocab, cache_dir, what=val_what,
                                      on_read=reading.update) if val_texts else None
    train_ids, val_ids = split(ids, c.val_fraction) if val is None else (ids, val)
    if len(val_ids) < 2:
        raise DataError(f"the validation text has {len(val_ids)} character(s); it needs at "
                        "least 2: raise --val-fraction or give a longer --val-file")
    plan = stream_plan(len(val_ids), c.val_max_chars)[group.rank::group.world_size]
    # Characters the training text lacks: the model cannot learn them.
    val_only = "".join(sorted(set(val_texts.vocab) - set(texts.vocab))) if val_texts else ""
    return RunTexts(texts, vocab, train_ids, val_ids,
                    val_chars=int((plan[:, 1] - plan[:, 0]).sum()), val_only=val_only,
                    val_empty=val_empty,
                    batches=make_batches(train_ids, c.batching, c.batch_size, c.seq_length,
                                         c.seed, rows=group.rows(c.batch_size), pin=pin))
