"""Every setting of a model and a training run, with its default, in one place.

``ModelConfig`` says what network to build, ``TrainConfig`` how to train it. A value
comes from the dataclass default, then a TOML file (``[model]`` and ``[train]``
tables, see ``configs/``), then command-line flags, each overriding the one before.
This module does not import torch, so ``charrnn --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from charrnn.errors import ConfigError
from charrnn.files import read_small_text

CELLS = ("rnn", "lstm", "gru")
NONLINEARITIES = ("tanh", "relu")
BATCHINGS = ("stream", "random")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "adagrad")
DTYPES = ("float32", "bfloat16", "auto")
DECAYS = ("cosine", "linear")
SIZES = ("auto", "fixed")

# Training length when none of max_steps, epochs or max_time is set.
DEFAULT_MAX_STEPS = 3000


# Upper bounds far beyond any model or run that makes sense, so that a slip of the
# keyboard (1e9 for 1e3) is refused at once instead of exhausting memory or time.
BIG_SIZE = 1 << 20        # features, characters per window, windows per batch
BIG_COUNT = 10**12        # steps


def _opt(help: str, *, choices: tuple[str, ...] = (), min: float | None = None,
         max: float | None = None, min_exclusive: bool = False) -> dict:
    """Field metadata: the help text and the range a value must lie in."""
    return {"help": help, "choices": choices, "min": min, "max": max,
            "min_exclusive": min_exclusive}


@dataclass
class ModelConfig:
    """The network: embedding -> recurrent stack -> dropout -> linear head."""

    cell: str = field(default="lstm", metadata=_opt(
        "recurrent cell: rnn, lstm or gru", choices=CELLS))
    nonlinearity: str = field(default="tanh", metadata=_opt(
        "activation of the plain rnn cell: tanh or relu", choices=NONLINEARITIES))
    embedding_dim: int = field(default=64, metadata=_opt(
        "size of each character's embedding (the RNN's input_size)", min=1, max=BIG_SIZE))
    hidden_size: int = field(default=256, metadata=_opt(
        "features in each layer's hidden state h", min=1, max=BIG_SIZE))
    num_layers: int = field(default=2, metadata=_opt(
        "recurrent layers stacked on each other", min=1, max=1024))
    dropout: float = field(default=0.0, metadata=_opt(
        "dropout between recurrent layers and before the head", min=0.0, max=0.99))
    proj_size: int = field(default=0, metadata=_opt(
        "LSTM only: project h to this size (0 = no projection)", min=0, max=BIG_SIZE))
    tie_weights: bool = field(default=False, metadata=_opt(
        "share the embedding matrix with the output head (needs embedding_dim equal "
        "to the head's input size)"))
    bidirectional: bool = field(default=False, metadata=_opt(
        "run a second, reversed recurrent stack (inspect only: a next-character model "
        "must not see the future)"))

    def describe(self) -> str:
        """One line: ``2x256 lstm, embedding 64, dropout 0.2``."""
        cell = f"rnn-{self.nonlinearity}" if self.cell == "rnn" else self.cell
        extra = [f"proj {self.proj_size}" if self.proj_size else "",
                 f"dropout {self.dropout:g}" if self.dropout else "",
                 "tied" if self.tie_weights else ""]
        return (f"{self.num_layers}x{self.hidden_size} {cell}, embedding {self.embedding_dim}"
                + "".join(f", {e}" for e in extra if e))


@dataclass
class TrainConfig:
    """The data windows, optimiser, schedule, budgets and bookkeeping of a run."""

    seq_length: int = field(default=64, metadata=_opt(
        "characters per training window (steps of backpropagation through time)", min=1,
        max=BIG_SIZE))
    batch_size: int = field(default=32, metadata=_opt(
        "windows per optimiser step", min=1, max=BIG_SIZE))
    batching: str = field(default="stream", metadata=_opt(
        "stream: contiguous streams with hidden state carried between windows; "
        "random: random windows from a zero state", choices=BATCHINGS))
    optimizer: str = field(default="adamw", metadata=_opt(
        "optimiser: adamw, adam, sgd, rmsprop or adagrad", choices=OPTIMIZERS))
    lr: float = field(default=3e-3, metadata=_opt(
        "peak learning rate, reached after warmup", min=0.0, min_exclusive=True))
    decay: str = field(default="cosine", metadata=_opt(
        "shape of the decay over the budget, after warmup: cosine or linear",
        choices=DECAYS))
    min_lr_ratio: float = field(default=0.1, metadata=_opt(
        "the decay ends at lr * min_lr_ratio", min=0.0, max=1.0))
    weight_decay: float = field(default=0.01, metadata=_opt(
        "decoupled weight decay on weight matrices (not biases or embeddings)", min=0.0))
    grad_clip: float = field(default=1.0, metadata=_opt(
        "clip the global gradient norm to this (0 = no clipping)", min=0.0))
    warmup_steps: int = field(default=100, metadata=_opt(
        "steps of linear learning-rate warmup", min=0, max=BIG_COUNT))
    max_steps: int | None = field(default=None, metadata=_opt(
        f"stop after this many optimiser steps (default {DEFAULT_MAX_STEPS} when no "
        "other budget is set)", min=1, max=BIG_COUNT))
    epochs: float | None = field(default=None, metadata=_opt(
        "stop after this many passes over the training text", min=0.0, max=1e6,
        min_exclusive=True))
    max_time: float | None = field(default=None, metadata=_opt(
        "stop after this many seconds of wall time, evaluation included", min=0.0,
        max=1e8, min_exclusive=True))
    eval_every: int = field(default=250, metadata=_opt(
        "evaluate on the validation text every this many steps (and at the end)", min=1,
        max=BIG_COUNT))
    patience: int = field(default=0, metadata=_opt(
        "stop early after this many evaluations in a row without a new best val loss "
        "(0 = never)", min=0, max=BIG_COUNT))
    sample_every: int = field(default=500, metadata=_opt(
        "print a short sample every this many steps (0 = never)", min=0, max=BIG_COUNT))
    sample_length: int = field(default=200, metadata=_opt(
        "characters in each progress sample", min=1, max=100_000))
    save_every: int = field(default=0, metadata=_opt(
        "every this many steps, also save a numbered checkpoint step-N.pt (resumable, "
        "like last.pt, which is written with it) (0 = never)", min=0, max=BIG_COUNT))
    keep: int = field(default=0, metadata=_opt(
        "keep only the newest this many step-N.pt files; best.pt and last.pt always stay "
        "(0 = keep all)", min=0, max=BIG_COUNT))
    val_fraction: float = field(default=0.1, metadata=_opt(
        "last fraction of the text held out for validation", min=0.0, max=0.5,
        min_exclusive=True))
    val_max_chars: int = field(default=250_000, metadata=_opt(
        "score at most this many validation characters per evaluation, in 64 streams "
        "spread evenly over the held-out text (0 = all of it)", min=0, max=BIG_COUNT))
    val_file: str | None = field(default=None, metadata=_opt(
        "validate on this file (or folder, or pattern, read as one text as the training "
        "text is) instead of the end of the training text"))
    out: str | None = field(default=None, metadata=_opt(
        "run folder for checkpoints and metrics (default runs/<time>-<text>-<cell>)"))
    cache_dir: str | None = field(default=None, metadata=_opt(
        "folder for the encoded corpus (default: .cache/ beside the run folder)"))
    seed: int = field(default=1337, metadata=_opt(
        "seed for initialisation, batching, dropout and samples", min=0, max=2**63 - 1))
    device: str = field(default="auto", metadata=_opt(
        "auto, cpu, cuda or cuda:N"))
    dtype: str = field(default="auto", metadata=_opt(
        "float32; bfloat16 autocast; or auto: bfloat16 where the device computes it "
        "natively (a CPU with AVX512-BF16, AMX or Arm BF16 instructions, a GPU that "
        "supports it), float32 elsewhere", choices=DTYPES))
    threads: int = field(default=0, metadata=_opt(
        "CPU threads to compute with (0 = chosen by timing the work with each count, and "
        "re-checked as training goes, so that a busy machine does not slow it down)",
        min=0, max=4096))
    size: str | None = field(default=None, metadata=_opt(
        "auto: choose the model's width, depth and dropout (and batch, window and "
        "learning rate) for the time budget, from a probe of this machine's speed; "
        "fixed: the model the settings give. Default: auto when --max-time is the only "
        "budget and no model setting is given", choices=SIZES))
    tensorboard: bool = field(default=False, metadata=_opt(
        "also write each evaluation's numbers as TensorBoard scalars into the run folder "
        "(needs the tensorboard package)"))

    def budget_steps(self) -> int | None:
        """``max_steps``, or the default when no budget at all was set."""
        if self.max_steps is None and self.epochs is None and self.max_time is None:
            return DEFAULT_MAX_STEPS
        return self.max_steps


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


def fields_of(section: str) -> list[str]:
    return [f.name for f in fields(SECTIONS[section])]


def _field(section: str, name: str) -> dataclasses.Field:
    return next(f for f in fields(SECTIONS[section]) if f.name == name)


def help_for(section: str, name: str) -> str:
    """The help text of one setting, with its default, for the CLI."""
    f = _field(section, name)
    default = "" if f.default is None else f" [default: {_format_value(f.default)}]"
    return f.metadata["help"] + default


def choices_for(section: str, name: str) -> tuple[str, ...]:
    """The values a setting takes, when it is one of a few names (else empty)."""
    return _field(section, name).metadata["choices"]


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Names other char-rnn tools use for our settings, for "did you mean" hints.
_OTHER_NAMES = {"learning_rate": "lr", "rnn_size": "hidden_size", "nhid": "hidden_size",
                "hidden_dim": "hidden_size", "n_layers": "num_layers", "nlayers": "num_layers",
                "seq_len": "seq_length", "block_size": "seq_length", "bsz": "batch_size",
                "emsize": "embedding_dim", "n_embd": "embedding_dim", "model": "cell",
                "max_iters": "max_steps", "max_epochs": "epochs", "clip": "grad_clip",
                "grad_clip_norm": "grad_clip", "eval_interval": "eval_every"}


def _nearest(name: str, valid: list[str]) -> str:
    close = [_OTHER_NAMES[name]] if _OTHER_NAMES.get(name) in valid else \
        difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def _coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    """Check one value against its field's type and range; ints pass as floats."""
    key = f"{section}.{f.name}"
    kind = f.type.split(" | ")[0] if isinstance(f.type, str) else f.type
    if value is None:
        if "None" in str(f.type):
            return None
        raise ConfigError(f"{key} cannot be empty; give a {kind}")
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise ConfigError(f"{key} must be a {kind}, got {value!r}")
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    meta = f.metadata
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(
            f"{key} must be one of {', '.join(meta['choices'])}, got {value!r}"
            + _choice_hint(value, meta["choices"]))
    low, high = meta["min"], meta["max"]
    if low is not None and (value < low or (meta["min_exclusive"] and value == low)):
        bound = f"greater than {low:g}" if meta["min_exclusive"] else f"at least {low:g}"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be at most {high:,}, got {value!r}")
    return value


def _choice_hint(value: Any, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(section: str, values: dict[str, Any], check: bool = True) -> Any:
    """A validated ``ModelConfig`` or ``TrainConfig`` from defaults overridden by
    ``values``; unknown keys and bad values raise ``ConfigError``. ``check=False``
    leaves out the model's checks across settings (``check_model``), for a shape that
    ``--size auto`` is still to choose."""
    cls = SECTIONS[section]
    by_name = {f.name: f for f in fields(cls)}
    checked = {}
    for name, value in values.items():
        if name not in by_name:
            raise ConfigError(f"unknown key '{section}.{name}'" + _nearest(name, list(by_name)))
        checked[name] = _coerce(section, by_name[name], value)
    config = cls(**checked)
    if isinstance(config, ModelConfig):
        if check:
            check_model(config)
    elif config.keep and not config.save_every:
        raise ConfigError(f"train.keep ({config.keep}) needs save_every: numbered checkpoints "
                          "are written only with --save-every N; set it, or drop --keep "
                          "(--keep 0)")
    return config


def check_model(c: ModelConfig) -> None:
    """A ``ConfigError`` for settings that cannot make a model together."""
    if c.proj_size and c.cell != "lstm":
        raise ConfigError(f"model.proj_size works with the lstm cell only, not {c.cell}; "
                          "drop --proj-size or use --cell lstm")
    if c.proj_size >= c.hidden_size:
        raise ConfigError(f"model.proj_size ({c.proj_size}) must be smaller than "
                          f"hidden_size ({c.hidden_size})")
    head_in = (c.proj_size or c.hidden_size) * (2 if c.bidirectional else 1)
    if c.tie_weights and head_in != c.embedding_dim:
        raise ConfigError(
            f"tie_weights needs embedding_dim ({c.embedding_dim}) equal to the head's input "
            f"size ({head_in}, the {'proj_size' if c.proj_size else 'hidden_size'}"
            f"{' x 2 directions' if c.bidirectional else ''}); "
            f"set --embedding-dim {head_in} or drop --tie-weights")


def check_given(asked: dict[str, Any], model: dict[str, Any]) -> None:
    """A ``ConfigError`` for a model setting given (by a flag or a config file, not
    inherited from a checkpoint) that the rest of ``model`` would silently ignore."""
    cell = model.get("cell", ModelConfig.cell)
    if asked.get("nonlinearity") not in (None, "tanh") and cell != "rnn":
        raise ConfigError(f"model.nonlinearity {asked['nonlinearity']} is the plain rnn cell's; "
                          f"the {cell} cell has its own gates: drop --nonlinearity or use "
                          "--cell rnn")


def read_toml(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``[model]`` and ``[train]`` tables of a config file, keys unchecked."""
    path = Path(path)
    text = read_small_text(path, what="config file", error=ConfigError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for name, table in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown table [{name}] in {path}" + _nearest(name, list(SECTIONS)))
        if not isinstance(table, dict):
            raise ConfigError(f"'{name}' in {path} must be a table: write [{name}] above its keys")
    return {name: dict(data.get(name, {})) for name in SECTIONS}


class Resolved(NamedTuple):
    model: ModelConfig
    train: TrainConfig
    free: frozenset[str]      # with size auto: the model settings left for it to choose


def resolve(config_file: str | Path | None, overrides: dict[str, dict[str, Any]],
            base: dict[str, dict[str, Any]] | None = None) -> Resolved:
    """Defaults < ``base`` (a checkpoint's settings, when continuing from one) < config
    file < ``overrides`` (flags; None means not given).

    ``train.size`` left unset becomes ``auto`` when a time budget is the only budget and
    no model setting is given, else ``fixed``. With ``auto``, the training settings of
    ``sizing.RECIPE`` that none of the layers gives take the recipe's values, and the
    shape settings none gives are ``free`` for the run to choose."""
    from charrnn import sizing

    layers = {name: dict((base or {}).get(name, {})) for name in SECTIONS}
    asked: dict[str, Any] = {}      # the model settings given here, not inherited
    if config_file:
        for section, values in read_toml(config_file).items():
            layers[section].update(values)
            asked.update(values if section == "model" else {})
    for section, values in overrides.items():
        given = {k: v for k, v in values.items() if v is not None}
        layers[section].update(given)
        asked.update(given if section == "model" else {})
    check_given(asked, layers["model"])
    train = layers["train"]
    if train.get("size") is None:
        only_time = all(train.get(k) is None for k in ("max_steps", "epochs"))
        train["size"] = ("auto" if train.get("max_time") is not None and only_time
                         and not layers["model"] else "fixed")
    free: frozenset[str] = frozenset()
    if train["size"] == "auto":
        _check_auto(train, base)
        train.update({k: v for k, v in sizing.RECIPE.items() if k not in train})
        free = frozenset(k for k in sizing.SHAPE_KEYS if k not in layers["model"])
    # A shape still to choose is checked candidate by candidate (sizing.candidates).
    return Resolved(build("model", layers["model"], check=not free), build("train", train),
                    free)


def _check_auto(train: dict[str, Any], base: dict[str, dict[str, Any]] | None) -> None:
    """``size = "auto"`` needs a new run with a time budget alone (a resume keeps the
    shape its checkpoint has, whatever the budget)."""
    resuming = bool(base and base.get("train"))
    if base and not resuming:
        raise ConfigError("--init-from keeps the checkpoint's model, so there is nothing for "
                          "--size auto to choose; drop --size auto")
    others = [f"--{k.replace('_', '-')}" for k in ("max_steps", "epochs")
              if train.get(k) is not None]
    if not resuming and (train.get("max_time") is None or others):
        raise ConfigError("--size auto sizes the model for a --max-time budget alone; give "
                          "--max-time SECONDS" + (f" without {' or '.join(others)}"
                                                  if others else "")
                          + ", or drop --size auto")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def changes(saved: dict[str, Any], now: Any, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key old -> new`` for each setting of ``now`` that differs from the ``saved`` dict
    (a setting that ``saved`` lacks, written before it existed, had its default)."""
    defaults = to_dict(type(now)())
    was = {**defaults, **saved}
    return [f"{k} {was.get(k)!r} -> {v!r}" for k, v in to_dict(now).items()
            if k not in ignore and was.get(k) != v]


def to_toml(model: ModelConfig, train: TrainConfig, free: frozenset[str] = frozenset()) -> str:
    """The resolved settings as a TOML file that ``--config`` reads back; the model
    settings in ``free`` (left for ``--size auto`` to choose) as comments."""
    lines = []
    for section, config in (("model", model), ("train", train)):
        lines.append(f"[{section}]")
        for f in fields(config):
            value = getattr(config, f.name)
            if section == "model" and f.name in free:
                lines.append(f"# {f.name} = (chosen by --size auto)")
            elif f.name == "max_steps" and train.budget_steps() is not None and value is None:
                lines.append(f"# max_steps = (not set: {train.budget_steps()}, the budget when "
                             "none is given)")
            elif value is None:
                lines.append(f"# {f.name} = (not set)")
            elif isinstance(value, bool):
                lines.append(f"{f.name} = {_format_value(value)}")
            elif isinstance(value, str):     # TOML's basic string is JSON's, and no DEL
                lines.append(f"{f.name} = "
                             + json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f"))
            else:
                lines.append(f"{f.name} = {value!r}")
        lines.append("")
    return "\n".join(lines)
