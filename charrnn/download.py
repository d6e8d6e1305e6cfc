"""Known corpora: where each one lives on the web, its sha256, and fetching it safely.

    charrnn download tinyshakespeare            -> data/tinyshakespeare.txt
    charrnn train tinyshakespeare               (reads data/tinyshakespeare.txt, or the
                                                 copy that ships with charrnn)

A download streams into a temporary file beside the target while hashing it, checks
the sha256 against the registry and only then renames the file into place, so a
broken connection or a changed upstream file never leaves a wrong corpus behind.
Only the standard library is used (``urllib``); ``--url`` points at a mirror, or at a
``file://`` URL, and the sha256 is checked all the same. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import hashlib
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from charrnn.errors import CharRNNError
from charrnn.files import atomic_write

DEFAULT_DIR = Path("data")  # where `download` puts corpora and `train NAME` looks for them
MIN_BYTES_PER_S = 1024   # slower than this for a whole --timeout: the download has stalled
_BLOCK = 1 << 16            # bytes read per network call


@dataclass(frozen=True)
class Corpus:
    name: str
    url: str
    sha256: str
    filename: str
    size: int          # bytes
    about: str         # one line for listings


CORPORA: dict[str, Corpus] = {c.name: c for c in (
    Corpus(name="tinyshakespeare",
           url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
               "tinyshakespeare/input.txt",
           sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
           filename="tinyshakespeare.txt", size=1_115_394,
           about="40,000 lines of Shakespeare's plays (Karpathy's char-rnn), 65 characters"),
)}


@dataclass
class Downloaded:
    path: Path
    fetched: bool      # False: the file was already there with the right sha256
    size: int
    sha256: str


def corpus(name: str) -> Corpus:
    """The registry entry for ``name``; an unknown name suggests the nearest one."""
    if name in CORPORA:
        return CORPORA[name]
    close = difflib.get_close_matches(name.lower(), list(CORPORA), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(CORPORA)}"
    raise CharRNNError(f"unknown corpus '{name}'; {hint}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled(name: str) -> Path | None:
    """The copy of corpus ``name`` that ships with charrnn, if there is one: in
    ``charrnn/corpora/`` of an installed package, or in ``data/`` of a source checkout."""
    if name not in CORPORA:
        return None
    package = Path(__file__).resolve().parent
    for folder in (package / "corpora", package.parent / "data"):
        path = folder / CORPORA[name].filename
        if path.is_file() and path.stat().st_size == CORPORA[name].size:
            return path
    return None


def resolve_text(text: str | Path, folder: str | Path = DEFAULT_DIR) -> Path:
    """``text`` as a path, or, when no such file exists and it is a known corpus name,
    the downloaded copy of that corpus in ``folder``, else the copy shipped with charrnn."""
    path = Path(text)
    name = str(text)
    if path.exists():
        return path
    if name not in CORPORA:
        close = difflib.get_close_matches(name, list(CORPORA), n=1, cutoff=0.8)
        if close and not path.suffix and len(path.parts) == 1:
            raise CharRNNError(f"{name} is neither a file nor a known corpus; did you mean "
                               f"'{close[0]}'?")
        return path
    local = Path(folder) / CORPORA[name].filename
    if local.is_file():
        return local
    shipped = bundled(name)
    if shipped is not None:
        return shipped
    raise CharRNNError(f"'{name}' is a known corpus but {local} is not there yet; fetch it "
                       f"with: charrnn download {name}")


def download(name: str, folder: str | Path = DEFAULT_DIR, *, url: str | None = None,
             force: bool = False, timeout: float = 30.0, progress: bool = False
             ) -> Downloaded:
    """Fetch corpus ``name`` into ``folder`` (from ``url`` if given) and verify its sha256.

    A file already in place with the right sha256 is kept as it is; one with another
    sha256 is replaced only with ``force``.
    """
    entry = corpus(name)
    folder = Path(folder)
    target = folder / entry.filename
    if target.is_dir():
        raise CharRNNError(f"{target} is a folder; choose another place with --to")
    if target.is_file():
        have = sha256_of(target)
        if have == entry.sha256:
            return Downloaded(target, False, target.stat().st_size, have)
        if not force:
            raise CharRNNError(f"{target} exists with another sha256 ({have[:12]}...); keep it "
                               "and choose another folder with --to, or replace it with --force")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharRNNError(f"cannot write to {folder}: {e.strerror}; choose another folder "
                           "with --to") from None
    source = url or entry.url
    # Renamed into place only when the whole file came and its sha256 is right.
    with atomic_write(target, fix="choose another folder with --to") as out:
        size, digest = _fetch(source, out, timeout=timeout, progress=progress,
                              expected_size=entry.size, target=target)
        if digest != entry.sha256:
            raise CharRNNError(
                f"{source} sent {size:,} bytes with sha256 {digest[:12]}..., not the expected "
                f"{entry.sha256[:12]}... for {name}; nothing was saved (the file upstream "
                "changed, or the download was damaged)")
    return Downloaded(target, True, size, digest)


def _fetch(url: str, out, *, timeout: float, progress: bool, expected_size: int,
           target: Path) -> tuple[int, str]:
    """Stream ``url`` into the open file ``out``; returns (bytes, sha256 hex)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise CharRNNError(f"cannot download '{url}': give an http://, https:// or file:// URL")
    where = urllib.parse.urlsplit(url).hostname or url
    by_hand = f"or fetch {url} another way and save it as {target}"
    request = urllib.request.Request(url, headers={"User-Agent": "charrnn"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise CharRNNError(f"{url} answered HTTP {e.code} {e.reason}; check the URL, "
                           f"{by_hand}") from None
    except urllib.error.URLError as e:
        if scheme == "file":
            raise CharRNNError(f"cannot read {url}: {_reason(e.reason)}") from None
        raise CharRNNError(f"cannot reach {where} ({_reason(e.reason)}); check the network "
                           f"connection, {by_hand}") from None
    except (TimeoutError, socket.timeout):
        raise CharRNNError(f"cannot reach {where} (no answer in {timeout:g}s); check the "
                           f"network connection, {by_hand}") from None
    except (OSError, ValueError) as e:
        raise CharRNNError(f"cannot download {url}: {_reason(e)}") from None
    from charrnn.progress import bar as progress_bar

    digest, size = hashlib.sha256(), 0
    total = response.headers.get("Content-Length") if response.headers else None
    with response, progress_bar(progress, total=int(total) if total and total.isdigit()
                                else expected_size, unit="B", unit_scale=True, leave=False,
                                delay=0.5, desc=target.name) as bar:
        window_start, window_bytes = time.monotonic(), 0
        while True:
            try:
                block = response.read1(_BLOCK)       # whatever has come, without waiting
            except (OSError, ValueError) as e:       # for a whole block
                raise CharRNNError(f"the download from {where} broke off after {size:,} bytes "
                                   f"({_reason(e)}); try again") from None
            if not block:
                break
            window_bytes += len(block)
            if time.monotonic() - window_start > timeout:   # a server that trickles
                if window_bytes < MIN_BYTES_PER_S * timeout:
                    raise CharRNNError(f"{where} sent only {window_bytes:,} bytes in the last "
                                       f"{timeout:g}s; try again later, {by_hand}")
                window_start, window_bytes = time.monotonic(), 0
            if size + len(block) > expected_size:
                raise CharRNNError(f"{where} sent more than the {expected_size:,} bytes of this "
                                   f"corpus; nothing was saved, {by_hand}")
            out.write(block)
            digest.update(block)
            size += len(block)
            bar.update(len(block))
    return size, digest.hexdigest()


def _reason(reason: object) -> str:
    """A short, one-line reason from whatever urllib raised."""
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = str(reason).strip().splitlines()
    return text[0] if text else type(reason).__name__
