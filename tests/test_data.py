"""Loading, the vocabulary, the split and both batching modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import data
from charrnn.data import RandomBatches, StreamBatches, Vocab, load_text, split
from charrnn.errors import DataError

MIXED = "Hello, world!\n春眠不觉晓，处处闻啼鸟。🙂🚀 naïve café\t€"


def test_vocab_is_sorted_code_points_and_round_trips_cjk_and_emoji():
    vocab = Vocab.from_text(MIXED)
    assert list(vocab.chars) == sorted(set(MIXED))
    assert [ord(c) for c in vocab.chars] == sorted(ord(c) for c in set(MIXED))
    ids = vocab.encode(MIXED)
    assert ids.shape == (len(MIXED),)
    assert vocab.decode(ids) == MIXED
    assert all(vocab.char_to_ix[c] == i for i, c in vocab.ix_to_char.items())
    assert [vocab.ix_to_char[int(i)] for i in ids] == list(MIXED)


def test_vocab_ids_use_the_smallest_dtype():
    assert Vocab.from_text("abc").encode("cab").dtype == np.uint8
    wide = "".join(chr(0x4E00 + i) for i in range(300))
    assert Vocab.from_text(wide).encode(wide).dtype == np.uint16


def test_encode_is_chunked_without_changing_the_result(monkeypatch):
    text = MIXED * 50
    whole = Vocab.from_text(text).encode(text)
    monkeypatch.setattr(data, "_CHUNK", 7)
    vocab = Vocab.from_text(text)
    assert np.array_equal(vocab.encode(text), whole)
    assert vocab.decode(vocab.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_vocab_round_trips_arbitrary_unicode(text):
    vocab = Vocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text


def test_unknown_characters_are_listed():
    vocab = Vocab.from_text("abc")
    with pytest.raises(DataError, match=r"2 character\(s\) not in the model's vocabulary: x é"):
        vocab.encode("abxcé", what="the prime text")


def test_load_text_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a directory"):
        load_text(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "bin.dat").write_bytes(b"abc\x00def")
    with pytest.raises(DataError, match="NUL byte at offset 3"):
        load_text(tmp_path / "bin.dat")
    (tmp_path / "latin1.txt").write_bytes("héllo".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8 .byte 0xe9 at offset 1"):
        load_text(tmp_path / "latin1.txt")


def test_load_text_drops_a_byte_order_mark(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffhello".encode("utf-8"))
    assert load_text(tmp_path / "bom.txt") == "hello"


def test_split_keeps_the_last_tenth_for_validation():
    ids = np.arange(1000)
    train, val = split(ids, 0.1)
    assert len(train) == 900 and len(val) == 100
    assert np.array_equal(np.concatenate([train, val]), ids)


def test_stream_batches_shift_targets_and_continue_each_row():
    ids = np.arange(1000) % 251
    batches = StreamBatches(ids.astype(np.uint8), batch_size=4, seq_length=10)
    first, second = batches.next(), batches.next()
    assert first.x.shape == first.y.shape == (4, 10)
    assert first.x.dtype == torch.int64
    assert first.fresh and not second.fresh
    assert torch.equal(first.x[:, 1:], first.y[:, :-1])
    # Row b of the second window starts where row b of the first one ended.
    assert torch.equal(second.x[:, 0], first.y[:, -1])
    # Rows are contiguous slices of the text, one per stream of length 250.
    expected = torch.from_numpy(np.stack([ids[b * 250:b * 250 + 10] for b in range(4)]))
    assert torch.equal(first.x, expected)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(20, 400), batch=st.integers(1, 5), seq=st.integers(1, 9))
def test_stream_windows_cover_each_stream_once_without_overlap(n, batch, seq):
    if n // batch < seq + 1:
        return
    ids = np.arange(n, dtype=np.int64)
    batches = StreamBatches(ids, batch, seq)
    seen = torch.cat([batches.next().x for _ in range(batches.steps_per_epoch)], dim=1)
    length = n // batch
    for b in range(batch):
        row = seen[b].tolist()
        assert row == list(range(b * length, b * length + len(row)))  # in order, no overlap
        assert length - 1 - len(row) < seq                              # nothing skipped
    assert batches.next().fresh  # the next epoch starts from a fresh state


def test_stream_batches_refuse_a_text_too_short_for_one_window():
    with pytest.raises(DataError, match="needs at least 33"):
        StreamBatches(np.zeros(20, dtype=np.uint8), batch_size=3, seq_length=10)


def test_random_batches_are_reproducible_and_resumable():
    ids = (np.arange(5000) % 97).astype(np.uint8)
    a, b = RandomBatches(ids, 4, 16, seed=3), RandomBatches(ids, 4, 16, seed=3)
    batch = a.next()
    assert batch.fresh and batch.x.shape == (4, 16)
    assert torch.equal(batch.x[:, 1:], batch.y[:, :-1])
    assert torch.equal(batch.x, b.next().x)
    state = a.state_dict()
    expected = a.next().x
    c = RandomBatches(ids, 4, 16, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.next().x, expected)
