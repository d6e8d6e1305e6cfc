"""The ``charrnn`` command.

``app`` builds the command line and registers the commands; each command's module
parses its flags, calls one library function and renders the result (generated text
and JSON on stdout, everything else on stderr). ``options`` declares the flags that
several commands share, ``common`` what they do alike, and ``runtime`` turns every
outcome into an exit status: errors a user can cause are ``CharRNNError``s, one line on
stderr and exit code 1. torch is imported inside the commands only.
"""

from charrnn.cli.runtime import STARTED, main

__all__ = ["STARTED", "main"]
