"""The command line as a user meets it: help, the main job end to end, and every
error a user can cause answered in one line with exit code 1."""

from __future__ import annotations

import json
import os
import pickle
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import charrnn, child_env, run


def test_help_lists_the_commands_without_importing_torch(tmp_path):
    code = ("import sys\nfrom charrnn.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=child_env()).stdout
    assert "NO TORCH" in out
    for command in ("train", "sample", "inspect"):
        assert command in out


def test_train_then_sample_then_inspect_end_to_end(small_text, tmp_path, capsys):
    trained = charrnn("train", str(small_text), "--hidden-size", "32", "--embedding-dim", "16",
                      "--max-steps", "12", "--eval-every", "6", "--sample-every", "6",
                      "--batch-size", "8", "--seq-length", "32", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout == ""                      # narration goes to stderr
    assert "sample at step 6" in trained.stderr and "best.pt" in trained.stderr
    # Not a terminal: plain lines, one per evaluation, and no bar redrawn in place.
    assert "\r" not in trained.stderr and "step 6: train" in trained.stderr
    assert trained.stderr.strip().splitlines()[-1] == "next: charrnn sample --len 200"
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name != ".cache"]
    assert len(runs) == 1 and (runs[0] / "best.pt").is_file()

    sampled = charrnn("sample", "--len", "200", "--seed", "3", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    assert len(sampled.stdout) == 200                # exactly the characters asked for
    assert "best.pt" in sampled.stderr
    again = charrnn("sample", "--len", "200", "--seed", "3", cwd=tmp_path)
    assert again.stdout == sampled.stdout

    primed = charrnn("sample", "--len", "30", "--prime", "ROMEO:", "--num-samples", "3",
                     "--seed", "1", cwd=tmp_path)
    texts = primed.stdout.split("\n\n")
    assert len(texts) == 3 and all(t.startswith("ROMEO:") for t in texts)
    assert all(len(t) == 6 + 30 for t in texts)

    # inspect, in this process (the command is the same; its start-up was timed above)
    code, out, err = run(["inspect", "--cell", "lstm"], capsys)   # flags build a model
    assert code == 0, err
    assert "rnn.weight_ih_l0" in out and "1024" in out
    assert err == "describing the model the flags build (not a trained run)\n"
    code, out, err = run(["inspect", "--json"], capsys)   # like sample: the newest run
    assert code == 0, err
    assert err == f"describing {runs[0].relative_to(tmp_path) / 'best.pt'}\n"
    facts = json.loads(out)
    assert facts["checkpoint"]["path"] == str(runs[0].relative_to(tmp_path) / "best.pt")
    # Forward-pass shapes of a run: its own batch (8) and window (32), unless flags say.
    assert facts["tensors"]["input_ids"] == [8, 32]
    assert facts["tensors"]["h_n"] == [2, 8, 32]                 # 2 layers of 32 units
    code, out, _ = run(["inspect", str(runs[0]), "--batch-size", "2", "--json"], capsys)
    assert json.loads(out)["tensors"]["input_ids"] == [2, 32]
    code, out, err = run(["inspect", str(runs[0])], capsys)
    assert code == 0, err
    assert "rnn.weight_hh_l1" in out and "vocab" in out.lower()


def test_inspect_shows_the_seeds_example(capsys):
    code, out, _ = run(["inspect", "--cell", "rnn", "--input-size", "10", "--hidden-size", "20",
                        "--num-layers", "2", "--seq-length", "5", "--batch-size", "3",
                        "--no-batch-first", "--verify", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    shapes = {p["name"]: p["shape"] for p in report["parameters"]}
    assert shapes["rnn.weight_ih_l0"] == [20, 10] and shapes["rnn.weight_hh_l0"] == [20, 20]
    assert shapes["rnn.weight_ih_l1"] == [20, 20] and shapes["rnn.bias_hh_l1"] == [20]
    assert report["tensors"]["embedded"] == [5, 3, 10]
    assert report["tensors"]["h0"] == [2, 3, 20] and report["tensors"]["h_n"] == [2, 3, 20]
    assert report["tensors"]["output"] == [5, 3, 20]
    assert report["verify_ok"] and max(report["verify"].values()) <= 1e-5


def test_inspect_verifies_a_bidirectional_projected_lstm_in_text(capsys):
    code, out, _ = run(["inspect", "--cell", "lstm", "--hidden-size", "8", "--proj-size", "4",
                        "--bidirectional", "--num-layers", "2", "--verify"], capsys)
    assert code == 0
    assert "rnn.weight_hr_l1_reverse" in out and "PASS" in out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, tiny_run):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (d / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (d / "short.txt").write_text("to be or not to be", encoding="utf-8")
    (d / "unknown.toml").write_text("[train]\nlearning_rate = 0.1\n", encoding="utf-8")
    (d / "broken.toml").write_text("[model]\nhidden_size = = 3\n", encoding="utf-8")
    (d / "notes.pt").write_text("just some text", encoding="utf-8")
    (d / "zero.pt").write_bytes(b"")
    whole = (tiny_run / "best.pt").read_bytes()
    (d / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    torch.save({"embedding.weight": torch.zeros(3, 2)}, d / "state_dict.pt")
    newer = torch.load(tiny_run / "best.pt", weights_only=True)
    newer["format_version"] = 99
    torch.save(newer, d / "newer.pt")
    (d / "foreign.txt").write_text("Ωmega ≈ çà" * 500, encoding="utf-8")

    class Payload:  # unpickling this would create a file
        def __reduce__(self):
            return (Path.touch, (d / "pwned",))

    with open(d / "evil.pt", "wb") as f:
        pickle.dump({"format_version": 1, "x": Payload()}, f)
    torch.save({"format_version": 1, "vocab": "ab", "model_config": {}, "train_config": {},
                "model_state": Payload()}, d / "evil-zip.pt")     # torch's own zip format
    (d / "random.pt").write_bytes(os.urandom(4096))
    corrupted = bytearray(whole)
    corrupted[len(whole) // 3: len(whole) // 3 + 64] = random.Random(0).randbytes(64)
    (d / "corrupted.pt").write_bytes(bytes(corrupted))
    (d / "utf16.txt").write_bytes("to be or not to be".encode("utf-16"))
    return d


# `--device cuda` is a user error only where there is no GPU; elsewhere ask for one too many.
CUDA_FLAG, CUDA_MESSAGE = (("cuda", "no CUDA GPU is available here")
                           if not torch.cuda.is_available()
                           else (f"cuda:{torch.cuda.device_count()}", "CUDA device(s)"))

BAD_INPUTS = [
    # (argv with {d} = bad files folder, {run} = tiny run, {text} = good text, expected text)
    (["train", "{d}/missing.txt"], "does not exist"),
    # its first text file that has text, by name (empty ones are left out, with a note)
    (["train", "{d}"], "latin1.txt is not valid UTF-8"),
    (["train", "{d}/*.nothing"], "no text file matches"),
    (["prepare", "{run}"], "holds no text files"),
    (["train", "{d}/empty.txt"], "is empty"),
    (["train", "{d}/binary.bin"], "NUL byte at offset 4"),
    (["train", "{d}/latin1.txt"], "not valid UTF-8 (byte 0xe9 at offset 3)"),
    (["train", "{d}/utf16.txt"], "is UTF-16LE text, not UTF-8"),
    (["train", "{d}/short.txt"], "needs at least"),
    (["train", "{text}", "--config", "{d}/unknown.toml"], "did you mean 'lr'"),
    (["train", "{text}", "--config", "{d}/broken.toml"], "not valid TOML"),
    (["train", "{text}", "--config", "{d}/missing.toml"], "does not exist"),
    (["train", "{text}", "--hidden-size", "-3"], "hidden_size must be at least 1"),
    (["train", "{text}", "--batch-size", "0"], "batch_size must be at least 1"),
    (["train", "{text}", "--dropout", "1.5"], "dropout must be at most 0.99"),
    (["train", "{text}", "--lr", "0"], "lr must be greater than 0"),
    (["train", "{text}", "--val-fraction", "0.9"], "val_fraction must be at most 0.5"),
    (["train", "{text}", "--cell", "lstn"], "did you mean 'lstm'"),
    (["train", "{text}", "--optimizer", "adamm"], "must be one of adamw"),
    (["train", "{text}", "--decay", "exponential"], "train.decay must be one of cosine, linear"),
    (["train", "{text}", "--cache-dir", "{d}/binary.bin"], "cannot write the corpus cache"),
    (["train", "{text}", "--bidirectional"], "must not|must predict"),
    (["train", "{text}", "--tie-weights", "--embedding-dim", "8"], "drop --tie-weights"),
    (["train", "{text}", "--cell", "gru", "--proj-size", "4"], "lstm cell only"),
    (["train", "{text}", "--device", "cuda:99"], "cuda"),
    (["train", "{text}", "--device", CUDA_FLAG], CUDA_MESSAGE),
    (["train", "{text}", "--device", "tpu"], "unknown device|unsupported device"),
    # A record separator in a value would split the line for str.splitlines: escaped.
    (["eval", "{run}", "{text}", "--device", "\x1e"], "unknown device '\\x1e'; use auto"),
    (["train", "{text}", "--resume", "{d}/nothing"], "does not exist"),
    (["train", "{text}", "--resume", "{run}", "--hidden-size", "64"], "hidden_size 32 -> 64"),
    (["train", "{d}/foreign.txt", "--init-from", "{run}"], "vocabulary lacks"),
    (["train", "{text}", "--resume", "{run}", "--init-from", "{run}"], "exclude each other"),
    (["train"], "give the TEXT file"),
    (["prepare", "{d}/missing.txt"], "does not exist"),
    (["prepare", "{d}/latin1.txt"], "not valid UTF-8 (byte 0xe9 at offset 3)"),
    (["prepare", "{text}", "--cache-dir", "{d}/binary.bin"], "cannot write the corpus cache"),
    (["eval", "{run}", "{text}", "--cache-dir", "{d}/binary.bin"],
     "binary.bin is a file, not a folder; give a writable folder with --cache-dir"),
    (["sample", "{d}/notes.pt"], "not a readable checkpoint: not a torch checkpoint file"),
    (["sample", "{d}/zero.pt"], "is empty"),
    (["sample", "{d}/truncated.pt"], "truncated or damaged (its zip archive is incomplete)"),
    (["sample", "{d}/state_dict.pt"], "missing format_version"),
    (["sample", "{d}/newer.pt"], "newer charrnn"),
    (["sample", "{d}/evil.pt"], "refused without running any of it"),
    (["sample", "{d}/evil-zip.pt"], "which could run code when loaded; refused"),
    (["sample", "{d}/random.pt"], "not a readable checkpoint"),
    (["sample", "{d}/corrupted.pt"], "is corrupted (checksum mismatch in"),
    (["sample", "{d}"], "is not a run folder (it holds no config.toml"),
    (["sample", "{run}", "--prime", "hello ü€"], "2 character(s) not in the model's vocabulary"),
    (["sample", "{run}", "--prime", ""], "prime text is empty"),
    (["sample", "{run}", "--temperature", "0"], "--temperature must be greater than 0"),
    (["sample", "{run}", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["sample", "{run}", "--top-k", "0"], "--top-k must be at least 1"),
    (["sample", "{run}", "--len", "0"], "--len must be at least 1"),
    (["sample", "{run}", "--num-samples", "0"], "--num-samples must be at least 1"),
    (["sample", "{run}", "--output", "{d}/no/such/dir/out.txt"], "cannot write"),
    (["inspect", "--hidden-size", "0"], "hidden_size must be at least 1"),
    (["inspect", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["inspect", "{run}", "--hidden-size", "8"], "the checkpoint fixes the model"),
]


@pytest.mark.parametrize("argv, expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_code_1(argv, expected, bad_files, tiny_run,
                                                 small_text, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any run folder a mistake could create lands here
    args = [a.format(d=bad_files, run=tiny_run, text=small_text) for a in argv]
    before = {p: p.stat().st_mtime_ns for p in tiny_run.iterdir()}
    code, out, err = run(args, capsys)
    assert code == 1, err
    assert out == ""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err
    assert len(lines) == 1 or (lines[0].startswith(("sampling from", "scoring ", "note: ")) and
                               len(lines) == 2)
    import re
    assert re.search(expected if "|" in expected else re.escape(expected), lines[-1]), lines[-1]
    assert not (bad_files / "pwned").exists()        # nothing from a file was executed
    assert {p: p.stat().st_mtime_ns for p in tiny_run.iterdir()} == before  # nothing lost


def test_usage_errors_are_one_line_with_exit_code_2(capsys):
    code, out, err = run(["train", "x.txt", "--hidden-size", "abc"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--hidden-size" in err
    code, _, err = run(["train", "x.txt", "--no-such-flag"], capsys)
    assert code == 2 and "No such option" in err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("charrnn ")


def terminal() -> tuple[int, int]:
    """A pseudo-terminal of 24 x 120 characters: (leader, follower) descriptors."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    return leader, follower


def read_all(leader: int) -> str:
    """Everything written to the terminal until its last writer closed it."""
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:                      # the writers closed the terminal: all is read
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return shown.decode("utf-8").replace("\r\n", "\n")    # the terminal's own line ends


def test_on_a_terminal_the_sample_ends_with_a_newline(tiny_run, tmp_path):
    leader, follower = terminal()
    with open(follower, "wb", closefd=True) as screen:
        done = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(tiny_run),
                               "--len", "40", "--seed", "2"], stdout=screen,
                              stderr=subprocess.PIPE, env=child_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    text = read_all(leader)
    assert len(text) == 41 and text.endswith("\n")


TINY = ["--hidden-size", "16", "--embedding-dim", "8", "--num-layers", "1", "--max-steps",
        "4", "--eval-every", "2", "--sample-every", "0", "--batch-size", "4", "--seq-length",
        "16", "-q"]


def test_a_run_elsewhere_is_named_in_the_hint_and_never_written_over(small_text, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "my runs" / "a"
    code, _, err = run(["train", str(small_text), *TINY[:-1], "--out", str(out)], capsys)
    assert code == 0, err
    hint = err.strip().splitlines()[-1]
    assert hint == f"next: charrnn sample {shlex.quote(str(out))} --len 200"
    code, text, err = run(shlex.split(hint.removeprefix("next: charrnn ")), capsys)
    assert code == 0 and len(text) == 200, err                # the hint works as typed

    kept = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt", "metrics.csv")}
    refusal = (f"error: run folder {out} already holds a run (best.pt, last.pt, metrics.csv); "
               f"continue it with --resume {out}, train into a new folder with --out, or "
               "replace it with --overwrite")
    for again in (["train", str(small_text), *TINY, "--out", str(out)],
                  ["train", str(small_text), "-q", "--config", str(out / "config.toml")]):
        code, _, err = run(again, capsys)
        assert code == 1 and err.strip() == refusal
    assert {name: (out / name).read_bytes() for name in kept} == kept

    code, _, err = run(["train", str(small_text), *TINY, "--out", str(out), "--seed", "7",
                        "--max-steps", "2", "--overwrite"], capsys)
    assert code == 0, err
    rows = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["2"]   # the new run's rows alone
    for name in ("best.pt", "last.pt"):
        saved = torch.load(out / name, weights_only=True)
        assert saved["step"] == 2 and saved["train_config"]["seed"] == 7


def test_on_a_terminal_the_bar_shows_the_latest_validation_loss(small_text, tmp_path):
    leader, follower = terminal()
    with open(follower, "wb", closefd=True) as screen:
        proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(small_text),
                                 *TINY[:-1], "--lr", "0.03", "--out", str(tmp_path / "run")],
                                stdout=subprocess.PIPE, stderr=screen, env=child_env())
    shown = read_all(leader)
    assert proc.wait(timeout=300) == 0
    rows = (tmp_path / "run" / "metrics.csv").read_text(encoding="utf-8").splitlines()
    val_2, val_4 = (f"{float(row.split(',')[5]):.3f}" for row in rows[1:])
    assert val_2 != val_4
    last_bar = shown.split("4/4")[-1]
    assert f"val {val_4}" in last_bar


# ------------------------------------------------------------ what a newcomer ran into
def test_train_makes_its_run_where_sample_looks_and_says_how_to_sample_it(
        small_text, tmp_path, capsys, monkeypatch):
    """--runs-dir (or CHARRNN_RUNS_DIR) for train as for sample; the closing hint is a
    command that samples the run just trained."""
    flags = ["--hidden-size", "16", "--embedding-dim", "8", "--max-steps", "2",
             "--batch-size", "4", "--seq-length", "16", "--sample-every", "0"]
    monkeypatch.setenv("CHARRNN_RUNS_DIR", str(tmp_path / "elsewhere"))
    code, _, err = run(["train", str(small_text), *flags], capsys)
    assert code == 0, err
    (made,) = [p for p in (tmp_path / "elsewhere").iterdir() if p.name != ".cache"]
    assert err.strip().splitlines()[-1] == "next: charrnn sample --len 200"
    code, out, err = run(["sample", "--len", "5"], capsys)
    assert code == 0 and f"sampling from {made / 'best.pt'}" in err
    monkeypatch.delenv("CHARRNN_RUNS_DIR")
    code, _, err = run(["train", str(small_text), *flags, "--runs-dir", "mine"], capsys)
    assert code == 0, err
    (mine,) = [p for p in (tmp_path / "mine").iterdir() if p.name != ".cache"]
    hint = err.strip().splitlines()[-1]
    assert hint == f"next: charrnn sample {shlex.quote(str(Path('mine') / mine.name))} --len 200"
    code, _, err = run(shlex.split(hint.removeprefix("next: charrnn "))[:-2] + ["--len", "5"],
                       capsys)
    assert code == 0, err


@pytest.mark.parametrize("folder, message", [
    ("runs", "runs is a folder of runs, not a run: name one of them (the newest is runs/"),
    ("texts", "texts is not a run folder (it holds no config.toml, metrics.csv or checkpoint)"),
])
def test_a_folder_that_is_not_a_run_is_named_for_what_it_is(tiny_run, tmp_path, capsys,
                                                             folder, message):
    import shutil

    shutil.copytree(tiny_run, tmp_path / "runs" / "tiny")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello", encoding="utf-8")
    for argv in (["sample", folder], ["eval", folder, "texts/a.txt"],
                 ["export", folder, "-o", "x.onnx"], ["train", "--resume", folder]):
        code, out, err = run(argv, capsys)
        assert code == 1 and out == "", argv
        assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1


def test_quiet_training_says_nothing_and_warnings_are_one_line(small_text, tmp_path, capsys):
    flags = ["--hidden-size", "16", "--embedding-dim", "8", "--max-steps", "2",
             "--batch-size", "4", "--seq-length", "16", "--sample-every", "0",
             "--proj-size", "4"]
    code, out, err = run(["train", str(small_text), *flags, "-q", "--out", "q"], capsys)
    assert code == 0 and err == "" and out == ""
    warned = charrnn("train", str(small_text), *flags, "--out", "w", cwd=tmp_path,
                     PYTHONWARNINGS="always::UserWarning")
    assert warned.returncode == 0, warned.stderr
    assert "oneDNN" not in warned.stderr and "Traceback" not in warned.stderr
    assert all(not line.startswith(" ") for line in warned.stderr.splitlines())


def test_a_resume_whose_text_moved_says_how_to_go_on(small_text, tmp_path, capsys):
    text = tmp_path / "moved.txt"
    text.write_text(small_text.read_text(encoding="utf-8"), encoding="utf-8")
    code, _, err = run(["train", str(text), "--hidden-size", "16", "--embedding-dim", "8",
                        "--max-steps", "2", "--batch-size", "4", "--seq-length", "16",
                        "--out", "r", "-q"], capsys)
    assert code == 0, err
    text.rename(tmp_path / "there.txt")
    code, _, err = run(["train", "--resume", "r", "--max-steps", "4"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and err.strip().endswith(errors[0])
    assert f"the training text {text} of r is gone (moved or removed)" in err
    assert "charrnn train NEW_PLACE --resume r" in err and "--allow-changed-text" in err
    code, _, err = run(["train", "there.txt", "--resume", "r", "--max-steps", "4"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("argv, message", [
    (["train", "{text}", "--nonlinearity", "relu", "--max-steps", "1"],
     "model.nonlinearity relu is the plain rnn cell's; the lstm cell has its own gates"),
    (["train", "{text}", "--cell", "gru", "--nonlinearity", "relu", "--max-steps", "1"],
     "the gru cell has its own gates"),
    (["inspect", "--cell", "lstm", "--nonlinearity", "relu"], "the lstm cell has its own"),
    (["sample", "{run}", "--prime-file", "{empty}"], "--prime-file {empty} is empty"),
    (["inspect", "{run}", "--activations", "{folder}"], "{folder} is a folder; give one text"),
    (["sample", "{run}", "--beam", "4", "--temperature", "0.5"],
     "--temperature sets how characters are drawn, and --beam searches"),
    (["sample", "{run}", "--beam", "2", "--num-samples", "3"],
     "--num-samples 3 asks for more continuations than --beam 2 keeps"),
    (["sample", "{run}", "--beam", "0"], "--beam must be at least 1"),
    (["sample", "{run}", "--beam", "2", "--seed", "3"], "--seed sets how characters are drawn"),
    (["sample", "{run}", "--beam", "5000"], "--beam must be at most 1,000"),
    (["sample", "{run}", "--seed", "99999999999999999999999"], "--seed must be between"),
    (["sample", "{run}", "--seed", "18446744073709551615", "--num-samples", "2"],
     "--seed must be between -2**63 and 2**64 - 2"),
])
def test_settings_that_would_be_ignored_are_refused(tiny_run, small_text, tmp_path, capsys,
                                                    argv, message):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "data").mkdir()
    names = dict(text=str(small_text), run=str(tiny_run), empty="empty.txt", folder="data")
    code, out, err = run([a.format(**names) for a in argv], capsys)
    assert code == 1 and out == ""
    assert message.format(**names) in err and len(err.strip().splitlines()) == 1


def test_the_prime_can_come_from_stdin(tiny_run, capsys, monkeypatch):
    import io

    code, same, err = run(["sample", str(tiny_run), "--prime", "ROMEO:", "--len", "10",
                           "--greedy"], capsys)
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ROMEO:")))
    code, piped, err = run(["sample", str(tiny_run), "--prime-file", "-", "--len", "10",
                            "--greedy"], capsys)
    assert code == 0 and piped == same and piped.startswith("ROMEO:"), err


def test_the_hint_names_the_run_when_sample_would_take_another(small_text, tiny_run,
                                                               tmp_path, capsys):
    """A run beside one that saved later (a sweep's runs end at once): the `next:` line
    names the run, so that it samples what was just trained."""
    import shutil
    import time

    later = tmp_path / "runs" / "later"
    shutil.copytree(tiny_run, later)
    for name in ("best.pt", "last.pt"):
        os.utime(later / name, (time.time() + 3600, time.time() + 3600))
    code, _, err = run(["train", str(small_text), *TINY[:-1], "--runs-dir", "runs"], capsys)
    assert code == 0, err
    hint = err.strip().splitlines()[-1]
    assert hint.startswith("next: charrnn sample runs/") and "later" not in hint


def test_a_prime_piped_in_is_read_as_a_prime_file_is(tiny_run, capsys, monkeypatch):
    import io

    def piped(data: bytes) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        return run(["sample", str(tiny_run), "--prime-file", "-", "--len", "5", "--greedy"],
                   capsys)

    code, out, err = piped(b"\xef\xbb\xbfROMEO:")
    assert code == 0 and out.startswith("ROMEO:"), err
    code, out, err = piped(b"caf\xe9")
    assert code == 1 and err.strip() == (
        "error: --prime-file - (stdin) is not UTF-8 text (byte 0xe9 at offset 3); convert "
        "it, e.g. iconv -f latin1 -t utf-8")
