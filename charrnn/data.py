"""Text in, training windows out: reading, the vocabulary, the split and batching.

    path --text_pieces--> checked 8 MB pieces --CharSet--> the vocabulary
         --Vocab.encode_piece--> ids (numpy, smallest unsigned dtype; charrnn.corpus
         keeps them in a file) --split--> train ids, val ids
         --StreamBatches / RandomBatches--> (x, y) windows

``load_text`` and ``Vocab.encode`` do the same for a text held as one string. Everything
is vectorised with numpy or done by bytes/str methods in C: no Python loop runs once per
character. Nothing here knows about the model or prints.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from charrnn.errors import DataError
from charrnn.files import open_input

if TYPE_CHECKING:  # torch is imported where batches are made: reading text needs none
    import torch

# Characters converted per numpy call: bounds the temporary memory of encoding.
_CHUNK = 1 << 22
# Bytes read per block from a file: bounds the temporary memory of reading one.
_BLOCK = 1 << 23
_ASCII_BYTES, _HIGH_BYTES = bytes(range(128)), bytes(range(128, 256))
# Byte-order marks of the other Unicode encodings (UTF-32 first: its LE mark starts
# with UTF-16's).
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE"),
               (b"\xff\xfe", "UTF-16LE"), (b"\xfe\xff", "UTF-16BE"))


@dataclass(frozen=True)
class Piece:
    """A block of a UTF-8 file, cut at a character boundary."""
    raw: bytes            # its bytes: valid UTF-8, whole characters only
    text: str | None      # the decoded characters; None when ``raw`` is pure ASCII

    def __len__(self) -> int:  # characters
        return len(self.raw) if self.text is None else len(self.text)

    def code_points(self) -> np.ndarray:
        """uint8 for ASCII (its bytes are its code points), else uint32."""
        if self.text is None:
            return np.frombuffer(self.raw, dtype=np.uint8)
        return _code_points(self.text)


def text_pieces(path: str | Path, *, what: str = "text file",
                on_read: Callable[[bytes], None] | None = None) -> Iterator[Piece]:
    """The text of the UTF-8 file ``path``, read and checked a block at a time.

    A leading byte-order mark is dropped; a character cut by a block boundary is
    completed in the next piece. Raises ``DataError`` for a missing, empty, binary,
    UTF-16/32 or otherwise non-UTF-8 file, naming the offset. ``on_read`` sees every
    block of raw bytes as it is read (to hash them, say).
    """
    path = Path(path)
    file = open_input(path, what, DataError)
    offset, tail = 0, b""  # offset of the next block; bytes of a character it completes
    with file:
        while True:
            try:
                data = file.read(_BLOCK)
            except OSError as e:
                raise DataError(f"cannot read {what} {path}: {e.strerror}") from None
            if on_read is not None and data:
                on_read(data)
            if offset == 0:
                for bom, encoding in _OTHER_BOMS:
                    if data.startswith(bom):
                        raise DataError(f"{what} {path} is {encoding} text, not UTF-8; convert "
                                        f"it, e.g. iconv -f {encoding} -t utf-8")
                skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
                if len(data) == skip:
                    raise DataError(f"{what} {path} is empty; give a file with some text in it")
                data, offset = data[skip:], skip
            nul = data.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{what} {path} looks binary (NUL byte at offset "
                                f"{offset + nul}); give a UTF-8 text file")
            buffer, start = tail + data, offset - len(tail)  # ``buffer`` begins at ``start``
            if buffer.isascii():
                if buffer:
                    yield Piece(buffer, None)
                tail = b""
            else:
                try:
                    text, used = codecs.utf_8_decode(buffer, "strict", not data)
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{what} {path} is not valid UTF-8 (byte 0x{buffer[e.start]:02x} at "
                        f"offset {start + e.start}); convert it, e.g. iconv -f latin1 -t utf-8"
                    ) from None
                tail = buffer[used:]
                if used:
                    yield Piece(buffer[:used], text)
            if not data:
                return
            offset += len(data)


def load_text(path: str | Path, *, what: str = "text file") -> str:
    """The whole UTF-8 text of ``path`` as one string (for texts that fit in memory;
    see ``charrnn.corpus`` for the streaming path training takes)."""
    return "".join(piece.raw.decode("ascii") if piece.text is None else piece.text
                   for piece in text_pieces(path, what=what))


def _code_points(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as uint32, without a per-character loop."""
    try:
        return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    except UnicodeEncodeError as e:
        raise DataError(f"text has an unpaired surrogate at character {e.start}; "
                        "it is not valid Unicode") from None


def escape_char(ch: str) -> str:
    """A character as it can be shown on one line: ``\\n``, ``␣`` for space, ``\\x07``."""
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣", "\\": "\\\\"}
    if ch in named:
        return named[ch]
    if ch.isprintable():
        return ch
    return ch.encode("unicode_escape").decode("ascii")


def list_chars(chars: str, limit: int = 20) -> str:
    """Characters for a one-line message: ``x é ␣ \\n and 3 more``."""
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return " ".join(escape_char(c) for c in chars[:limit]) + more


def _chars_of(codes: np.ndarray) -> str:
    return np.asarray(codes, dtype="<u4").tobytes().decode("utf-32-le")


class CharSet:
    """The distinct characters of a file, gathered piece by piece: ASCII characters
    already seen are deleted from each block's bytes in one C call, so only the new
    and the non-ASCII characters are ever looked at one by one."""

    def __init__(self) -> None:
        self._chars: set[str] = set()
        self._ascii_seen = b""

    def add(self, piece: Piece) -> None:
        rest = piece.raw.translate(None, self._ascii_seen)  # still valid UTF-8
        if rest:
            self._chars.update(rest.decode("utf-8"))
            self._ascii_seen = "".join(c for c in self._chars if c.isascii()).encode()

    def chars(self) -> str:
        """The characters in code-point order (``DataError`` when there are none)."""
        if not self._chars:
            raise DataError("cannot build a vocabulary from empty text")
        return "".join(sorted(self._chars))


class Vocab:
    """The characters of a text, sorted by code point; id = position in that order."""

    def __init__(self, chars: str) -> None:
        codes = _code_points(chars)
        if codes.size == 0 or np.any(np.diff(codes.astype(np.int64)) <= 0):
            raise ValueError("Vocab needs distinct characters in code-point order")
        self.chars = chars
        self._codes = codes                                   # id -> code point
        # code point -> id, or -1; at least 256 long so any byte can index it
        self._ids = np.full(max(int(codes[-1]) + 1, 256), -1, np.int32)
        self._ids[codes] = np.arange(len(codes), dtype=np.int32)
        self.dtype = np.min_scalar_type(max(len(chars) - 1, 0))
        # ASCII characters: their ids as a byte table for bytes.translate, when ids fit
        self._ascii_known = "".join(c for c in chars if c.isascii()).encode()
        self._byte_ids = (bytes(max(i, 0) for i in self._ids[:256])
                          if self.dtype == np.uint8 else None)

    @classmethod
    def from_text(cls, *texts: str) -> Vocab:
        chars = "".join(sorted(set().union(*texts)))
        if not chars:
            raise DataError("cannot build a vocabulary from empty text")
        return cls(chars)

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.chars == self.chars

    @property
    def char_to_ix(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.chars)}

    @property
    def ix_to_char(self) -> dict[int, str]:
        return dict(enumerate(self.chars))

    def unknown(self, text: str) -> str:
        """The distinct characters of ``text`` that are not in the vocabulary."""
        return "".join(sorted(set(text) - set(self.chars)))

    def encode(self, text: str, *, what: str = "text") -> np.ndarray:
        """Ids of ``text``; characters outside the vocabulary raise ``DataError``."""
        ids = np.empty(len(text), dtype=self.dtype)
        for start in range(0, len(text), _CHUNK):
            codes = _code_points(text[start:start + _CHUNK])
            found = self._lookup(codes)
            if found is None:
                raise self._unknown_error(self.unknown(text), what)
            ids[start:start + len(codes)] = found
        return ids

    def encode_piece(self, piece: Piece, *, what: str = "text") -> np.ndarray:
        """Ids of a piece of ``text_pieces``."""
        found = self._lookup_utf8(piece.raw) if self._byte_ids is not None else None
        if found is None:  # wide ids, or an unknown character to name
            found = self._encode_codes(piece.code_points(), what=what)
        return found

    def _lookup_utf8(self, raw: bytes) -> np.ndarray | None:
        """Ids of whole UTF-8 characters, or None when one is unknown. The bytes go
        through a byte table (right for ASCII); then each non-ASCII character's id is
        put at its first byte and its other bytes are dropped: a few vectorised passes
        instead of a decode to 4-byte code points."""
        if raw.translate(None, self._ascii_known + _HIGH_BYTES):
            return None                                        # an unknown ASCII character
        ids = np.frombuffer(raw.translate(self._byte_ids), dtype=np.uint8)
        if raw.isascii():
            return ids
        data = np.frombuffer(raw, dtype=np.uint8)
        high = np.flatnonzero(data >= 0x80)                   # bytes of non-ASCII characters
        first = data[high] >= 0xC0                            # a character's first byte
        others = self._lookup(_code_points(raw.translate(None, _ASCII_BYTES).decode("utf-8")))
        if others is None:
            return None
        ids = ids.copy()
        ids[high[first]] = others
        return np.delete(ids, high[~first])

    def _encode_codes(self, codes: np.ndarray, *, what: str = "text") -> np.ndarray:
        """Ids of an array of code points."""
        found = self._lookup(codes)
        if found is None:
            distinct = np.unique(codes)
            known = distinct < len(self._ids)
            known[known] = self._ids[distinct[known]] >= 0
            raise self._unknown_error(_chars_of(distinct[~known]), what)
        return found

    def _lookup(self, codes: np.ndarray) -> np.ndarray | None:
        """Ids of code points, or None when one of them is not in the vocabulary."""
        if codes.dtype != np.uint8 and codes.max(initial=0) >= len(self._ids):
            return None
        ids = self._ids[codes]
        return ids.astype(self.dtype) if ids.min(initial=0) >= 0 else None

    @staticmethod
    def _unknown_error(missing: str, what: str) -> DataError:
        return DataError(f"{what} has {len(missing)} character(s) not in the model's "
                         f"vocabulary: {list_chars(missing)}")

    def decode(self, ids) -> str:
        """Text of a sequence of ids (numpy array, tensor or list)."""
        ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids)       # a tensor
        return _chars_of(self._codes[ids.astype(np.int64)])

    def describe(self, limit: int = 12) -> str:
        """A short human-readable list of the characters."""
        head = "".join(escape_char(c) for c in self.chars[:limit])
        return head + ("..." if len(self) > limit else "")


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """First ``1 - val_fraction`` for training, the rest for validation (nanoGPT's cut)."""
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]


@dataclass
class Batch:
    window: torch.Tensor  # (B, T + 1) int64: inputs are [:, :-1], targets [:, 1:]
    fresh: bool           # True: start from a zero hidden state (no carry)

    @property
    def x(self) -> torch.Tensor:
        return self.window[:, :-1]

    @property
    def y(self) -> torch.Tensor:
        return self.window[:, 1:]


def _batch(window: np.ndarray, fresh: bool, pin: bool) -> Batch:
    """A batch copied out of the ids (which stay where they are, in memory or in a
    memory-mapped file), in pinned memory when it goes to a GPU, so that the copy to
    the device can overlap with work there (torch caches the pinned blocks)."""
    import torch

    tensor = torch.from_numpy(window.astype(np.int64))
    return Batch(tensor.pin_memory() if pin else tensor, fresh)


class StreamBatches:
    """``batch_size`` contiguous streams of the text, read window after window.

    The ids are cut into B equal streams (B, L). Step i reads columns
    [i*T, i*T + T) of every stream as input and the next column as target, so row b
    of one window continues row b of the previous one and the model may carry its
    hidden state across. After the last whole window the epoch wraps around and the
    state starts fresh. ``rows`` picks the streams this process reads (data-parallel
    training gives each process its own slice of the B streams).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int,
                 rows: slice = slice(None), pin: bool = False) -> None:
        length = len(ids) // batch_size
        if length < seq_length + 1:
            need = batch_size * (seq_length + 1)
            raise DataError(
                f"the training text has {len(ids)} characters but stream batching with "
                f"batch_size {batch_size} and seq_length {seq_length} needs at least {need}; "
                "use a longer text or a smaller --batch-size / --seq-length")
        self.streams = ids[:batch_size * length].reshape(batch_size, length)[rows]  # (B, L)
        self.seq_length = seq_length
        self.steps_per_epoch = (length - 1) // seq_length  # whole windows in a stream
        self.position = 0  # windows read since the start of training
        self.pin = pin

    def next(self) -> Batch:
        i = self.position % self.steps_per_epoch
        start = i * self.seq_length
        self.position += 1
        window = self.streams[:, start:start + self.seq_length + 1]  # (B, T + 1)
        return _batch(window, i == 0, self.pin)

    @property
    def epoch(self) -> float:
        return self.position / self.steps_per_epoch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


class RandomBatches:
    """Windows at random offsets, each read from a zero hidden state (nanoGPT).
    Every process draws the same B offsets and reads its ``rows`` of them."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int, seed: int,
                 rows: slice = slice(None), pin: bool = False) -> None:
        if len(ids) < seq_length + 1:
            raise DataError(
                f"the training text has {len(ids)} characters but a window of seq_length "
                f"{seq_length} needs at least {seq_length + 1}; use a longer text or a "
                "smaller --seq-length")
        self.ids = ids
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.rows = rows
        import torch

        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0
        # An epoch: as many random windows as it takes to read the text's length.
        self.steps_per_epoch = len(ids) / (batch_size * seq_length)
        self._offsets = np.arange(seq_length + 1)
        self.pin = pin

    def next(self) -> Batch:
        import torch

        starts = torch.randint(0, len(self.ids) - self.seq_length, (self.batch_size, 1),
                               generator=self.generator).numpy()[self.rows]
        window = self.ids[starts + self._offsets]               # (B, 1) -> (B, T + 1)
        self.position += 1
        return _batch(window, True, self.pin)

    @property
    def epoch(self) -> float:
        return self.position / self.steps_per_epoch

    def state_dict(self) -> dict:
        return {"position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.generator.set_state(state["generator"])


def make_batches(ids: np.ndarray, batching: str, batch_size: int, seq_length: int,
                 seed: int, rows: slice = slice(None),
                 pin: bool = False) -> StreamBatches | RandomBatches:
    if batching == "stream":
        return StreamBatches(ids, batch_size, seq_length, rows, pin)
    return RandomBatches(ids, batch_size, seq_length, seed, rows, pin)
