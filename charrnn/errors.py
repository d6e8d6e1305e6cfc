"""Errors a user can cause.

Anything raised as a ``CharRNNError`` is shown by the CLI as one line on stderr and
ends the process with exit code 1; everything else is a bug and keeps its traceback.
"""


class CharRNNError(Exception):
    """A problem with the user's input: a file, a flag, a checkpoint or a config."""


class DataError(CharRNNError):
    """A text file that cannot be used for training, evaluation or priming."""


class ConfigError(CharRNNError):
    """An unknown key, a value out of range, or settings that do not fit together."""


class SettingError(ConfigError):
    """One setting out of its range: ``name`` as the user spells it (``top-k``) and the
    ``rule`` it broke, so that each caller can name it its own way (``--top-k``)."""

    def __init__(self, name: str, rule: str) -> None:
        super().__init__(f"{name} {rule}")
        self.name, self.rule = name, rule


class CheckpointError(CharRNNError):
    """A file that is not a usable charrnn checkpoint."""


class TrainingInterrupted(Exception):
    """Training stopped by a signal: after ``last.pt`` was saved, or (``checkpoint``
    None) before the first step, when there was nothing to save.

    Not a ``CharRNNError``: the CLI maps it to 128 + the signal number.
    """

    def __init__(self, checkpoint: str | None, signum: int) -> None:
        super().__init__(f"interrupted; saved {checkpoint}" if checkpoint
                         else "interrupted before training began")
        self.checkpoint = checkpoint
        self.signum = signum
