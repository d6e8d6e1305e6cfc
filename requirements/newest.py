"""Try the newest versions pyproject.toml allows: install the project with its test tools
into a new virtual environment, without the lock, and run the test suite there.

    python requirements/newest.py                  # a throw-away environment
    python requirements/newest.py --venv ../newest # keep it, to look into a failure
    python requirements/newest.py --write-lock     # and, if the suite passes, make those
                                                   # versions requirements/lock.txt
    python requirements/newest.py -- -x -k budget  # arguments after -- go to pytest

The README's install takes the versions in requirements/lock.txt, so every machine tests
what CI tested; this finds the drift on purpose. It prints the versions it installed and
ends with the suite's exit status.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
SHOWN = ("torch", "numpy", "typer", "click", "rich", "tqdm", "pytest", "hypothesis",
         "matplotlib", "tensorboard", "onnx", "onnxruntime")
HEADER = """\
# The versions the test suite passed on, for every machine to install:
#     pip install -e ".[dev]" -c requirements/lock.txt
# Written by `python requirements/newest.py --write-lock` (Python {python}, {platform}) after
# the suite passed with the newest versions pyproject.toml allows; run it again to move on.
# Exact versions rather than hashes: pip checks hashes only when it can hash every
# requirement, and an editable project cannot be hashed. Packages that only some platforms
# need (nvidia-*, triton) constrain nothing where they are not needed.
"""


def freeze(python: Path) -> list[str]:
    """The environment's packages as name==version lines, the project itself left out,
    local version labels (2.13.0+cpu) dropped so that the lines hold on any index."""
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable"],
                         check=True, capture_output=True, text=True).stdout
    lines = [re.sub(r"\+[\w.]+$", "", line.strip()) for line in out.splitlines()]
    return sorted((line for line in lines if "==" in line), key=str.lower)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, help="make the environment here and keep it")
    parser.add_argument("--write-lock", action="store_true",
                        help="write requirements/lock.txt if the suite passes")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args()

    venv = args.venv or Path(tempfile.mkdtemp(prefix="charrnn-newest-")) / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", ".[dev]"],
                       cwd=ROOT, check=True)
        pins = freeze(python)
        versions = dict(line.split("==", 1) for line in pins)
        print("newest allowed: " + ", ".join(f"{name} {versions[name]}" for name in SHOWN
                                             if name in versions), flush=True)
        suite = subprocess.run([str(python), "-B", "-m", "pytest", *args.pytest_args],
                               cwd=ROOT)
        if suite.returncode == 0 and args.write_lock:   # the venv runs this interpreter
            header = HEADER.format(python=platform.python_version().rsplit(".", 1)[0],
                                   platform=f"{platform.system()} {platform.machine()}")
            LOCK.write_text(header + "\n".join(pins) + "\n", encoding="utf-8")
            print(f"wrote {LOCK.relative_to(ROOT)} ({len(pins)} packages)")
        return suite.returncode
    finally:
        if args.venv is None:
            shutil.rmtree(venv.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
