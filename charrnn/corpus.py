"""The encoded corpus on disk, so that a text larger than memory trains in bounded memory.

One streaming pass over a text file checks it, counts its characters, finds its
vocabulary and hashes it; a second pass writes its ids (uint8, uint16 or uint32 by
vocabulary size) into a ``.npy`` file that training reads memory-mapped. Both live in
a cache folder, ``.cache/`` beside the run folder by default (``runs/.cache``)::

    <stem>-<digest of the path>.json        the scan: size, mtime, sha256, characters, vocabulary
    <sha256[:16]>-<digest of the vocab>.npy  the ids

A scan is reused while the file's size and mtime are those it recorded; otherwise the
file is scanned again, and its ids are re-encoded only if its content (hash) changed.
``charrnn prepare TEXT`` runs this ahead of training; ``charrnn train`` runs it itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from charrnn.data import CharSet, Vocab, list_chars, text_pieces
from charrnn.errors import CharRNNError, DataError
from charrnn.files import atomic_write, open_input

FORMAT = 1  # of the scan's JSON file


@dataclass(frozen=True)
class Scan:
    """What one pass over a text file found."""
    path: str
    size: int       # bytes
    mtime_ns: int
    sha256: str     # of the file's bytes
    chars: int      # characters (a leading byte-order mark is not one)
    vocab: str      # its distinct characters in code-point order


def scan_text(path: str | Path, *, what: str = "text file",
              on_read: Callable[[bytes], None] | None = None) -> Scan:
    """Check, count, hash and collect the characters of ``path`` in one streaming pass
    (``on_read`` sees each block read, for a progress bar)."""
    path = Path(path)
    digest, seen, chars = hashlib.sha256(), CharSet(), 0

    def read(block: bytes) -> None:
        digest.update(block)
        if on_read is not None:
            on_read(block)

    stat = _stat(path, what)
    for piece in text_pieces(path, what=what, on_read=read):
        seen.add(piece)
        chars += len(piece)
    return Scan(str(path), stat.st_size, stat.st_mtime_ns, digest.hexdigest(), chars,
                seen.chars())


def prepare(path: str | Path, cache_dir: str | Path, *, vocab: Vocab | None = None,
            what: str = "text file", on_read: Callable[[str, int], None] | None = None
            ) -> tuple[Scan, Vocab, np.ndarray]:
    """The scan, vocabulary and memory-mapped ids of the text at ``path``, from
    ``cache_dir`` or made there. ``vocab``: encode with this one (a checkpoint's)
    instead of the file's own. ``on_read(stage, nbytes)`` follows both passes ("scan",
    "encode") for a progress bar."""
    scan = cached_scan(path, cache_dir, what=what, on_read=on_read)
    vocab = vocab_for([scan], vocab, what=f"{what} {path}")
    return scan, vocab, cached_ids(path, scan, vocab, cache_dir, what=what, on_read=on_read)


def cached_scan(path: str | Path, cache_dir: str | Path, *, what: str = "text file",
                on_read: Callable[[str, int], None] | None = None) -> Scan:
    """The scan of ``path`` saved in ``cache_dir`` while the file's size and mtime are
    unchanged, else a new one (saved there)."""
    path, cache_dir = Path(path), Path(cache_dir)
    stat = _stat(path, what)
    scan_path = cache_dir / f"{_safe(path.stem)}-{_digest(str(path.resolve()))}.json"
    old = _read_scan(scan_path)
    if old is not None and (old.size, old.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        return old
    scan = scan_text(path, what=what, on_read=_stage(on_read, "scan"))
    _write(scan_path, lambda f: f.write(
        json.dumps({"format": FORMAT, **asdict(scan)}, ensure_ascii=False).encode("utf-8")))
    if old is not None and old.sha256 != scan.sha256:      # the ids of the old content
        for stale in cache_dir.glob(f"{old.sha256[:16]}-*.npy"):
            stale.unlink(missing_ok=True)
    return scan


def vocab_for(scans: list[Scan], given: Vocab | None = None, *, what: str = "the text",
              source: str | None = None) -> Vocab:
    """The characters of all ``scans``; or ``given`` (a checkpoint's vocabulary), which
    must then hold every one of them."""
    chars = set().union(*(scan.vocab for scan in scans))
    if given is None:
        return Vocab("".join(sorted(chars)))
    unknown = "".join(sorted(chars - set(given.chars)))
    if unknown:
        where = f" (of {source})" if source else ""
        raise DataError(f"{what} has {len(unknown)} character(s) that the checkpoint's "
                        f"vocabulary lacks{where}: {list_chars(unknown)}; train from scratch "
                        "or use a text without them")
    return given


def cached_ids(path: str | Path, scan: Scan, vocab: Vocab, cache_dir: str | Path, *,
               what: str = "text file",
               on_read: Callable[[str, int], None] | None = None) -> np.ndarray:
    """The ids of the text at ``path`` (as ``scan`` found it) under ``vocab``,
    memory-mapped from ``cache_dir``; encoded there first when missing."""
    path = Path(path)
    ids_path = Path(cache_dir) / f"{scan.sha256[:16]}-{_digest(vocab.chars)}.npy"
    ids = _open_ids(ids_path, scan.chars, vocab.dtype)
    if ids is not None:
        return ids

    def encode(out: IO[bytes]) -> None:
        # Plain writes, not a writable memory map: the pages written are not kept
        # in this process's resident memory.
        header = {"descr": np.lib.format.dtype_to_descr(vocab.dtype), "fortran_order": False,
                  "shape": (scan.chars,)}
        position = 0
        np.lib.format.write_array_header_1_0(out, header)
        for piece in text_pieces(path, what=what, on_read=_stage(on_read, "encode")):
            ids = vocab.encode_piece(piece, what=what)
            position += ids.size
            if position > scan.chars:
                break
            out.write(ids.tobytes())
        if position != scan.chars:
            raise DataError(f"{what} {path} changed while it was being encoded; run again")

    _write(ids_path, encode)
    return _open_ids(ids_path, scan.chars, vocab.dtype)


class ReadingBar:
    """A bytes progress bar over the passes that read the texts (scan, then encode),
    shown only for texts big enough to take a while."""

    def __init__(self, progress: bool, paths: list[Path]) -> None:
        self.total = sum(p.stat().st_size for p in paths if p.is_file())
        self.enabled = progress and self.total >= 64 << 20
        self.bar: tqdm | None = None
        self.stage = ""

    def update(self, stage: str, nbytes: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=self.total, desc=f"{stage} text", unit="B", unit_scale=True,
                            dynamic_ncols=True, file=sys.stderr, leave=False)
        self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ReadingBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stat(path: Path, what: str) -> os.stat_result:
    open_input(path, what, DataError).close()   # a regular file that can be read
    try:
        return path.stat()
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror}") from None


def _stage(on_read: Callable[[str, int], None] | None, stage: str):
    return None if on_read is None else (lambda block: on_read(stage, len(block)))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _safe(stem: str) -> str:
    return re.sub(r"[^\w.-]", "_", stem)[:40] or "text"


def _read_scan(path: Path) -> Scan | None:
    """The scan saved at ``path``, or None when there is none or it is unreadable
    (a damaged cache file only costs a new scan)."""
    try:
        saved = json.loads(path.read_text("utf-8"))
        if saved.pop("format") != FORMAT:
            return None
        scan = Scan(**saved)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    kinds = {"int": int, "str": str}
    whole = all(type(getattr(scan, f.name)) is kinds[f.type] for f in fields(Scan))
    return scan if whole else None


def _open_ids(path: Path, chars: int, dtype: np.dtype) -> np.ndarray | None:
    """The cached ids, or None when missing or not what the scan expects."""
    try:
        ids = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return ids if ids.shape == (chars,) and ids.dtype == dtype else None


def _write(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a cache file whole or not at all (``files.atomic_write``)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharRNNError(f"cannot write the corpus cache {target}: {e.strerror}; {_FIX}"
                           ) from None
    with atomic_write(target, what="the corpus cache ", fix=_FIX) as f:
        write(f)


_FIX = "give a writable folder with --cache-dir (or --out), or free some space"
