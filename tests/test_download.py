"""`charrnn download`: fetch, verify, place atomically, and say clearly what went wrong.

No test touches the internet: the "server" is http.server on 127.0.0.1 in a thread,
or a file:// URL.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from charrnn.download import CORPORA, resolve_text

from helpers import run

NAME = "tinyshakespeare"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on the test's stderr
        pass


@pytest.fixture
def server(shakespeare, tmp_path):
    """An HTTP server on 127.0.0.1 serving input.txt (the corpus) and wrong.txt."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "input.txt").write_bytes(shakespeare.read_bytes())
    (root / "wrong.txt").write_bytes(shakespeare.read_bytes()[:-1] + b"?")
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_registry_holds_the_corpus_sha256(shakespeare):
    entry = CORPORA[NAME]
    data = shakespeare.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size
    assert entry.url.startswith("https://") and entry.url.endswith("/input.txt")


def test_download_over_http_verifies_and_prints_the_path(server, shakespeare, tmp_path, capsys):
    to = tmp_path / "data"
    code, out, err = run(["download", NAME, "--to", str(to), "--url", f"{server}/input.txt"],
                         capsys)
    assert code == 0, err
    target = to / "tinyshakespeare.txt"
    assert out == f"{target}\n"
    assert target.read_bytes() == shakespeare.read_bytes()
    assert "sha256 verified" in err and "1,115,394 bytes" in err
    assert sorted(p.name for p in to.iterdir()) == ["tinyshakespeare.txt"]   # no .part left


def test_a_verified_file_is_not_fetched_again(server, tmp_path, closed_port, capsys):
    to = tmp_path / "data"
    assert run(["download", NAME, "--to", str(to), "--url", f"{server}/input.txt", "-q"],
               capsys)[0] == 0
    code, out, err = run(["download", NAME, "--to", str(to), "-q",
                          "--url", f"http://127.0.0.1:{closed_port}/input.txt"], capsys)
    assert code == 0 and out == f"{to / 'tinyshakespeare.txt'}\n" and err == ""
    code, _, err = run(["download", NAME, "--to", str(to),
                        "--url", f"http://127.0.0.1:{closed_port}/input.txt"], capsys)
    assert code == 0 and "already there" in err


def test_a_file_url_works(shakespeare, tmp_path, capsys):
    code, out, _ = run(["download", NAME, "--to", str(tmp_path), "-q",
                        "--url", shakespeare.resolve().as_uri()], capsys)
    assert code == 0 and (tmp_path / "tinyshakespeare.txt").is_file()


def test_a_wrong_sha256_saves_nothing(server, tmp_path, capsys):
    to = tmp_path / "data"
    code, out, err = run(["download", NAME, "--to", str(to), "--url", f"{server}/wrong.txt"],
                         capsys)
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not the expected 86c4e6aa9db7" in last
    assert "nothing was saved" in last
    assert list(to.iterdir()) == []


@pytest.mark.parametrize("make_url, expected", [
    (lambda server, port: f"{server}/missing.txt", "answered HTTP 404"),
    (lambda server, port: f"http://127.0.0.1:{port}/input.txt",
     "cannot reach 127.0.0.1 (Connection refused); check the network connection"),
    (lambda server, port: "file:///no/such/corpus.txt", "cannot read file:///no/such/corpus.txt"),
    (lambda server, port: "ftp://example.org/input.txt",
     "give an http://, https:// or file:// URL"),
])
def test_unreachable_sources_are_one_line_errors(server, closed_port, tmp_path, capsys,
                                                 make_url, expected):
    to = tmp_path / "data"
    code, out, err = run(["download", NAME, "--to", str(to), "-q",
                          "--url", make_url(server, closed_port)], capsys)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not (to / "tinyshakespeare.txt").exists()
    assert not to.exists() or [p for p in to.iterdir()] == []


def test_a_different_file_in_the_way_needs_force(server, tmp_path, capsys):
    (tmp_path / "tinyshakespeare.txt").write_text("my own notes", encoding="utf-8")
    argv = ["download", NAME, "--to", str(tmp_path), "--url", f"{server}/input.txt", "-q"]
    code, _, err = run(argv, capsys)
    assert code == 1 and "exists with another sha256" in err and "--force" in err
    assert (tmp_path / "tinyshakespeare.txt").read_text(encoding="utf-8") == "my own notes"
    code, _, _ = run(argv + ["--force"], capsys)
    assert code == 0
    assert hashlib.sha256((tmp_path / "tinyshakespeare.txt").read_bytes()).hexdigest() == \
        CORPORA[NAME].sha256


def test_unknown_names_and_bad_folders(tmp_path, capsys):
    code, _, err = run(["download", "tinyshakespear"], capsys)
    assert code == 1 and "unknown corpus 'tinyshakespear'; did you mean 'tinyshakespeare'" in err
    code, _, err = run(["download", "linux"], capsys)
    assert code == 1 and "known: tinyshakespeare" in err
    (tmp_path / "file").write_text("x", encoding="utf-8")
    code, _, err = run(["download", NAME, "--to", str(tmp_path / "file"), "-q",
                        "--url", "file:///dev/null"], capsys)
    assert code == 1 and "cannot write to" in err and "--to" in err
    code, _, err = run(["download", NAME, "--timeout", "0"], capsys)
    assert code == 1 and "--timeout must be greater than 0" in err


def test_the_shipped_corpus_is_the_classic_file(shakespeare):
    data = shakespeare.read_bytes()
    assert hashlib.sha256(data).hexdigest() == CORPORA[NAME].sha256
    assert CORPORA[NAME].sha256.startswith("86c4e6aa9db7c042")
    assert len(data.decode("utf-8")) == len(data) == CORPORA[NAME].size == 1_115_394


def test_train_reads_a_corpus_by_name_shipped_or_downloaded(shakespeare, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                          # an empty folder: no data/ here
    small = ["--hidden-size", "16", "--embedding-dim", "8", "--num-layers", "1",
             "--max-steps", "2", "--eval-every", "2", "--sample-every", "0",
             "--batch-size", "4", "--seq-length", "16", "--val-fraction", "0.001",
             "--device", "cpu", "-q", "--json"]
    from charrnn import download as download_module
    from charrnn.runs import summarize

    # The copy that ships with charrnn: the very file in the project's data/ folder.
    shipped = download_module.bundled(NAME)
    assert shipped is not None and shipped.read_bytes() == shakespeare.read_bytes()
    code, out, err = run(["train", NAME, *small, "--out", "runs/shipped"], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 2
    assert summarize(tmp_path / "runs" / "shipped").corpus == str(shipped)

    # Without a shipped copy, the name asks for a download.
    monkeypatch.setattr(download_module, "bundled", lambda name: None)
    code, out, err = run(["train", NAME, *small], capsys)
    assert code == 1 and out == ""
    assert "is a known corpus but data/tinyshakespeare.txt is not there yet" in err
    assert "charrnn download tinyshakespeare" in err

    code, _, err = run(["train", "tinyshakespear", *small], capsys)
    assert code == 1 and "did you mean 'tinyshakespeare'" in err
    # A downloaded copy in ./data/ comes first.
    assert run(["download", NAME, "-q", "--url", shakespeare.resolve().as_uri()], capsys)[0] == 0
    assert resolve_text(NAME) == Path("data", "tinyshakespeare.txt")
    code, out, err = run(["train", NAME, *small, "--out", "runs/named"], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 2
    # (checkpoints name the text by its absolute path: a resume finds it from anywhere)
    assert summarize(tmp_path / "runs" / "named").corpus == str(
        (tmp_path / "data" / "tinyshakespeare.txt").resolve())


class _Trickle(http.server.BaseHTTPRequestHandler):
    """/slow: a byte every 0.2 s, for ever; /huge: more bytes than the corpus has."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            if self.path == "/slow":
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    threading.Event().wait(0.2)
            else:
                for _ in range(40):
                    self.wfile.write(b"y" * 65536)
        except OSError:          # the client gave up: as it should
            pass


@pytest.mark.parametrize("path, expected", [
    ("/slow", "sent only"), ("/huge", "sent more than the 1,115,394 bytes of this corpus")])
def test_a_trickling_or_endless_server_is_given_up_on(path, expected, tmp_path, capsys):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        to = tmp_path / "data"
        code, out, err = run(["download", NAME, "--to", str(to), "-q", "--timeout", "1",
                              "--url", f"http://127.0.0.1:{httpd.server_address[1]}{path}"],
                             capsys)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert code == 1 and out == "" and expected in err and len(err.strip().splitlines()) == 1
    assert not to.exists() or list(to.iterdir()) == []      # no partial file
