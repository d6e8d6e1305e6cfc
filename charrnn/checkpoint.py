"""Checkpoint files: one self-contained dict per file, written atomically, loaded safely.

A checkpoint is a plain dict of Python primitives and CPU tensors, readable with
``torch.load(path, weights_only=True)`` and nothing from this package:

    format_version, charrnn_version, torch_version   what wrote it
    model_config, train_config                       dicts of the two configs
    vocab                                            str: the characters in id order
    model_state                                      state_dict of CharRNN
    optimizer_state, data_state, hidden, rng,
    loss_window                                      what an exact resume needs
    step, epoch, elapsed                             progress
    best_val_loss, val_loss, metrics                 evaluation history
    corpus                                           {"path", "chars", "sha256"} of the
                                                     training text; for several files
                                                     {"paths", "sha256s", "chars", "sha256"}

Loading never runs code from the file: ``weights_only=True`` refuses any pickle that
names a callable, the zip records' CRC-32 sums are checked (torch.load does not), and
the dict is checked for its version and keys before use.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from charrnn import __version__
from charrnn.config import build
from charrnn.data import Vocab
from charrnn.errors import CheckpointError
from charrnn.files import (BEST, LAST, atomic_write, is_run, is_torchscript,
                           numbered_checkpoints)
from charrnn.model import CharRNN

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "train_config", "vocab", "model_state")


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` so that a crash at any moment leaves either the
    old file or the new one, complete (see ``files.atomic_write``)."""
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, "charrnn_version": __version__,
               "torch_version": str(torch.__version__), **payload}
    with atomic_write(path, what="checkpoint ", error=CheckpointError,
                      fix="the previous checkpoint, if any, is kept") as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, tensors on CPU; any problem is a one-line
    ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a .pt file or a run folder")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file (a pipe or a device); give a "
                              ".pt file or a run folder")
    try:
        with open(path, "rb") as f:
            zipped = f.read(2) == b"PK"     # torch.save writes a zip archive
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); it was never written "
                              "completely, use another checkpoint")
    if zipped and _is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript export (charrnn export), not a "
                              "checkpoint; give the checkpoint or run folder it came from")
    _check_crc(path)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; we say it once
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch refuses (weights_only) anything but tensors and plain data: say so, and
        # name what the file asked for when torch does.
        # (Random bytes also fail as a pickle: outside a zip archive, as torch.save
        # writes it, only a named global is taken as a sign of crafted content.)
        found = re.search(r"(?:[Uu]nsupported global:? (?:GLOBAL )?|GLOBAL )([\w.]+)|"
                          r"Unsupported operand (\d+)", str(e))
        crafted = zipfile.is_zipfile(path) and str(e).startswith("Weights only load failed")
        if (found and found[1]) or crafted:
            what = (f"names {found[1]}" if found and found[1] else
                    f"uses pickle operation {found[2]}" if found else "holds pickled objects")
            raise CheckpointError(f"{path} is not a charrnn checkpoint: it {what}, which could "
                                  "run code when loaded; refused without running any of it"
                                  ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (not a torch file, "
                              "truncated or corrupted); refused without running any of it"
                              ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            AttributeError, IndexError):
        what = ("truncated or damaged (its zip archive is incomplete)" if zipped
                else "not a torch checkpoint file")
        raise CheckpointError(f"{path} is not a readable checkpoint: {what}; use another "
                              "checkpoint") from None
    return check_checkpoint(ckpt, path)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return is_torchscript(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError, EOFError):
        return False        # a damaged file: the checks below say what is wrong


def _check_crc(path: Path) -> None:
    """torch.save writes a zip archive with a CRC-32 per record, which torch.load does
    not verify: check them, so that flipped bytes in the weights are caught here."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return  # not a whole zip archive: torch.load below says what is wrong
    with archive:
        try:
            bad = archive.testzip()
        except Exception as e:  # noqa: BLE001 - a flipped bit in the zip directory can
            # raise almost anything from zipfile and zlib (unsupported method, bad
            # version, "encrypted", a zlib error): all of them mean a damaged file.
            bad = f"a record header ({type(e).__name__}: {str(e)[:80]})"
    if bad is not None:
        raise CheckpointError(f"{path} is corrupted (checksum mismatch in {bad}); "
                              "use another checkpoint, e.g. last.pt or best.pt of the run")


def check_checkpoint(ckpt: Any, path: str | Path) -> dict[str, Any]:
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a charrnn checkpoint: it holds a "
                              f"{type(ckpt).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a charrnn checkpoint: missing "
                              f"{', '.join(missing)}")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer charrnn (format {version}, "
                              f"this one reads {FORMAT_VERSION}); upgrade charrnn")
    if not isinstance(ckpt["vocab"], str) or not ckpt["vocab"]:
        raise CheckpointError(f"{path} has no vocabulary; it is not a charrnn checkpoint")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint"
                          ) -> tuple[CharRNN, Vocab]:
    """The trained model (in eval mode, on CPU) and its vocabulary."""
    try:
        vocab = Vocab(ckpt["vocab"])
        config = build("model", ckpt["model_config"])
        model = CharRNN(len(vocab), config)
        model.load_state_dict(ckpt["model_state"])
    except CheckpointError:
        raise
    except Exception as e:  # a config or state that does not fit the model
        detail = " ".join(str(e).split()).removeprefix(
            "Error(s) in loading state_dict for CharRNN: ")
        raise CheckpointError(f"{path} does not hold a usable model ({detail[:300]}); use a "
                              "checkpoint that charrnn saved") from None
    broken = next((name for name, t in model.state_dict().items()
                   if not torch.isfinite(t).all()), None)
    if broken is not None:
        raise CheckpointError(f"{path} holds weights that are not finite (NaN or Inf in "
                              f"{broken}); use a checkpoint saved before the run diverged, "
                              "e.g. its best.pt")
    return model.eval(), vocab


def resolve_checkpoint(target: str | Path | None, runs_dir: str | Path = "runs",
                       name: str = BEST) -> Path:
    """A checkpoint file from a file path, a run folder (its ``name``, else the other of
    best.pt and last.pt, else its newest step-N.pt), or (None) the newest run."""
    if target is None:
        return latest_checkpoint(runs_dir, name)
    target = Path(target)
    if target.is_dir():
        _check_is_run(target)
        for candidate in (name, LAST if name == BEST else BEST):
            if (target / candidate).is_file():
                return target / candidate
        numbered = numbered_checkpoints(target)
        if numbered:
            return numbered[-1][1]
        raise CheckpointError(f"run folder {target} has no {BEST} or {LAST}: it stopped "
                              "before its first evaluation saved one; start it again with "
                              f"charrnn train TEXT --out {target} --overwrite")
    return target


def _check_is_run(folder: Path) -> None:
    """A one-line error for a folder that is not a run folder: one that holds runs (the
    runs folder itself), or any other (a folder of texts, say)."""
    if is_run(folder):
        return
    try:
        runs = sorted((p for p in folder.iterdir() if p.is_dir() and is_run(p)),
                      key=lambda p: p.stat().st_mtime)
    except OSError:
        runs = []
    if runs:
        raise CheckpointError(f"{folder} is a folder of runs, not a run: name one of them "
                              f"(the newest is {runs[-1]})")
    raise CheckpointError(f"{folder} is not a run folder (it holds no config.toml, metrics.csv "
                          "or checkpoint); give a run folder such as runs/<run>, or a .pt "
                          "checkpoint file")


def latest_checkpoint(runs_dir: str | Path = "runs", name: str = BEST) -> Path:
    """``name`` (or the other checkpoint) of the run under ``runs_dir`` that wrote a
    checkpoint most recently."""
    runs_dir = Path(runs_dir)
    written = [p for pattern in (f"*/{BEST}", f"*/{LAST}") for p in runs_dir.glob(pattern)
               if p.is_file()] if runs_dir.is_dir() else []
    if not written:
        raise CheckpointError(f"no trained model found under {runs_dir}/; train one with "
                              "'charrnn train TEXT' or give a checkpoint path")
    newest = max(written, key=lambda p: p.stat().st_mtime)
    return resolve_checkpoint(newest.parent, runs_dir, name)


def peek_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint's dict, its tensors memory-mapped rather than read, or None when
    the file cannot be read (for listings, which show what they know without it). Like
    every load in charrnn it uses ``weights_only=True``: no code from the file runs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # anything unreadable: not fatal for a listing
        return None
    return data if isinstance(data, dict) else None


def count_parameters(state: Any) -> int | None:
    """Distinct parameters of a state dict (a tied matrix is stored, and counted, once);
    None when there is no state dict."""
    if not isinstance(state, dict) or not state:
        return None
    distinct = {(t.untyped_storage().data_ptr(), t.storage_offset(), t.numel()): t.numel()
                for t in state.values() if isinstance(t, torch.Tensor)}
    return sum(distinct.values())
