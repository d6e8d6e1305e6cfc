"""How a run stops before its budget ends: a signal, or --patience.

SIGINT, SIGTERM and SIGHUP are caught for the whole run (``catch_stop_signals``). Before
the first step a signal stops at once (nothing is saved yet); during training it is a
request (``StopRequest``) that the loop reads after each step, so that it saves
``last.pt`` and raises ``TrainingInterrupted``. ``out_of_patience`` ends a run normally
once --patience evaluations in a row have brought no new best.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any

from charrnn.errors import TrainingInterrupted


class StopRequest:
    """What SIGINT, SIGTERM and SIGHUP do. Before the first step (reading and encoding
    the texts, building the model) a signal stops at once: nothing is saved yet, and
    what was being written is removed. Then it sets a flag that the loop reads after
    each step, so that a stop never lands in the middle of an optimiser update; a
    second signal stops at once, but never in the middle of a save."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False
        self._saving = False
        self._again = False

    def __call__(self, signum, frame) -> None:
        if not self.training:
            raise TrainingInterrupted(None, signum)
        if self.signum is None:
            self.signum = signum
        elif self._saving:
            self._again = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def hold(self):
        """A save: a second signal waits until it is whole."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._again:
            raise KeyboardInterrupt


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextmanager
def catch_stop_signals():
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def out_of_patience(since: int, best: dict[str, Any] | None, patience: int) -> str | None:
    """After an evaluation: the line that ends the run when ``patience`` evaluations in
    a row have brought no new best (None while the run goes on, or with no patience).
    ``since``: the evaluations after the best one, whose metrics row is ``best``
    (``RunState.since_best``)."""
    if not patience or best is None or since < patience:
        return None
    return (f"stopping early: no improvement in {since} evaluations since step "
            f"{best['step']} (best {best['val_loss']:.4f})")
