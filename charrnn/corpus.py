"""The encoded corpus on disk, so that a text larger than memory trains in bounded memory.

One streaming pass over a text file checks it, counts its characters, finds its
vocabulary and hashes it; a second pass writes its ids (uint8, uint16 or uint32 by
vocabulary size) into a ``.npy`` file that training reads memory-mapped. Both live in
a cache folder, ``.cache/`` beside the run folder by default (``runs/.cache``)::

    <stem>-<digest of the path>.json        the scan: size, mtime, sha256, characters, vocabulary
    <sha256[:16]>-<digest of the vocab>.npy  the ids

A scan is reused while the file's size and mtime are those it recorded; otherwise the
file is scanned again, and its ids are re-encoded only if its content (hash) changed.
``charrnn prepare TEXT...`` runs this ahead of training; ``charrnn train`` runs it itself.

Several files are one text: ``expand_inputs`` turns command-line inputs (files, folders,
glob patterns, corpus names) into a list of files, each file keeps its own cached scan,
and their ids are written one after the other, ``SEPARATOR`` between two files, into
one ``.npy`` named by the combined hash (``Texts.sha256``: the files' hashes in order)::

    files-<digest of the paths>.json         the combined hash last made of these paths
    <Texts.sha256[:16]>-<digest of the vocab>.npy

``prepare_texts(paths, cache_dir, vocab=None)`` gives the facts, the vocabulary and the
memory-mapped ids in one call. One file is read exactly as ``prepare`` reads it (the
same ids, the same cache files).
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from charrnn.data import CharSet, Vocab, list_chars, text_pieces
from charrnn.download import resolve_text
from charrnn.errors import CharRNNError, DataError
from charrnn.files import atomic_write, open_input
from charrnn.progress import bar as progress_bar

FORMAT = 1  # of the scan's JSON file
# Between two files of a corpus: a blank line after each file but the last (none
# after one file alone).
SEPARATOR = "\n\n"
# The files of a folder that are read as text: these suffixes, in any case. A file
# named on the command line, or matched by a pattern, is read whatever its name.
TEXT_SUFFIXES = frozenset((
    ".txt", ".text", ".md", ".markdown", ".rst", ".org", ".tex", ".html", ".htm", ".xml",
    ".py", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".js", ".ts", ".go", ".rs", ".rb",
    ".sh", ".lua"))


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
        # The same file, however it was named when scanned (relative to another folder,
        # or through a link): what is read and recorded now is the path given now.
        return replace(old, path=str(path))
    scan = scan_text(path, what=what, on_read=_stage(on_read, "scan"))
    _write(scan_path, lambda f: f.write(
        json.dumps({"format": FORMAT, **asdict(scan)}, ensure_ascii=False).encode("utf-8")))
    if old is not None and old.sha256 != scan.sha256:      # the ids of the old content
        for stale in cache_dir.glob(f"{old.sha256[:16]}-*.npy"):
            stale.unlink(missing_ok=True)
    return scan


def vocab_for(scans: list[Scan | Texts], given: Vocab | None = None, *, what: str = "the text",
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
    ids_path = Path(cache_dir) / f"{scan.sha256[:16]}-{_digest(vocab.chars)}.npy"
    ids = _open_ids(ids_path, scan.chars, vocab.dtype)
    if ids is not None:
        return ids

    def encode(out: IO[bytes]) -> None:
        _write_header(out, vocab, scan.chars)
        _encode_into(out, Path(path), scan, vocab, what, on_read)

    _write(ids_path, encode)
    return _open_ids(ids_path, scan.chars, vocab.dtype)


def _write_header(out: IO[bytes], vocab: Vocab, chars: int) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(vocab.dtype), "fortran_order": False,
              "shape": (chars,)}
    np.lib.format.write_array_header_1_0(out, header)


def _encode_into(out: IO[bytes], path: Path, scan: Scan, vocab: Vocab, what: str,
                 on_read: Callable[[str, int], None] | None) -> None:
    """Append the ids of the file at ``path`` (``scan.chars`` of them) to ``out``: plain
    writes, not a writable memory map, so the pages written are not kept in this
    process's resident memory."""
    position = 0
    for piece in text_pieces(path, what=what, on_read=_stage(on_read, "encode")):
        ids = vocab.encode_piece(piece, what=what)
        position += ids.size
        if position > scan.chars:
            break
        out.write(ids.tobytes())
    if position != scan.chars:
        raise DataError(f"{what} {path} changed while it was being encoded; run again")


# ------------------------------------------------------------------------ several files
def expand_inputs(args: Iterable[str | Path], *,
                  on_duplicate: Callable[[Path], None] | None = None,
                  on_empty: Callable[[Path], None] | None = None) -> list[Path]:
    """The text files that command-line inputs name, in order. Each input is a file
    (used whatever its name), a folder (its files with a suffix in ``TEXT_SUFFIXES``,
    recursively), a glob pattern expanded here (``*``, ``?``, ``[...]``, ``**``; what
    it matches taken as if named: a file whatever its name, a folder for its text
    files), or the name of a known corpus (``download.resolve_text``). A path that is
    none of these is kept, for the reader to report.

    Inside a folder or a pattern: files are sorted by path, folder by folder; names
    starting with a dot are left out (unless the pattern's part starts with one); a
    link to a file is that file, a link to a folder is not followed (so a loop of links
    cannot trap the walk); anything that is not a regular file (a broken link, a pipe,
    a device) is left out; an empty file adds nothing and is left out too
    (``on_empty`` hears of each). An input that gives no file at all is an error. A
    file named by several inputs is read once, where it first comes; ``on_duplicate``
    hears of each repeat."""
    found: list[Path] = []
    seen: set[tuple] = set()
    for arg in args:
        for path in _expand(str(arg), on_empty):
            key = _identity(path)
            if key in seen:
                if on_duplicate is not None:
                    on_duplicate(path)
                continue
            seen.add(key)
            found.append(path)
    if not found:
        raise DataError("no text file given; name a file, a folder or a pattern")
    return found


_WILD = re.compile(r"[*?[]")


def _expand(arg: str, on_empty: Callable[[Path], None] | None) -> list[Path]:
    """The files of one input, each once."""
    path = Path(arg)
    if not path.is_dir() and (path.exists() or not _WILD.search(arg)):
        return [resolve_text(arg)]
    matches = [path] if path.is_dir() else _pattern_matches(arg)
    files: dict[tuple, Path] = {}   # a file reached twice (through ** and a folder): once
    for match in matches:
        for file in _text_files_in(match) if match.is_dir() else [match]:
            if file.is_file():     # not a broken link, a pipe or a device
                files.setdefault(_identity(file), file)
    kept = []
    for file in files.values():
        if not _is_empty(file):
            kept.append(file)
        elif on_empty is not None:
            on_empty(file)
    if kept:
        return kept
    what = f"folder {arg}" if path.is_dir() else f"pattern {arg}"
    if files:
        raise DataError(f"every text file of {what} is empty ({len(files)}); name files with "
                        "some text in them")
    if path.is_dir():
        raise DataError(f"folder {arg} holds no text files (.txt, .md, .html, .py and other "
                        "text and source suffixes; hidden ones are skipped); name its files, or "
                        f"match them with a pattern, e.g. '{arg}/*.csv'")
    raise DataError(f"no text file matches {arg}; check the pattern (charrnn expands *, ?, "
                    "[...] and ** itself, so it may be quoted)")


def _pattern_matches(pattern: str) -> list[Path]:
    """What ``pattern`` matches, as the shell's globstar would (``*``, ``?`` and
    ``[...]`` within a name, ``**`` for any depth of folders), but never through a link
    to a folder, and sorted by path, folder by folder."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if _WILD.search(part))
    base, rest = Path(*parts[:first]) if first else Path(), parts[first:]
    deep = "**" in rest
    found: list[Path] = []

    def visit(names: tuple[str, ...]) -> None:
        folder = base.joinpath(*names)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            here = names + (entry.name,)
            linked_folder = entry.is_symlink() and entry.is_dir()
            if _parts_match(rest, here) and not linked_folder:
                found.append(base.joinpath(*here))
            if (entry.is_dir(follow_symlinks=False) and (deep or len(here) < len(rest))
                    and not _hidden(entry.name, rest)):
                visit(here)
    visit(())
    return sorted(found, key=lambda p: p.parts)


def _parts_match(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    """Whether a path's parts ``names`` match the pattern's parts (``**``: any number of
    folders, none included)."""
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_parts_match(pattern[1:], names[i:]) for i in range(len(names) + 1)
                   if not any(name.startswith(".") for name in names[:i]))
    return (bool(names) and not _hidden(names[0], pattern[:1])
            and fnmatch.fnmatchcase(names[0], pattern[0]) and _parts_match(pattern[1:], names[1:]))


def _hidden(name: str, pattern: tuple[str, ...]) -> bool:
    """A name starting with a dot, which only a pattern part starting with one names."""
    return name.startswith(".") and not any(part.startswith(".") for part in pattern)


def _is_empty(path: Path) -> bool:
    """No text at all: no bytes, or nothing but a UTF-8 byte-order mark."""
    try:
        size = path.stat().st_size
        return size == 0 or (size == 3 and path.read_bytes() == codecs.BOM_UTF8)
    except OSError:
        return False          # the reader reports it


def _text_files_in(folder: Path) -> list[Path]:
    """The text files under ``folder`` (see ``expand_inputs``), sorted by path."""
    def fail(e: OSError) -> None:
        raise DataError(f"cannot read folder {e.filename}: {e.strerror}")

    found = []
    for root, folders, names in os.walk(folder, onerror=fail):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(Path(root) / name for name in names
                     if not name.startswith(".") and Path(name).suffix.lower() in TEXT_SUFFIXES)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)   # (files: _expand)


def _identity(path: Path) -> tuple:
    """Which file ``path`` is: the same through links and other spellings."""
    try:
        stat = path.stat()
    except OSError:
        return ("path", os.path.abspath(path))
    return ("file", stat.st_dev, stat.st_ino)


@dataclass(frozen=True)
class Texts:
    """Text files read as one text: each file's scan, in order, ``SEPARATOR`` between
    two of them. One file is that file as it is: its own characters, hash and ids."""
    scans: tuple[Scan, ...]

    def __post_init__(self) -> None:
        if not self.scans:
            raise ValueError("Texts needs at least one scan")

    @property
    def paths(self) -> list[Path]:
        return [Path(scan.path) for scan in self.scans]

    @property
    def size(self) -> int:     # bytes of the files
        return sum(scan.size for scan in self.scans)

    @property
    def chars(self) -> int:    # of the joined text, separators included
        return sum(scan.chars for scan in self.scans) + len(SEPARATOR) * (len(self.scans) - 1)

    @property
    def sha256(self) -> str:
        """One file's sha256; for several, the sha256 of the JSON list of the separator
        and their hashes in order, so that a changed, added, removed or moved file
        changes it."""
        if len(self.scans) == 1:
            return self.scans[0].sha256
        listed = json.dumps([SEPARATOR, *(scan.sha256 for scan in self.scans)])
        return hashlib.sha256(listed.encode("ascii")).hexdigest()

    @property
    def vocab(self) -> str:    # the distinct characters of the joined text, in order
        joined = SEPARATOR if len(self.scans) > 1 else ""
        return "".join(sorted(set(joined).union(*(scan.vocab for scan in self.scans))))

    @property
    def label(self) -> str:
        """The file, or ``N files under FOLDER`` (the folder that holds them all)."""
        if len(self.scans) == 1:
            return self.scans[0].path
        return f"{len(self.scans)} files under {common_folder(self.paths)}"

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the text (its ``corpus`` entry): for one file its
        absolute path, characters and sha256 (as before there were several); for several,
        the absolute paths and each one's sha256, with the joined text's characters and
        combined sha256."""
        absolute = [str(p.resolve()) for p in self.paths]
        if len(self.scans) == 1:
            return {"path": absolute[0], "chars": self.chars, "sha256": self.sha256}
        return {"paths": absolute, "sha256s": [scan.sha256 for scan in self.scans],
                "chars": self.chars, "sha256": self.sha256}


def common_folder(paths: list[Path]) -> str:
    """The folder that holds all of ``paths`` (as given when it can be, else absolute)."""
    try:
        common = os.path.commonpath([str(p.parent) for p in paths])
    except ValueError:  # relative and absolute paths mixed
        common = os.path.commonpath([str(p.parent.resolve()) for p in paths])
    return common or "."


def corpus_name(paths: list[Path]) -> str:
    """A short name for run folders: the file's stem, or the name of the folder that
    holds all the files."""
    if len(paths) == 1:
        return paths[0].stem
    return Path(common_folder(paths)).resolve().name or "texts"


def what_changed(record: dict[str, Any], texts: Texts) -> str:
    """How ``texts`` differ from the text a checkpoint ``record``s, in a few words."""
    old = record.get("paths") if isinstance(record.get("paths"), list) else [record.get("path")]
    hashes = record.get("sha256s") if isinstance(record.get("sha256s"), list) else (
        [record.get("sha256")] if len(old) == 1 else [None] * len(old))
    new = [str(p.resolve()) for p in texts.paths]
    added = [p for p in new if p not in old]
    removed = [p for p in old if p not in new]
    if added or removed:
        parts = [f"{len(added)} file(s) added, e.g. {added[0]}" if added else "",
                 f"{len(removed)} file(s) removed, e.g. {removed[0]}" if removed else ""]
        return "; ".join(p for p in parts if p)
    if old != new:
        return "the same files in another order"
    saved = dict(zip(old, hashes))
    changed = [p for p, scan in zip(new, texts.scans) if saved.get(p) != scan.sha256]
    return f"{len(changed)} file(s) changed, e.g. {changed[0]}" if changed else "changed"


def cached_texts(paths: list[Path], cache_dir: str | Path, *, what: str = "text file",
                 on_read: Callable[[str, int], None] | None = None) -> Texts:
    """The scans of the files at ``paths`` (``cached_scan``), as one text. When the
    files' combined hash is not the one last recorded for these paths, the ids of the
    old combination are removed from ``cache_dir``."""
    texts = Texts(tuple(cached_scan(path, cache_dir, what=what, on_read=on_read)
                        for path in paths))
    if len(paths) > 1:
        cache_dir = Path(cache_dir)
        absolute = [str(Path(p).resolve()) for p in paths]
        record_path = cache_dir / f"files-{_digest(json.dumps(absolute))}.json"
        try:
            old = json.loads(record_path.read_text("utf-8")).get("sha256")
        except (OSError, ValueError, AttributeError):
            old = None
        if old != texts.sha256:
            if isinstance(old, str) and re.fullmatch(r"[0-9a-f]{64}", old):
                for stale in cache_dir.glob(f"{old[:16]}-*.npy"):
                    stale.unlink(missing_ok=True)
            _write(record_path, lambda f: f.write(json.dumps(
                {"format": FORMAT, "paths": absolute, "sha256": texts.sha256},
                ensure_ascii=False).encode("utf-8")))
    return texts


def cached_texts_ids(texts: Texts, vocab: Vocab, cache_dir: str | Path, *,
                     what: str = "text file",
                     on_read: Callable[[str, int], None] | None = None) -> np.ndarray:
    """The ids of the joined ``texts`` under ``vocab`` (which must hold the separator's
    characters when there are several files), memory-mapped from ``cache_dir``;
    written there first when missing, one file after the other, never held whole."""
    if len(texts.scans) == 1:
        return cached_ids(texts.paths[0], texts.scans[0], vocab, cache_dir, what=what,
                          on_read=on_read)
    ids_path = Path(cache_dir) / f"{texts.sha256[:16]}-{_digest(vocab.chars)}.npy"
    ids = _open_ids(ids_path, texts.chars, vocab.dtype)
    if ids is not None:
        return ids
    separator = vocab.encode(SEPARATOR, what="the separator between files").tobytes()

    def encode(out: IO[bytes]) -> None:
        _write_header(out, vocab, texts.chars)
        for k, (path, scan) in enumerate(zip(texts.paths, texts.scans)):
            if k:
                out.write(separator)
            _encode_into(out, path, scan, vocab, what, on_read)

    _write(ids_path, encode)
    return _open_ids(ids_path, texts.chars, vocab.dtype)


def prepare_texts(paths: list[Path], cache_dir: str | Path, *, vocab: Vocab | None = None,
                  what: str = "text file", on_read: Callable[[str, int], None] | None = None
                  ) -> tuple[Texts, Vocab, np.ndarray]:
    """``prepare`` for the files at ``paths`` (from ``expand_inputs``) read as one text:
    its facts, its vocabulary (or ``vocab``, a checkpoint's, which must hold every one
    of its characters, the separator's too) and its memory-mapped ids."""
    texts = cached_texts(paths, cache_dir, what=what, on_read=on_read)
    vocab = vocab_for([texts], vocab, what=f"{what} {texts.label}")
    return texts, vocab, cached_texts_ids(texts, vocab, cache_dir, what=what, on_read=on_read)


class ReadingBar:
    """A bytes progress bar over the passes that read the texts (scan, then encode),
    shown only for texts big enough to take a while."""

    def __init__(self, progress: bool, paths: list[Path]) -> None:
        self.total = sum(p.stat().st_size for p in paths if p.is_file())
        self.enabled = progress and self.total >= 64 << 20
        self.bar: Any = None
        self.stage = ""

    def update(self, stage: str, nbytes: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = progress_bar(total=self.total, desc=f"{stage} text", unit="B",
                                    unit_scale=True, dynamic_ncols=True, leave=False)
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
        # A file where a folder of the path should be reads as "File exists": name it.
        file = next((p for p in reversed(target.parents) if p.exists() and not p.is_dir()),
                    None)
        why = f"{file} is a file, not a folder" if file is not None else e.strerror
        raise CharRNNError(f"cannot write the corpus cache {target}: {why}; {_FIX}") from None
    with atomic_write(target, what="the corpus cache ", fix=_FIX) as f:
        write(f)


_FIX = "give a writable folder with --cache-dir, or free some space"
