"""Progress bars: on stderr, and drawn only on a terminal.

A log file or a pipe gets no bar frames (carriage returns and partial lines); a
command that narrates says what it did in whole lines there instead.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def bar(shown: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, disabled unless ``shown`` and stderr is a terminal."""
    return tqdm(file=sys.stderr, disable=not (shown and sys.stderr.isatty()), **kwargs)
