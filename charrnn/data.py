"""Text in, training windows out: loading, the vocabulary, the split and batching.

    path --load_text--> str --Vocab.encode--> ids (numpy, smallest unsigned dtype)
         --split--> train ids, val ids --StreamBatches / RandomBatches--> (x, y)

Everything here is vectorised with numpy: no Python loop runs once per character.
Nothing here knows about the model or prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn.errors import DataError

# Characters converted per numpy call: bounds the temporary memory of encoding.
_CHUNK = 1 << 22
# Byte-order marks of the other Unicode encodings (UTF-32 first: its LE mark starts
# with UTF-16's).
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE"),
               (b"\xff\xfe", "UTF-16LE"), (b"\xfe\xff", "UTF-16BE"))


def load_text(path: str | Path, *, what: str = "text file") -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark is dropped)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory; give the path of a text file") from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror}") from None
    if not data:
        raise DataError(f"{what} {path} is empty; give a file with some text in it")
    for bom, encoding in _OTHER_BOMS:
        if data.startswith(bom):
            raise DataError(f"{what} {path} is {encoding} text, not UTF-8; convert it, e.g. "
                            f"iconv -f {encoding} -t utf-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{what} {path} looks binary (NUL byte at offset {nul}); "
                        "give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what} {path} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); convert it, e.g. iconv -f latin1 -t utf-8") from None
    return text.removeprefix("\ufeff")


def _code_points(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as uint32, without a per-character loop."""
    try:
        return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    except UnicodeEncodeError as e:
        raise DataError(f"text has an unpaired surrogate at character {e.start}; "
                        "it is not valid Unicode") from None


def _escape(ch: str) -> str:
    """A character as a reader can see it in a one-line message."""
    return repr(ch)[1:-1] if not ch.isprintable() or ch in "'\\" else ch


class Vocab:
    """The characters of a text, sorted by code point; id = position in that order."""

    def __init__(self, chars: str) -> None:
        codes = _code_points(chars)
        if codes.size == 0 or np.any(np.diff(codes.astype(np.int64)) <= 0):
            raise ValueError("Vocab needs distinct characters in code-point order")
        self.chars = chars
        self._codes = codes                                   # id -> code point
        self._ids = np.full(int(codes[-1]) + 1, -1, np.int32)  # code point -> id, or -1
        self._ids[codes] = np.arange(len(codes), dtype=np.int32)
        self.dtype = np.min_scalar_type(max(len(chars) - 1, 0))

    @classmethod
    def from_text(cls, *texts: str) -> Vocab:
        seen = np.zeros(0x110000, dtype=bool)                 # one flag per code point
        for text in texts:
            for start in range(0, len(text), _CHUNK):
                seen[_code_points(text[start:start + _CHUNK])] = True
        codes = np.flatnonzero(seen).astype("<u4")
        if codes.size == 0:
            raise DataError("cannot build a vocabulary from empty text")
        return cls(codes.tobytes().decode("utf-32-le"))

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
            beyond = codes.max(initial=0) >= len(self._ids)  # past the highest known code
            if beyond or (pos := self._ids[codes]).min(initial=0) < 0:
                missing = self.unknown(text)
                shown = " ".join(_escape(c) for c in missing[:20])
                more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
                raise DataError(f"{what} has {len(missing)} character(s) not in the model's "
                                f"vocabulary: {shown}{more}")
            ids[start:start + len(codes)] = pos
        return ids

    def decode(self, ids) -> str:
        """Text of a sequence of ids (numpy array, tensor or list)."""
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
        return self._codes[ids.astype(np.int64)].astype("<u4").tobytes().decode("utf-32-le")

    def describe(self, limit: int = 12) -> str:
        """A short human-readable list of the characters."""
        head = "".join(_escape(c) for c in self.chars[:limit])
        return head + ("..." if len(self) > limit else "")


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """First ``1 - val_fraction`` for training, the rest for validation (nanoGPT's cut)."""
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]


@dataclass
class Batch:
    x: torch.Tensor   # (B, T) input ids, int64
    y: torch.Tensor   # (B, T) target ids: the next character of each input
    fresh: bool       # True: start from a zero hidden state (no carry)


class StreamBatches:
    """``batch_size`` contiguous streams of the text, read window after window.

    The ids are cut into B equal streams (B, L). Step i reads columns
    [i*T, i*T + T) of every stream as input and the next column as target, so row b
    of one window continues row b of the previous one and the model may carry its
    hidden state across. After the last whole window the epoch wraps around and the
    state starts fresh.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int) -> None:
        length = len(ids) // batch_size
        if length < seq_length + 1:
            need = batch_size * (seq_length + 1)
            raise DataError(
                f"the training text has {len(ids)} characters but stream batching with "
                f"batch_size {batch_size} and seq_length {seq_length} needs at least {need}; "
                "use a longer text or a smaller --batch-size / --seq-length")
        self.streams = torch.from_numpy(                        # (B*L,) -> (B, L)
            ids[:batch_size * length].astype(np.int64)).view(batch_size, length)
        self.seq_length = seq_length
        self.windows_per_epoch = (length - 1) // seq_length
        self.position = 0  # windows read since the start of training
        self.chars_per_epoch = len(ids)

    def next(self) -> Batch:
        i = self.position % self.windows_per_epoch
        start = i * self.seq_length
        self.position += 1
        window = self.streams[:, start:start + self.seq_length + 1]  # (B, T + 1)
        return Batch(window[:, :-1], window[:, 1:], fresh=(i == 0))

    @property
    def epoch(self) -> float:
        return self.position / self.windows_per_epoch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


class RandomBatches:
    """Windows at random offsets, each read from a zero hidden state (nanoGPT)."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int, seed: int) -> None:
        if len(ids) < seq_length + 1:
            raise DataError(
                f"the training text has {len(ids)} characters but a window of seq_length "
                f"{seq_length} needs at least {seq_length + 1}; use a longer text or a "
                "smaller --seq-length")
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0
        self.chars_per_epoch = len(ids)
        self._offsets = torch.arange(seq_length + 1)

    def next(self) -> Batch:
        starts = torch.randint(0, len(self.ids) - self.seq_length, (self.batch_size, 1),
                               generator=self.generator)
        window = self.ids[starts + self._offsets]               # (B, 1) -> (B, T + 1)
        self.position += 1
        return Batch(window[:, :-1], window[:, 1:], fresh=True)

    @property
    def epoch(self) -> float:
        return self.position * self.batch_size * self.seq_length / self.chars_per_epoch

    def state_dict(self) -> dict:
        return {"position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.generator.set_state(state["generator"])


def make_batches(ids: np.ndarray, batching: str, batch_size: int, seq_length: int,
                 seed: int) -> StreamBatches | RandomBatches:
    if batching == "stream":
        return StreamBatches(ids, batch_size, seq_length)
    return RandomBatches(ids, batch_size, seq_length, seed)
