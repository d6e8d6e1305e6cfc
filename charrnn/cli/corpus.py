"""``charrnn download`` and ``charrnn prepare``: a known corpus fetched and checked, and a
text encoded once into the cache that training reads (``charrnn.download``,
``charrnn.corpus``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn.cli.common import err, text_files
from charrnn.cli.options import Json, Quiet, complete_corpus, sample_runs_dir
from charrnn.errors import ConfigError


def download(
    name: Annotated[str, typer.Argument(
        help="Corpus to fetch: tinyshakespeare.", autocompletion=complete_corpus,
        show_default=False)],
    to: Annotated[Path, typer.Option(
        "--to", help="Folder to save it in; `charrnn train NAME` looks in data/.")]
        = Path("data"),
    url: Annotated[Optional[str], typer.Option(
        help="Fetch from this URL instead (a mirror, or file://); the sha256 is still "
             "checked.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a file of the same name whose sha256 differs.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 30.0,
    quiet: Quiet = False,
) -> None:
    """Fetch a known corpus and verify its sha256; print the file's path on stdout."""
    from charrnn.download import corpus, download as fetch

    entry = corpus(name)
    if not 0 < timeout <= 3600:
        raise ConfigError(f"--timeout must be greater than 0 and at most 3600 seconds, got "
                          f"{timeout:g}")
    if not quiet:
        err.print(Text(f"{entry.name}: {entry.about}"))
    result = fetch(name, to, url=url, force=force, timeout=timeout, progress=not quiet)
    if not quiet:
        err.print(Text(f"downloaded {result.size:,} bytes from {url or entry.url}; sha256 "
                       "verified" if result.fetched else
                       f"{result.path} is already there; sha256 verified"))
    print(result.path)


def prepare(
    text: Annotated[list[Path], typer.Argument(
        metavar="TEXT", help="UTF-8 text files, folders or quoted patterns to encode ahead "
        "of training, read as one text as train reads them.", show_default=False)],
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Folder for the cache; train uses .cache/ beside its run folder, "
        "which is this default for runs under --runs-dir \\[default: .cache/ in "
        "CHARRNN_RUNS_DIR, else runs/.cache].", show_default=False)] = None,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Scan and encode TEXT once into a memory-mapped cache, so that training on it
    (however large) starts at once and reads it without loading it into memory."""
    from charrnn.corpus import ReadingBar, prepare_texts

    paths = text_files(text, quiet or as_json)
    start = time.perf_counter()
    stages: set[str] = set()  # the passes that had to read the file: scan, encode

    def count(stage: str, nbytes: int) -> None:
        stages.add(stage)
        bar.update(stage, nbytes)

    with ReadingBar(not quiet and not as_json, paths) as bar:
        texts, vocab, ids = prepare_texts(paths, cache_dir or sample_runs_dir() / ".cache",
                                          on_read=count)
    seconds = time.perf_counter() - start
    ids_path = Path(ids.filename)
    if ids_path.is_relative_to(Path.cwd()):
        ids_path = ids_path.relative_to(Path.cwd())
    result = {"text": texts.label, "files": [str(p) for p in paths], "bytes": texts.size,
              "chars": texts.chars, "vocab_size": len(vocab), "dtype": str(ids.dtype),
              "sha256": texts.sha256, "ids": str(ids_path), "cached": "encode" not in stages,
              "seconds": round(seconds, 3),
              "mb_per_s": round(texts.size / 1e6 / seconds, 1) if stages else None}
    if as_json:
        print(json.dumps(result))
        return
    if not quiet:
        how = ("already cached, unchanged" if not stages else
               "checked again, content unchanged" if "encode" not in stages else
               f"encoded in {seconds:.2f}s, {result['mb_per_s']:,} MB/s")
        err.print(Text(f"{texts.label}: {texts.chars:,} characters, {len(vocab)} distinct, "
                       f"{ids.dtype} ids ({how})"))
    print(ids_path)

