"""``python -m charrnn`` is the ``charrnn`` command.

``run`` is its entry point: Ctrl-C while the command-line modules are still being
imported ends the process like Ctrl-C at any later moment (status 130, no traceback).
"""

import sys


def run() -> None:
    try:
        from charrnn.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
