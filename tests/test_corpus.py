"""The streaming reader and the encoded-corpus cache: same ids as encoding in memory,
reused while the file is unchanged, rebuilt when it changes, errors at the right offset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import corpus, data
from charrnn.cli import main
from charrnn.data import Piece, StreamBatches, Vocab, load_text, text_pieces
from charrnn.errors import CharRNNError, DataError

MIXED = "Hello, world!\n春眠不觉晓，处处闻啼鸟。🙂🚀 naïve café\t€\n" * 40


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 7 bytes: characters are cut by block boundaries all the time."""
    monkeypatch.setattr(data, "_BLOCK", 7)


def write(path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


WIDE = "".join(chr(0x4E00 + i) for i in range(300)) + "abc\n"  # uint16 ids


@pytest.mark.parametrize("text", [MIXED, "plain ascii only\n" * 30, "é" * 50, "ab🙂" * 9, WIDE])
def test_prepared_ids_equal_encoding_in_memory(tmp_path, small_blocks, text):
    path = tmp_path / "t.txt"
    write(path, text)
    scan, vocab, ids = corpus.prepare(path, tmp_path / "cache")
    assert scan.chars == len(text) and scan.vocab == "".join(sorted(set(text)))
    assert vocab == Vocab.from_text(text)
    assert isinstance(ids, np.memmap) and ids.dtype == vocab.dtype
    assert np.array_equal(ids, vocab.encode(text))
    assert load_text(path) == text


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1).filter(lambda t: "\x00" not in t and not t.startswith("\ufeff")),
       st.integers(1, 9))
def test_streaming_matches_in_memory_for_any_text_and_block_size(tmp_path_factory, text, block):
    folder = tmp_path_factory.mktemp("c")
    path = folder / "t.txt"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    old, data._BLOCK = data._BLOCK, block
    try:
        if any(0xD800 <= ord(c) <= 0xDFFF for c in text):   # not encodable as UTF-8
            with pytest.raises(DataError, match="not valid UTF-8"):
                corpus.prepare(path, folder / "cache")
            return
        scan, vocab, ids = corpus.prepare(path, folder / "cache")
    finally:
        data._BLOCK = old
    assert vocab.decode(ids) == text and scan.chars == len(text)


@pytest.mark.parametrize("raw, shown", [(b"abz", "z"), ("ab\u00e9".encode(), "\u00e9"),
                                        ("a\u6625b".encode(), "\u6625")])
def test_encoding_a_piece_names_the_unknown_characters(raw, shown):
    text = None if raw.isascii() else raw.decode("utf-8")
    for vocab in (Vocab("ab"), Vocab("ab" + WIDE[:300])):          # byte table, code points
        with pytest.raises(DataError, match=f"1 character\\(s\\) not in the model's "
                                            f"vocabulary: {shown}$"):
            vocab.encode_piece(Piece(raw, text))


def test_a_byte_order_mark_is_not_a_character(tmp_path, small_blocks):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfabc")
    scan, vocab, ids = corpus.prepare(path, tmp_path / "cache")
    assert vocab.chars == "abc" and vocab.decode(ids) == "abc" and scan.chars == 3


@pytest.mark.parametrize("content, offset", [
    (b"abcdefghij\xe9klm", 10),          # Latin-1 byte in the second block
    (b"abcde\xe6\x98", 5),               # a character cut off by the end of the file
    (b"abcdef\xe6\x98Z", 6),             # a lead byte without its continuation
])
def test_invalid_utf8_is_reported_at_its_offset_across_blocks(tmp_path, small_blocks,
                                                              content, offset):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"not valid UTF-8 \(byte 0x[0-9a-f]{{2}} at offset "
                                        rf"{offset}\)"):
        list(text_pieces(path))


def test_a_nul_byte_in_a_later_block_names_its_offset(tmp_path, small_blocks):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"abcdefghijklmnop\x00q")
    with pytest.raises(DataError, match="NUL byte at offset 16"):
        corpus.scan_text(path)


def test_unchanged_file_reuses_the_cache_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    write(path, MIXED)
    first = corpus.prepare(path, tmp_path / "cache")
    reads = []
    monkeypatch.setattr(corpus, "text_pieces", lambda *a, **k: reads.append(1) or iter(()))
    again = corpus.prepare(path, tmp_path / "cache")
    assert reads == [] and again[0] == first[0] and np.array_equal(again[2], first[2])


def test_touched_file_is_rescanned_but_not_re_encoded(tmp_path):
    path = tmp_path / "t.txt"
    write(path, MIXED)
    cache = tmp_path / "cache"
    _, _, ids = corpus.prepare(path, cache)
    written = os.stat(ids.filename).st_mtime_ns
    os.utime(path, ns=(written + 10**9, written + 10**9))
    scan, _, again = corpus.prepare(path, cache)
    assert scan.mtime_ns == written + 10**9                 # the scan was redone
    assert again.filename == ids.filename and os.stat(again.filename).st_mtime_ns == written


def test_changed_file_is_re_encoded_and_the_old_ids_removed(tmp_path):
    path = tmp_path / "t.txt"
    write(path, "aaaa bbbb\n" * 20)
    cache = tmp_path / "cache"
    _, _, old = corpus.prepare(path, cache)
    stat = path.stat()
    write(path, "abab baba\n" * 20)                           # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _, vocab, new = corpus.prepare(path, cache)
    assert vocab.decode(new) == "abab baba\n" * 20
    assert new.filename != old.filename and not os.path.exists(old.filename)


def test_damaged_cache_files_are_rebuilt(tmp_path):
    path = tmp_path / "t.txt"
    write(path, MIXED)
    cache = tmp_path / "cache"
    _, _, ids = corpus.prepare(path, cache)
    (scan_file,) = cache.glob("*.json")
    scan_file.write_text("{not json", encoding="utf-8")
    with open(ids.filename, "r+b") as f:                      # truncate the ids
        f.truncate(100)
    _, vocab, again = corpus.prepare(path, cache)
    assert vocab.decode(again) == MIXED
    assert json.loads(scan_file.read_text(encoding="utf-8"))["chars"] == len(MIXED)


def test_cached_ids_of_another_width_are_rebuilt(tmp_path):
    path = tmp_path / "t.txt"
    write(path, MIXED)
    cache = tmp_path / "cache"
    _, vocab, ids = corpus.prepare(path, cache)
    assert ids.dtype == np.uint8
    np.save(ids.filename, np.asarray(ids).astype(np.uint16))   # same name, same length
    _, _, again = corpus.prepare(path, cache)
    assert again.dtype == np.uint8 and vocab.decode(again) == MIXED


def test_a_checkpoint_vocabulary_encodes_a_text_that_uses_part_of_it(tmp_path):
    path = tmp_path / "t.txt"
    write(path, "cab")
    wider = Vocab("abcdxyz")
    _, vocab, ids = corpus.prepare(path, tmp_path / "cache", vocab=wider)
    assert vocab is wider and list(ids) == [2, 0, 1]
    write(path, "caqb")
    with pytest.raises(DataError, match=r"1 character\(s\) that the checkpoint's vocabulary "
                                        r"lacks: q;"):
        corpus.prepare(path, tmp_path / "cache", vocab=wider)


def test_an_unwritable_cache_is_one_clear_error_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "t.txt"
    write(path, MIXED)
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(CharRNNError, match=r"cannot write the corpus cache .*--cache-dir"):
        corpus.prepare(path, blocker / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "t.txt"]


def test_stream_batches_read_a_memory_map_without_copying_it(tmp_path):
    path = tmp_path / "t.txt"
    write(path, MIXED)
    _, vocab, ids = corpus.prepare(path, tmp_path / "cache")
    batches = StreamBatches(ids, batch_size=4, seq_length=16)
    assert np.shares_memory(batches.streams, ids)             # a view, not a copy
    batch = batches.next()
    assert vocab.decode(batch.x[0]) == MIXED[:16]


def test_prepare_command_prints_the_ids_path_and_reports_the_cache(tmp_path, capsys):
    path = tmp_path / "t.txt"
    write(path, MIXED)
    args = ["prepare", str(path), "--cache-dir", str(tmp_path / "cache"), "--json"]
    for cached in (False, True):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 0
        report = json.loads(capsys.readouterr().out)
        assert report["cached"] is cached and report["chars"] == len(MIXED)
        assert report["vocab_size"] == len(set(MIXED)) and report["dtype"] == "uint8"
        assert np.load(report["ids"], mmap_mode="r").shape == (len(MIXED),)


def distinct_chars(n: int) -> list[int]:
    """The first ``n`` code points a text file can hold (no NUL, surrogate or BOM), in
    order: past 65,535 of them they run into the 4-byte UTF-8 planes."""
    codes = (c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF and c != 0xFEFF)
    return [next(codes) for _ in range(n)]


@pytest.mark.parametrize("size, dtype", [(255, np.uint8), (256, np.uint8), (257, np.uint16),
                                         (65_535, np.uint16), (65_536, np.uint16),
                                         (65_537, np.uint32)])
def test_ids_at_the_width_boundaries_round_trip_through_the_cache(tmp_path, size, dtype):
    codes = np.array(distinct_chars(size))
    rng = np.random.default_rng(size)
    order = np.concatenate([rng.permutation(size), rng.permutation(size)])  # each twice
    text = "".join(map(chr, codes[order]))
    path = tmp_path / "wide.txt"
    write(path, text)
    expected = order                     # id = rank of the code point, and codes is sorted

    scan, vocab, ids = corpus.prepare(path, tmp_path / "cache")
    assert len(vocab) == size and ids.dtype == dtype
    assert np.array_equal(ids, expected)
    assert vocab.decode(ids) == text
    assert np.array_equal(vocab.encode(text), expected) and vocab.encode(text).dtype == dtype
    # From the cache, in a new pass: the .npy file holds the same ids at the same width.
    _, _, again = corpus.prepare(path, tmp_path / "cache")
    stored = np.load(next((tmp_path / "cache").glob("*.npy")))
    assert again.dtype == stored.dtype == dtype
    assert np.array_equal(stored, expected) and vocab.decode(again) == text


def test_a_cached_scan_reads_the_file_named_now_not_the_name_it_was_scanned_under(
        tmp_path, monkeypatch):
    """A cache shared by runs started in different folders: the same file named
    ``small.txt`` from one and ``../a/small.txt`` from another is encoded from the file
    named now, even when the old name means another file from here."""
    from charrnn.corpus import prepare

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "small.txt").write_text("the text in a\n", encoding="utf-8")
    (tmp_path / "b" / "small.txt").write_text("another text, in b\n", encoding="utf-8")
    cache = tmp_path / "cache"
    monkeypatch.chdir(tmp_path / "a")
    scan, _, _ = prepare("small.txt", cache)
    monkeypatch.chdir(tmp_path / "b")
    again, vocab, ids = prepare("../a/small.txt", cache, vocab=Vocab("\n ,abehinortx"))
    assert again.sha256 == scan.sha256 and again.path == "../a/small.txt"
    assert "".join(vocab.chars[i] for i in ids) == "the text in a\n"


def test_prepare_fills_the_cache_the_runs_under_charrnn_runs_dir_read(small_text, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARRNN_RUNS_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(SystemExit) as done:
        main(["prepare", str(small_text), "--json"])
    assert done.value.code == 0
    ids = Path(json.loads(capsys.readouterr().out)["ids"])
    assert ids.parent.resolve() == tmp_path / "elsewhere" / ".cache" and ids.is_file()
    assert not (tmp_path / "runs").exists()
