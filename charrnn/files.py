"""Files on disk: the layout of a run folder, its text files, and writes never half done.

A run folder holds ``config.toml`` (the resolved settings), ``metrics.csv`` (one row per
evaluation), ``best.pt`` (lowest validation loss) and ``last.pt`` (latest state, enough
to resume exactly), and with ``--save-every N`` numbered checkpoints ``step-N.pt`` (the
state at step N, as self-contained as last.pt; ``--keep K`` keeps the newest K). Every
file charrnn writes (checkpoints, metrics, corpus caches, downloads, plots) goes through
``atomic_write``: a crash at any moment leaves the old file or the new one, whole.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import math
import os
import re
import secrets
import shutil
import tomllib
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from charrnn.errors import CharRNNError, ConfigError

CONFIG, METRICS, BEST, LAST = "config.toml", "metrics.csv", "best.pt", "last.pt"
RESULTS = (BEST, LAST, METRICS)     # what a run has written once it has saved
RUN_FILES = (CONFIG, *RESULTS)      # any of them makes a folder a run folder
EVENTS = "events.out.tfevents.*"    # what --tensorboard writes beside them
NUMBERED = re.compile(r"step-([1-9][0-9]*)\.pt")   # step-N.pt: the state at step N
METRICS_FIELDS = ("step", "elapsed_s", "epoch", "lr", "train_loss", "val_loss", "val_bpc",
                  "chars_per_s")


@contextlib.contextmanager
def atomic_write(target: str | Path, *, fix: str, what: str = "",
                 error: type[CharRNNError] = CharRNNError) -> Iterator[IO[bytes]]:
    """A binary file to write ``target`` through: a temporary file beside it, flushed to
    disk and renamed over ``target`` when the block ends without an exception (the
    folder's entry is synced too); removed otherwise. An ``OSError`` becomes one line,
    ``error("cannot write {what}{target}: {reason}; {fix}")``."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")  # one per writer
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):     # a replaced file keeps its mode
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except OSError as e:
        raise error(f"cannot write {what}{target}: {e.strerror or e}; {fix}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def check_output(path: str | Path, flag: str) -> Path:
    """``path``, if an output option (``flag``) may write there: not a folder, in a
    folder that exists, and not a run's own file (a checkpoint, its config.toml or
    metrics.csv), which no output ever replaces."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {flag} {path}: it is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise ConfigError(f"cannot write {flag} {path}: it is a device or a pipe, which the "
                          "new file would replace; give the name of a regular file")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {flag} {path}: the folder {path.parent} does not "
                          "exist; create it or write elsewhere")
    real = path.resolve()      # through links: a link to a checkpoint is a checkpoint
    # A run's file, or one a run in that folder may write later (a step-N.pt to come).
    if (real.exists() and (real.suffix == ".pt" or real.name in RUN_FILES
                           or holds_checkpoint(real))) or (
            is_run_file(real.name) and real.parent.is_dir() and is_run(real.parent)):
        kind = "checkpoint" if real.suffix == ".pt" or holds_checkpoint(real) else real.name
        raise ConfigError(f"cannot write {flag} {path}: it would replace a run's {kind}; "
                          "choose another file name")
    return path


def holds_checkpoint(path: Path) -> bool:
    """Whether the file at ``path``, whatever its name, is what ``torch.save`` writes: a
    zip archive with a ``data.pkl`` and no ``code/`` (which a TorchScript export has)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError, EOFError):
        return False
    return (any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)
            and not is_torchscript(names))


def is_torchscript(names: list[str]) -> bool:
    """Whether a zip archive's member ``names`` are those of a TorchScript archive."""
    return any("/code/" in n or n.startswith("code/") for n in names)


SMALL_FILE_LIMIT = 64 * 2**20   # a config or a metrics table is far smaller than this


def open_input(path: str | Path, what: str, error: type[CharRNNError] = CharRNNError
               ) -> IO[bytes]:
    """``path`` opened for reading, or one line naming what is wrong. Only regular files:
    a pipe or a device could make the reader wait without end, and texts are read more
    than once (scanned, then encoded)."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise error(f"{what} {path} is not a regular file (a pipe or a device); save it "
                        "to a file first, e.g. command > file.txt")
        return open(path, "rb")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory; give a file") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_small_text(path: str | Path, *, what: str, error: type[CharRNNError] = CharRNNError,
                    limit: int = SMALL_FILE_LIMIT) -> str:
    """The UTF-8 text (a byte-order mark is dropped) of a small regular file: a config,
    a metrics table. Devices, pipes and files over ``limit`` bytes are refused, so that
    nothing reads without end."""
    with open_input(path, what, error) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit // 2**20} MB; it cannot be a {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start})") from None


# ------------------------------------------------------------------------ run folders
def default_run_dir(name: str, cell: str, root: Path = Path("runs")) -> Path:
    """``runs/<date>-<time>-<name>-<cell>``; ``name``: the text's (its stem)."""
    return root / f"{datetime.now():%Y%m%d-%H%M%S}-{name}-{cell}"


def new_run_dir(name: str, cell: str, root: Path = Path("runs")) -> Path:
    """A new, empty ``default_run_dir``, made here and so this process's alone: when
    another run started in the same second has that name, ``-2``, ``-3`` ... follow it.
    (Made with one ``mkdir`` each: two processes can never both make one folder.)"""
    first = default_run_dir(name, cell, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharRNNError(f"cannot write to runs folder {root}: {e.strerror}; choose a run "
                           "folder with --out") from None
    for n in range(1, 10_000):
        path = first if n == 1 else first.with_name(f"{first.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise CharRNNError(f"cannot write to run folder {path}: {e.strerror}; choose "
                               "another with --out") from None
    raise CharRNNError(f"{root} has 10,000 runs named {first.name}; choose --out")


def numbered_name(step: int) -> str:
    """The file name of the numbered checkpoint of ``step``: ``step-1000.pt``."""
    return f"step-{step}.pt"


def numbered_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The numbered checkpoints in ``run_dir`` as (step, path), lowest step first."""
    try:
        found = [(int(m[1]), p) for p in run_dir.iterdir()
                 if (m := NUMBERED.fullmatch(p.name)) and p.is_file()]
    except OSError:
        return []
    return sorted(found)


def is_run_file(name: str) -> bool:
    """Whether ``name`` is one of the files a run writes into its folder."""
    return name in RUN_FILES or NUMBERED.fullmatch(name) is not None


def is_run(folder: Path) -> bool:
    """A folder holding any of a run's files (or one that cannot be looked into)."""
    try:
        return folder.is_dir() and (any((folder / name).is_file() for name in RUN_FILES)
                                    or bool(numbered_checkpoints(folder)))
    except OSError:
        return True


def prune_numbered(run_dir: Path, newest: int, keep: int) -> list[Path]:
    """Once ``step-<newest>.pt`` is written whole: remove the numbered checkpoints of
    later steps (left by the continuation that a resume from an earlier checkpoint
    replaces) and, with ``keep``, all but the newest ``keep``. The removed files."""
    found = numbered_checkpoints(run_dir)
    earlier = [path for step, path in found if step <= newest]
    doomed = [path for step, path in found if step > newest]
    if keep:
        doomed += earlier[:-keep]
    for path in doomed:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise CharRNNError(f"cannot remove the old checkpoint {path}: {e.strerror or e}; "
                               "remove it by hand") from None
    return doomed


@contextlib.contextmanager
def locked(run_dir: Path, made: bool = False) -> Iterator[None]:
    """Hold ``run_dir`` for one training process: while it is held, another is refused
    at once. The lock is the kernel's (``flock`` on the folder itself), so it ends with
    the process that held it, however that ended: a killed run never blocks the next,
    and nothing is left in the folder. A folder made here, or just before (``made``),
    is removed again when the run fails before writing anything into it."""
    created = made or not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError as e:
        raise CharRNNError(f"cannot write to run folder {run_dir}: {e.strerror}; "
                           "choose another with --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CharRNNError(f"run folder {run_dir} is in use by another charrnn train; "
                               "wait for it to end, or train into another folder with --out"
                               ) from None
        yield
    finally:
        os.close(fd)   # and with it the lock
        if created:    # a run that failed before it wrote anything leaves no empty folder
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def check_run_dir_is_free(run_dir: Path, overwrite: bool) -> list[Path]:
    """The results of an earlier run in ``run_dir`` (its numbered checkpoints too), which
    a new run may replace only when asked to (``overwrite``); otherwise a one-line error
    says what to do instead."""
    numbered = [path for _, path in numbered_checkpoints(run_dir)]
    held = [run_dir / name for name in (*RESULTS, CONFIG) if (run_dir / name).exists()]
    held += sorted(run_dir.glob(EVENTS)) if run_dir.is_dir() else []    # --tensorboard's
    if (held or numbered) and not overwrite:
        # Named: its results; else the config of one that never saved.
        events = [path for path in held if path.match(EVENTS)]
        names = [path.name for path in held if path.name != CONFIG and path not in events] + (
            [numbered[0].name if len(numbered) == 1 else f"{len(numbered)} step-N.pt"]
            if numbered else []) + (["TensorBoard events"] if events else [])
        names = ", ".join(names) or CONFIG
        raise ConfigError(f"run folder {run_dir} already holds a run ({names}); continue it "
                          f"with --resume {run_dir}, train into a new folder with --out, or "
                          "replace it with --overwrite")
    held += numbered
    others = [] if held or not run_dir.is_dir() else [
        p.name for p in run_dir.iterdir() if p.name != ".cache"]
    if others:
        raise ConfigError(f"{run_dir} holds other files ({', '.join(sorted(others)[:3])}"
                          f"{', ...' if len(others) > 3 else ''}), not a run; give --out a new "
                          "or empty folder")
    return held


def prepare_run_dir(run_dir: Path, config_toml: str | None, checkpoint_bytes: int,
                    replaced: list[Path], numbered: int = 0) -> None:
    """Create the folder, remove the ``replaced`` results of an earlier run, write
    config.toml (unless None) and check the free space (for ``numbered`` checkpoints more than
    best.pt and last.pt), so that an unwritable or full place fails before any
    training time is spent. Temporary files that a killed run left behind are removed
    (the checkpoints they were to replace are intact)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        left = [p for name in (*RESULTS, "step-*.pt") for p in run_dir.glob(f".{name}.*.tmp")]
        for stale in [*left, *replaced]:
            stale.unlink()
        if config_toml is not None:
            (run_dir / CONFIG).write_text(config_toml, encoding="utf-8")
        free = shutil.disk_usage(run_dir).free
    except OSError as e:
        raise CharRNNError(f"cannot write to run folder {run_dir}: {e.strerror}; "
                           "choose another with --out") from None
    # best.pt and last.pt, plus the temporary copy written before each replace.
    need = (3 + numbered) * checkpoint_bytes
    if free < need:
        fewer = ", keep fewer step-N.pt (--keep)" if numbered else ""
        raise CharRNNError(f"only {free / 1e6:.1f} MB free in {run_dir}, checkpoints need "
                           f"about {need / 1e6:.1f} MB; free some space{fewer} or choose --out")


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(run_dir / METRICS, fix="the checkpoints are kept") as f:
        f.write(buffer.getvalue().encode("utf-8"))


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` as numbers: of a run folder, of the run a
    checkpoint file is in, or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    elif path.suffix == ".pt":
        path = path.parent / METRICS
    if not path.exists():
        raise CharRNNError(f"{path} does not exist; give a run folder written by charrnn "
                           "train (charrnn runs lists them)")
    text = read_small_text(path, what="metrics file")
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"step", "val_loss"} <= set(reader.fieldnames):
        raise CharRNNError(f"{path} is not a charrnn metrics file: it needs the columns step "
                           "and val_loss")
    rows = []
    for number, row in enumerate(reader, start=2):
        try:
            rows.append({k: float(v) if v not in ("", None) else math.nan
                         for k, v in row.items() if k is not None})
        except ValueError:
            raise CharRNNError(f"{path} line {number} holds a value that is not a number; "
                               "the file is damaged") from None
    return rows


def read_config(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The ``[model]`` and ``[train]`` tables of a run's ``config.toml`` ({} if absent)."""
    try:
        data = tomllib.loads(read_small_text(Path(run_dir) / CONFIG, what="config file"))
    except (CharRNNError, tomllib.TOMLDecodeError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}
