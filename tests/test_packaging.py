"""What a plain ``pip install`` gets: every module and data file of the package.

The suite runs from an editable install, which reads the sources where they are; a
wheel holds only what ``pyproject.toml`` names, so a new subpackage or data folder left
out of it would pass every other test and break on a user's machine.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from helpers import ROOT


def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    pytest.importorskip("setuptools")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("charrnn_cli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "charrnn"
    expected = {f"charrnn/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    expected.add("charrnn/corpora/tinyshakespeare.txt")
    assert {"charrnn/cli/app.py", "charrnn/web/page.js"} <= expected
    assert expected - names == set()
