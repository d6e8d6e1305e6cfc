"""What a plain ``pip install`` gets: every module and data file of the package.

The suite runs from an editable install, which reads the sources where they are; a
wheel holds only what ``pyproject.toml`` names, so a new subpackage or data folder left
out of it would pass every other test and break on a user's machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from helpers import ROOT, child_env


def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    # Built from a copy: a build writes build/ and *.egg-info beside the sources.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "runs", "__pycache__", ".*cache*"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
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


def test_every_room_keeps_its_size():
    """The shape the code keeps so that the next engineer finds their way: no module of
    the command line over 250 lines, no command over 60 lines, no other function over
    80, no string constant over 40 lines, and no library module that imports the
    command line, the terminal views or the training run for a helper."""
    import ast

    package = ROOT / "charrnn"
    too_long = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(package).as_posix()
        tree = ast.parse(source)
        if name.startswith("cli/") and len(source.splitlines()) > 250:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        commands = {"train", "config_show", "sample", "inspect", "eval_", "export", "runs_",
                    "plot", "download", "prepare"} if name.startswith("cli/") else set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = 60 if node.name in commands else 80
                if node.end_lineno - node.lineno + 1 > limit:
                    too_long.append(f"{name}: {node.name}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.count("\n") > 40:
                too_long.append(f"{name}:{node.lineno}: a string of "
                                f"{node.value.count(chr(10))} lines")
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not name.startswith("cli/"):
                modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""] + [f"{node.module}.{a.name}"
                                                       for a in node.names])
                if name != "__main__.py" and any(
                        m in ("charrnn.views", "charrnn.train") or m.startswith("charrnn.cli")
                        for m in modules):
                    too_long.append(f"{name} imports {modules[0]}")
    assert too_long == []


def test_the_command_line_imports_no_torch(tmp_path):
    code = "import sys, charrnn.cli, charrnn.cli.app; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=child_env())
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
