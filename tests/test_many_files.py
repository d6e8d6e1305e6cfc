"""Several files as one text: which files folders and patterns name, in what order, the
joined ids against a hand-built concatenation, the cache, bad files among good ones, and
a run on several files resumed, or refused when one of them changed."""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pytest
import torch

from charrnn import corpus, data
from charrnn.corpus import SEPARATOR, expand_inputs, prepare_texts
from charrnn.data import Vocab
from charrnn.errors import DataError

from helpers import TINY_FLAGS, run


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def names(paths, root) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


@pytest.fixture
def tree(tmp_path):
    """A folder of text files, hidden ones, and files that are not text by their name."""
    root = tmp_path / "books"
    for name in ("b.txt", "a.txt", "A.md", "UP.TXT", "a/z.py", "a/b/c.rst", "z/y.html",
                 ".hidden.txt", ".git/config.txt", "cover.jpg", "LICENSE", "notes.csv"):
        write(root / name, f"{name}\n")
    return root


def test_a_folder_gives_its_text_files_sorted_by_path_hidden_ones_left_out(tree):
    # Sorted name by name, by code point: upper case first, a folder's files where its
    # name sorts ("a" before "a.txt").
    assert names(expand_inputs([tree]), tree) == [
        "A.md", "UP.TXT", "a/b/c.rst", "a/z.py", "a.txt", "b.txt", "z/y.html"]


def test_a_file_named_or_matched_by_a_pattern_is_read_whatever_its_name(tree, monkeypatch):
    monkeypatch.chdir(tree)
    found = expand_inputs(["LICENSE", "*.csv", ".hidden.txt", "[ab].txt", "**/*.py"])
    assert [str(p) for p in found] == ["LICENSE", "notes.csv", ".hidden.txt", "a.txt",
                                       "b.txt", "a/z.py"]


def test_a_pattern_that_matches_a_folder_takes_its_text_files(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    assert [str(p) for p in expand_inputs(["books/[az]"])] == [
        "books/a/b/c.rst", "books/a/z.py", "books/z/y.html"]


def test_a_file_named_twice_is_read_once_where_first_named(tree):
    repeats = []
    found = expand_inputs([tree / "b.txt", tree, tree / "a" / ".." / "a.txt"],
                          on_duplicate=repeats.append)
    assert names(found, tree) == ["b.txt", "A.md", "UP.TXT", "a/b/c.rst", "a/z.py", "a.txt",
                                  "z/y.html"]
    assert repeats == [tree / "b.txt", tree / "a" / ".." / "a.txt"]


def test_empty_files_in_a_folder_or_pattern_are_left_out_with_a_note(tmp_path, capsys):
    root = tmp_path / "pkg"
    write(root / "__init__.py", "")
    write(root / "mime" / "__init__.py", "")
    write(root / "mime" / "bom.py", "\ufeff")            # a byte-order mark and nothing else
    write(root / "mime" / "text.py", "x = 1\n")
    write(root / "util.py", "y = 2\n")
    empty = []
    assert names(expand_inputs([root], on_empty=empty.append), root) == [
        "mime/text.py", "util.py"]
    assert names(empty, root) == ["__init__.py", "mime/__init__.py", "mime/bom.py"]
    assert names(expand_inputs([f"{root}/**/*.py"]), root) == ["mime/text.py", "util.py"]
    code, out, err = run(["prepare", str(root), "--cache-dir", str(tmp_path / "c"), "--json"],
                         capsys)
    assert code == 0 and json.loads(out)["files"] == [str(root / "mime" / "text.py"),
                                                      str(root / "util.py")]
    code, out, err = run(["prepare", str(root), "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0 and "note: 3 empty file(s) left out: " in err
    # A file named by itself is read as named: an empty one is still an error.
    code, out, err = run(["prepare", str(root / "__init__.py")], capsys)
    assert code == 1 and "is empty" in err


def test_empty_files_of_a_validation_folder_are_left_out_with_a_note(tmp_path, capsys):
    write(tmp_path / "train.txt", "abc abc cab\n" * 300)
    write(tmp_path / "val" / "a.txt", "")
    write(tmp_path / "val" / "b.txt", "cab abc\n" * 40)
    code, _, err = run(["train", str(tmp_path / "train.txt"), "--val-file", str(tmp_path / "val"),
                        *TINY_FLAGS[:-1], "--max-steps", "2", "--out", str(tmp_path / "run")],
                       capsys)
    assert code == 0, err
    assert f"note: 1 empty validation file(s) left out: {tmp_path / 'val' / 'a.txt'}" in err


def test_a_folder_or_pattern_of_empty_files_only_is_one_line(tmp_path, capsys):
    write(tmp_path / "pkg" / "__init__.py", "")
    for arg in (tmp_path / "pkg", f"{tmp_path}/pkg/*.py"):
        code, out, err = run(["prepare", str(arg), "--cache-dir", str(tmp_path / "c")], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert "every text file of" in err and "is empty (1)" in err


def test_a_pattern_orders_its_files_as_a_folder_does_and_never_follows_folder_links(tree):
    (tree / "a" / "loop").symlink_to(tree, target_is_directory=True)    # a loop
    (tree / "linked").symlink_to(tree / "z", target_is_directory=True)
    (tree / "also.txt").symlink_to(tree / "b.txt")                      # a link to a file
    (tree / "gone.txt").symlink_to(tree / "nowhere.txt")                # a broken link
    os.mkfifo(tree / "pipe.txt")                                         # not a regular file
    from_folder = names(expand_inputs([tree]), tree)
    assert from_folder == ["A.md", "UP.TXT", "a/b/c.rst", "a/z.py", "a.txt", "also.txt",
                           "z/y.html"]
    # Through **, every file with a dot in its name: sorted as the folder's are, and the
    # same files but for the two the folder leaves out by their suffix.
    assert names(expand_inputs([f"{tree}/**/*.*"]), tree) == [
        "A.md", "UP.TXT", "a/b/c.rst", "a/z.py", "a.txt", "also.txt", "cover.jpg",
        "notes.csv", "z/y.html"]
    # A pattern's folders give their text files; a link to a folder is not one of them.
    assert names(expand_inputs([f"{tree}/*"]), tree) == [
        "A.md", "LICENSE", "UP.TXT", "a/b/c.rst", "a/z.py", "a.txt", "also.txt", "cover.jpg",
        "notes.csv", "z/y.html"]


@pytest.mark.parametrize("make, message", [
    (lambda root: write(root / "picture.jpg", "x"), "folder {root} holds no text files ("),
    (lambda root: root.mkdir(), "folder {root} holds no text files ("),
    (lambda root: None, "no text file matches {root}/*.txt; check the pattern"),
])
def test_a_folder_or_pattern_with_no_text_file_is_one_line_naming_it(tmp_path, capsys, make,
                                                                     message):
    root = tmp_path / "books"
    make(root)
    arg = str(root) if "folder" in message else f"{root}/*.txt"
    code, out, err = run(["prepare", arg, "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: " + message.format(root=root))
    assert not (tmp_path / "cache").exists()


MIXED = "Hello, world!\n春眠不觉晓，处处闻啼鸟。🙂 naïve café\t€\n"


def test_several_files_are_their_ids_joined_by_the_separator(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_BLOCK", 5)    # characters cut by block boundaries
    texts = ["first: no newline at all", MIXED * 3, "\ufeffwith a byte-order mark\n", "é"]
    paths = [tmp_path / f"{k}.txt" for k in range(len(texts))]
    for path, text in zip(paths, texts):
        write(path, text)
    joined = texts[0] + "\n\n" + texts[1] + "\n\n" + texts[2][1:] + "\n\n" + texts[3]
    facts, vocab, ids = prepare_texts(paths, tmp_path / "cache")
    assert SEPARATOR == "\n\n"
    assert vocab.chars == "".join(sorted(set(joined)))
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint8
    assert [vocab.chars[i] for i in ids] == list(joined)   # id = rank of the code point
    assert facts.chars == len(joined) and facts.size == sum(p.stat().st_size for p in paths)
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert facts.sha256 == hashlib.sha256(json.dumps(["\n\n", *hashes]).encode()).hexdigest()


def test_a_checkpoint_vocabulary_must_hold_the_separator(tmp_path):
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    write(paths[0], "abc")
    write(paths[1], "cab")
    facts, vocab, ids = prepare_texts(paths, tmp_path / "cache", vocab=Vocab("\nabcd"))
    assert list(ids) == [1, 2, 3, 0, 0, 3, 1, 2]
    with pytest.raises(DataError, match=r"1 character\(s\) that the checkpoint's vocabulary "
                                        r"lacks: \\n;"):
        prepare_texts(paths, tmp_path / "cache", vocab=Vocab("abcd"))


def test_one_file_is_read_exactly_as_before(tmp_path):
    path = tmp_path / "one.txt"
    write(path, MIXED)
    scan, vocab, ids = corpus.prepare(path, tmp_path / "before")
    facts, vocab_now, ids_now = prepare_texts([path], tmp_path / "now")
    assert facts.scans == (scan,) and facts.sha256 == scan.sha256 and facts.chars == scan.chars
    assert vocab_now == vocab and np.array_equal(ids_now, ids)
    assert os.path.basename(ids_now.filename) == os.path.basename(ids.filename)
    assert sorted(os.listdir(tmp_path / "now")) == sorted(os.listdir(tmp_path / "before"))
    assert facts.record() == {"path": str(path.resolve()), "chars": scan.chars,
                              "sha256": scan.sha256}


def prepare_json(args: list[str], capsys) -> dict:
    code, out, err = run(["prepare", *args, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_a_second_prepare_of_several_files_reads_none_of_them(tmp_path, capsys, monkeypatch):
    for name, text in (("a.txt", "alpha\n"), ("b.txt", "beta\n"), ("sub/c.md", "gamma\n")):
        write(tmp_path / "books" / name, text)
    args = [str(tmp_path / "books"), "--cache-dir", str(tmp_path / "cache")]
    first = prepare_json(args, capsys)
    joined = "alpha\n\n\nbeta\n\n\ngamma\n"
    assert first["cached"] is False and first["chars"] == len(joined)
    assert first["files"] == [str(tmp_path / "books" / n) for n in ("a.txt", "b.txt", "sub/c.md")]
    vocab = "".join(sorted(set(joined)))
    assert [vocab[i] for i in np.load(first["ids"])] == list(joined)

    reads = []
    real = corpus.text_pieces
    monkeypatch.setattr(corpus, "text_pieces", lambda *a, **k: reads.append(a) or real(*a, **k))
    second = prepare_json(args, capsys)
    assert second["cached"] is True and reads == []
    same = ("text", "files", "bytes", "chars", "vocab_size", "dtype", "sha256", "ids")
    assert [second[k] for k in same] == [first[k] for k in same]

    # A changed file: the joined ids are written again, the old ones removed.
    stat = (tmp_path / "books" / "b.txt").stat()
    write(tmp_path / "books" / "b.txt", "BETA\n")
    os.utime(tmp_path / "books" / "b.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = prepare_json(args, capsys)
    assert third["cached"] is False and third["sha256"] != first["sha256"]
    assert not os.path.exists(first["ids"]) and os.path.exists(third["ids"])


@pytest.mark.parametrize("bad, message", [
    (b"abc\x00def", "training text {path} looks binary (NUL byte at offset 3); give a UTF-8 "
                    "text file"),
    (b"caf\xe9\n", "training text {path} is not valid UTF-8 (byte 0xe9 at offset 3); "
                   "convert it, e.g. iconv -f latin1 -t utf-8"),
])
def test_a_bad_file_among_many_is_one_line_naming_it(small_text, tmp_path, capsys,
                                                     monkeypatch, bad, message):
    text = small_text.read_text(encoding="utf-8")
    books = tmp_path / "books"
    write(books / "a.txt", text[:20_000])
    (books / "b.txt").write_bytes(bad)
    write(books / "c.txt", text[20_000:40_000])
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["train", "books", *TINY_FLAGS], capsys)
    assert code == 1 and out == ""
    assert err.strip() == "error: " + message.format(path=os.path.join("books", "b.txt"))
    # No run folder; in the cache only the scan of the file read before it (the next run
    # need not read it again), nothing half written.
    leftovers = sorted(p.relative_to(tmp_path / "runs").as_posix()
                       for p in (tmp_path / "runs").rglob("*"))
    assert len(leftovers) == 2 and leftovers[0] == ".cache"
    assert re.fullmatch(r"\.cache/a-[0-9a-f]{12}\.json", leftovers[1])


def corpus_record(run_dir) -> dict:
    return torch.load(run_dir / "last.pt", weights_only=True)["corpus"]


def test_a_run_on_several_files_records_them_and_resumes_without_text(small_text, tmp_path,
                                                                      capsys, monkeypatch):
    text = small_text.read_text(encoding="utf-8")
    parts = {"books/one.txt": text[:12_000], "books/two/three.txt": text[12_000:24_000],
             "more.txt": text[24_000:36_000]}
    for name, part in parts.items():
        write(tmp_path / name, part)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", "books", "m*.txt", *TINY_FLAGS[:-1], "--max-steps", "10",
                        "--out", "run"], capsys)
    assert code == 0, err
    joined = SEPARATOR.join(parts.values())
    assert err.splitlines()[0].startswith(f"charrnn train 3 files under .: {len(joined):,} "
                                          f"characters, vocabulary {len(set(joined))}, ")
    record = corpus_record(tmp_path / "run")
    hashes = [hashlib.sha256(part.encode()).hexdigest() for part in parts.values()]
    assert record == {"paths": [str(tmp_path / name) for name in parts], "sha256s": hashes,
                      "chars": len(joined), "sha256": hashlib.sha256(json.dumps(
                          ["\n\n", *hashes]).encode()).hexdigest()}
    # The ids trained on (cached beside the run folder) are the joined text's.
    (ids_file,) = (tmp_path / ".cache").glob(f"{record['sha256'][:16]}-*.npy")
    vocab = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["vocab"]
    assert "".join(vocab[i] for i in np.load(ids_file)) == joined

    code, out, _ = run(["runs", "run", "--json"], capsys)
    (summary,) = json.loads(out)
    assert summary["corpus"] == str(tmp_path) and summary["corpus_files"] == record["paths"]
    assert summary["corpus_chars"] == len(joined)

    elsewhere = tmp_path / "elsewhere"                    # absolute paths: found from anywhere
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run(["train", "--resume", str(tmp_path / "run"), "--max-steps", "12", "-q"],
                       capsys)
    assert code == 0, err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 12


def test_a_run_on_several_files_refuses_a_changed_added_removed_or_moved_one_on_resume(
        small_text, tmp_path, capsys):
    text = small_text.read_text(encoding="utf-8")
    books = tmp_path / "books"
    write(books / "one.txt", text[:15_000])
    write(books / "two.txt", text[15_000:30_000])
    write(books / "three.txt", text[30_000:45_000])
    out = tmp_path / "run"
    code, _, err = run(["train", str(books), *TINY_FLAGS, "--max-steps", "10", "--out",
                        str(out)], capsys)
    assert code == 0, err
    before = (out / "last.pt").read_bytes()
    two = (books / "two.txt").read_bytes()

    def refused(texts: list[str], files: int, said: str) -> None:
        code, _, err = run(["train", *texts, "--resume", str(out), "--max-steps", "12", "-q"],
                           capsys)
        assert code == 1 and (out / "last.pt").read_bytes() == before
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"error: the training text ({files} files under {books}) is not "
                               f"the one {out / 'last.pt'} was trained on ({said}; ")
        assert line.endswith("; resume with that text, or pass --allow-changed-text to go on "
                             "with this one")

    with open(books / "two.txt", "a", encoding="utf-8") as f:
        f.write("one more line\n")
    refused([], 3, f"1 file(s) changed, e.g. {books / 'two.txt'}")      # TEXT from last.pt
    (books / "two.txt").write_bytes(two)
    write(books / "zz.txt", "a new file\n")
    refused([str(books)], 4, f"1 file(s) added, e.g. {books / 'zz.txt'}")
    (books / "zz.txt").unlink()
    refused([str(books / name) for name in ("two.txt", "one.txt", "three.txt")], 3,
            "the same files in another order")
    (books / "two.txt").unlink()
    refused([str(books)], 2, f"1 file(s) removed, e.g. {books / 'two.txt'}")

    code, _, err = run(["train", str(books), "--resume", str(out), "--max-steps", "12", "-q",
                        "--allow-changed-text"], capsys)
    assert code == 0, err
    assert corpus_record(out)["chars"] == 15_000 + 2 + 15_000
    assert corpus_record(out)["paths"] == [str(books / "one.txt"), str(books / "three.txt")]
