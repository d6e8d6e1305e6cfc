"""Numbered checkpoints and early stopping: ``--save-every N`` writes ``step-N.pt`` (with
last.pt), ``--keep K`` leaves the newest K, ``--patience P`` ends a run after P
evaluations without a new best; every command reads a numbered checkpoint, and a resume
from one continues from its step exactly."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal

import pytest
import torch

from charrnn import config as cfg
from charrnn import train as train_module
from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.config import ModelConfig
from charrnn.errors import CheckpointError, ConfigError, TrainingInterrupted
from charrnn.model import detach_hidden
from charrnn.train import RunState, train

from helpers import TINY_FLAGS, run, tiny_configs


def step_files(run_dir) -> dict[int, dict]:
    """The numbered checkpoints in ``run_dir``, by the number in their name, each read
    back with plain torch."""
    found = {}
    for path in run_dir.iterdir():
        if path.name.startswith("step-") and path.suffix == ".pt":
            found[int(path.stem.split("-")[1])] = torch.load(path, map_location="cpu",
                                                             weights_only=True)
    return found


def metrics_rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ numbered checkpoints
def test_keep_leaves_exactly_the_newest_numbered_checkpoints(small_text, tmp_path):
    out, keep = tmp_path / "run", 2
    model, config = tiny_configs(max_steps=50, eval_every=25, save_every=10, keep=keep,
                                 val_fraction=0.02, out=str(out))
    result = train(small_text, model, config, progress=False)
    every = [10, 20, 30, 40, 50]                       # the multiples of 10 up to 50
    expected = every[-keep:]
    saved = step_files(out)
    assert sorted(saved) == expected
    assert {p.name for p in out.iterdir()} == {
        "config.toml", "metrics.csv", "best.pt", "last.pt", *(f"step-{n}.pt" for n in expected)}
    for number, ckpt in saved.items():                 # each holds the state of its step
        assert ckpt["step"] == number and ckpt["data_state"]["position"] == number
        assert [row["step"] for row in ckpt["metrics"]] == [s for s in (25, 50) if s <= number]
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 50
    for name, tensor in last["model_state"].items():
        assert torch.equal(tensor, saved[50]["model_state"][name]), name
    assert [p.name for p in result.numbered] == [f"step-{n}.pt" for n in expected]


def test_last_pt_is_written_once_with_each_numbered_checkpoint(small_text, tmp_path,
                                                               monkeypatch):
    """Numbered saves every 10 steps, evaluations every 20: at 10 and 30 the numbered save
    writes last.pt too; at 20 and 40 the evaluation has just written it, once."""
    real, writes = train_module.save_checkpoint, []

    def recording(payload, path):
        writes.append((path.name, payload["step"]))
        return real(payload, path)

    monkeypatch.setattr(train_module, "save_checkpoint", recording)
    model, config = tiny_configs(max_steps=40, eval_every=20, save_every=10,
                                 val_fraction=0.02, out=str(tmp_path / "run"))
    train(small_text, model, config, progress=False)
    assert sorted(step_files(tmp_path / "run")) == [10, 20, 30, 40]   # no --keep: all stay
    assert [(name, step) for name, step in writes if name != "best.pt"] == [
        ("step-10.pt", 10), ("last.pt", 10),
        ("last.pt", 20), ("step-20.pt", 20),          # the evaluation's last.pt, then the file
        ("step-30.pt", 30), ("last.pt", 30),
        ("last.pt", 40), ("step-40.pt", 40)]


def test_a_failed_numbered_save_warns_goes_on_and_deletes_nothing_early(small_text, tmp_path,
                                                                        capsys, monkeypatch):
    out = tmp_path / "run"
    real, present = train_module.save_checkpoint, {}

    def failing_at_30(payload, path):
        if path.name.startswith("step-"):
            present[path.name] = sorted(p.name for p in out.glob("step-*.pt"))
        if path.name == "step-30.pt":
            raise CheckpointError(f"cannot write checkpoint {path}: No space left on device; "
                                  "the previous checkpoint, if any, is kept")
        return real(payload, path)

    monkeypatch.setattr(train_module, "save_checkpoint", failing_at_30)
    code, _, err = run(["train", str(small_text), *TINY_FLAGS[:-1], "--max-steps", "40",
                        "--eval-every", "40", "--save-every", "10", "--keep", "1",
                        "--val-fraction", "0.02", "--out", str(out)], capsys)
    assert code == 0, err
    assert f"warning: cannot write checkpoint {out / 'step-30.pt'}: No space left" in err
    assert "training goes on" in err
    # Each older file was still there while the next one was written.
    assert present == {"step-10.pt": [], "step-20.pt": ["step-10.pt"],
                       "step-30.pt": ["step-20.pt"], "step-40.pt": ["step-20.pt"]}
    assert sorted(step_files(out)) == [40]
    assert load_checkpoint(out / "last.pt")["step"] == 40


def test_a_numbered_checkpoint_resumes_to_the_straight_runs_weights(small_text, tmp_path):
    """Resumed from its step-10.pt after it had gone on to step 30, a run repeats steps
    11-30 and ends with the metrics, weights and optimizer moments of a straight run
    (dropout draws from the restored RNG, the stream from the restored position). Its
    folder is a copy of the straight run's, as it was at step 10 but for the files of
    later steps."""
    model = ModelConfig(cell="lstm", embedding_dim=16, hidden_size=32, num_layers=2,
                        dropout=0.3)
    settings = dict(max_steps=30, eval_every=10, save_every=10, warmup_steps=8)
    _, straight = tiny_configs(**settings, out=str(tmp_path / "straight"))
    train(small_text, model, straight, progress=False)
    shutil.copytree(tmp_path / "straight", tmp_path / "again")
    for name in ("last.pt", "step-20.pt", "step-30.pt"):   # nothing left of steps 11-30
        (tmp_path / "again" / name).unlink()
    _, again = tiny_configs(**settings, out=str(tmp_path / "again"))

    started = {}
    result = train(small_text, model, again, resume=tmp_path / "again" / "step-10.pt",
                   progress=False, on_start=started.update)
    assert started["resumed_at"] == 10 and result.step == 30
    a, b = metrics_rows(tmp_path / "straight"), metrics_rows(tmp_path / "again")
    for column in ("step", "epoch", "lr", "train_loss", "val_loss", "val_bpc"):
        assert [r[column] for r in a] == [r[column] for r in b], column
    for name in ("last.pt", "step-20.pt", "step-30.pt"):
        first, second = (load_checkpoint(tmp_path / run_name / name)
                         for run_name in ("straight", "again"))
        assert first["step"] == second["step"]
        for key, tensor in first["model_state"].items():
            assert torch.equal(tensor, second["model_state"][key]), (name, key)
        for s, t in zip(first["optimizer_state"]["state"].values(),
                        second["optimizer_state"]["state"].values()):
            assert torch.equal(s["exp_avg"], t["exp_avg"]), name


def test_a_resume_from_an_earlier_step_replaces_the_later_numbered_checkpoints(
        small_text, tmp_path, capsys):
    """Step files 10..40 on disk; resumed from step-20.pt with a new lr, --save-every 5,
    --keep 3 and a budget of 30: the continuation's files are 25 and 30 (the 30 of the
    first continuation is gone, and so is its 40), and --keep counts them with 20."""
    out = tmp_path / "run"
    code, _, err = run(["train", str(small_text), *TINY_FLAGS, "--max-steps", "40",
                        "--eval-every", "10", "--save-every", "10", "--val-fraction", "0.02",
                        "--out", str(out)], capsys)
    assert code == 0, err
    before = step_files(out)
    assert sorted(before) == [10, 20, 30, 40]
    best = (out / "best.pt").read_bytes()
    going_back = ["train", "--resume", str(out / "step-20.pt"), "--max-steps", "30",
                  "--save-every", "5", "--keep", "3", "--lr", "0.01", "-q"]
    code, _, err = run(going_back, capsys)      # only when asked: best.pt would go too
    error = err.splitlines()[-1]
    assert code == 1 and error.startswith("error: resuming "), err
    assert "back from step 40 to step 20" in error and "--overwrite" in error
    assert (out / "best.pt").read_bytes() == best and sorted(step_files(out)) == [10, 20, 30, 40]
    code, _, err = run(going_back[:-1] + ["--overwrite"], capsys)     # not -q: the notes
    assert code == 0, err
    assert "save_every 10 -> 5" in err and "keep 0 -> 3" in err
    after = step_files(out)
    assert sorted(after) == [20, 25, 30]
    for key, tensor in before[20]["model_state"].items():      # step-20.pt untouched
        assert torch.equal(tensor, after[20]["model_state"][key])
    assert any(not torch.equal(t, after[30]["model_state"][k])   # a new step 30
               for k, t in before[30]["model_state"].items())
    assert [row["step"] for row in after[30]["metrics"]] == [10, 20, 30]
    assert [row["step"] for row in metrics_rows(out)] == ["10", "20", "30"]
    assert load_checkpoint(out / "last.pt")["step"] == 30


def test_keep_without_save_every_is_refused_and_old_settings_compare_to_defaults():
    with pytest.raises(ConfigError, match=r"train.keep \(3\) needs save_every"):
        cfg.build("train", {"keep": 3})
    assert cfg.build("train", {"keep": 3, "save_every": 100}).keep == 3
    # A checkpoint written before these settings existed: they had their defaults.
    saved = {k: v for k, v in cfg.to_dict(cfg.TrainConfig()).items()
             if k not in ("save_every", "keep", "patience")}
    assert cfg.changes(saved, cfg.TrainConfig()) == []
    assert cfg.changes(saved, cfg.TrainConfig(patience=4)) == ["patience 0 -> 4"]


# --------------------------------------------------------------------------- patience
def scripted(losses: list[float]):
    """``RunState.record_eval`` that records the i-th evaluation's val loss as
    ``losses[i]`` (by the evaluations the run already holds, so a resumed run goes on
    down the same list)."""
    real = RunState.record_eval

    def record_eval(self, val_loss, epoch, lr):
        return real(self, losses[len(self.history)], epoch, lr)
    return record_eval


def first_stop(losses: list[float], patience: int) -> int:
    """The 1-based evaluation after which ``patience`` evaluations in a row have brought
    no new best: worked out over the list, evaluation by evaluation."""
    best, since = float("inf"), 0
    for i, loss in enumerate(losses, start=1):
        if loss < best:
            best, since = loss, 0
        else:
            since += 1
        if since == patience:
            return i
    raise AssertionError("never stops")


LOSSES = [3.0, 2.5, 2.6, 2.7, 2.4, 2.45, 2.4, 2.6, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5]
# An evaluation every 2 steps, one for each of LOSSES, of a small validation text (the
# losses are scripted: the pass only has to run).
SCRIPTED_FLAGS = ["--max-steps", "28", "--eval-every", "2", "--warmup-steps", "2",
                  "--val-fraction", "0.01"]


def test_patience_stops_at_the_first_evaluation_that_exhausts_it(small_text, tmp_path,
                                                                 capsys, monkeypatch):
    monkeypatch.setattr(RunState, "record_eval", scripted(LOSSES))
    out = tmp_path / "run"
    code, stdout, err = run(["train", str(small_text), *TINY_FLAGS[:-1], *SCRIPTED_FLAGS,
                             "--patience", "3", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    stop = first_stop(LOSSES, 3)                                   # the 8th: step 16
    assert stop == 8
    assert [int(r["step"]) for r in metrics_rows(out)] == [2 * i for i in range(1, stop + 1)]
    assert ("stopping early: no improvement in 3 evaluations since step 10 (best 2.4000)"
            in err.splitlines())
    assert "done: 16 steps (stopped early)" in err
    summary = json.loads(stdout)
    assert summary["stopped_early"] is True and summary["step"] == 16
    assert summary["best_step"] == 10 and summary["best_val_loss"] == pytest.approx(2.4)
    assert load_checkpoint(out / "last.pt")["step"] == 16
    assert load_checkpoint(out / "best.pt")["step"] == 10

    # Resumed as it is, it has nothing to train; without patience it goes on.
    code, stdout, err = run(["train", "--resume", str(out), "--json"], capsys)
    assert code == 0, err
    assert "nothing to train, the run had already stopped early at step 16 (no new best " \
           "since step 10)" in err
    assert json.loads(stdout)["step"] == 16 and json.loads(stdout)["stopped_early"] is True
    code, stdout, err = run(["train", "--resume", str(out), "--patience", "0", "--json", "-q"],
                            capsys)
    assert code == 0, err
    assert json.loads(stdout)["step"] == 28 and json.loads(stdout)["stopped_early"] is False


def test_an_interrupted_run_keeps_its_patience_count_even_from_an_older_checkpoint(
        small_text, tmp_path, capsys, monkeypatch):
    """Ctrl-C at step 13 (after 6 evaluations, 1 of them since the best), then a resume
    from a last.pt whose settings predate --patience: the run still stops after the 8th
    evaluation, as the uninterrupted one does."""
    monkeypatch.setattr(RunState, "record_eval", scripted(LOSSES))
    calls = {"n": 0}

    def detach_and_interrupt(hidden):       # once per step, after the update
        calls["n"] += 1
        if calls["n"] == 13:
            os.kill(os.getpid(), signal.SIGINT)
        return detach_hidden(hidden)

    monkeypatch.setattr(train_module, "detach_hidden", detach_and_interrupt)
    out = tmp_path / "run"
    model, config = tiny_configs(max_steps=28, eval_every=2, warmup_steps=2, val_fraction=0.01,
                                 patience=3, out=str(out))
    with pytest.raises(TrainingInterrupted):
        train(small_text, model, config, progress=False)
    monkeypatch.setattr(train_module, "detach_hidden", detach_hidden)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 13 and len(ckpt["metrics"]) == 6
    for key in ("save_every", "keep", "patience"):         # as an older charrnn wrote it
        del ckpt["train_config"][key]
    save_checkpoint(ckpt, out / "last.pt")

    code, stdout, err = run(["train", "--resume", str(out), "--patience", "3", "--json"],
                            capsys)
    assert code == 0, err
    assert "resuming with changed training settings: patience 0 -> 3" in err
    assert json.loads(stdout)["step"] == 2 * first_stop(LOSSES, 3) == 16
    assert json.loads(stdout)["stopped_early"] is True


def test_patience_stops_a_run_whose_validation_loss_only_rises(tmp_path, capsys):
    """Trained on 'aaaaaaaaab' repeated and validated on 'bbbbbbbbba': the more the model
    learns, the worse the validation text scores. The run must stop at the first
    evaluation where 2 evaluations in a row have passed without a new best, read from its
    own metrics.csv, well before its budget."""
    train_text, val_text = tmp_path / "a.txt", tmp_path / "b.txt"
    train_text.write_text("aaaaaaaaab" * 2000, encoding="utf-8")
    val_text.write_text("bbbbbbbbba" * 100, encoding="utf-8")
    out = tmp_path / "run"
    code, stdout, err = run(["train", str(train_text), *TINY_FLAGS[:-1], "--val-file",
                             str(val_text), "--max-steps", "500", "--eval-every", "5",
                             "--warmup-steps", "0", "--patience", "2", "--out", str(out),
                             "--json"], capsys)
    assert code == 0, err
    losses = [float(r["val_loss"]) for r in metrics_rows(out)]
    stop = first_stop(losses, 2)
    assert len(losses) == stop and 5 * stop < 500
    assert json.loads(stdout)["stopped_early"] is True
    assert json.loads(stdout)["step"] == 5 * stop
    assert sum("stopping early" in line for line in err.splitlines()) == 1


# ------------------------------------------------------------- commands on step-N.pt
@pytest.fixture(scope="module")
def numbered_run(small_text, tmp_path_factory):
    """A tiny run with step-10.pt and step-20.pt (evaluated at 10 and 20)."""
    out = tmp_path_factory.mktemp("numbered") / "run"
    model, config = tiny_configs(max_steps=20, eval_every=10, save_every=10, out=str(out))
    train(small_text, model, config, progress=False)
    return out


def test_eval_of_a_numbered_checkpoint_gives_its_steps_val_loss(numbered_run, small_text,
                                                                tmp_path, capsys):
    text = small_text.read_text(encoding="utf-8")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(text[len(text) - len(text) // 10:], encoding="utf-8")
    code, out, err = run(["eval", str(numbered_run / "step-10.pt"), str(held_out), "--json"],
                         capsys)
    assert code == 0, err
    row = metrics_rows(numbered_run)[0]
    assert row["step"] == "10"
    assert abs(json.loads(out)["nats_per_char"] - float(row["val_loss"])) < 1e-6


def test_sample_and_inspect_read_a_numbered_checkpoint(numbered_run, capsys):
    code, out, err = run(["sample", str(numbered_run / "step-10.pt"), "--len", "40",
                          "--seed", "3"], capsys)
    assert code == 0, err
    assert len(out) == 40
    code, again, _ = run(["sample", str(numbered_run / "step-10.pt"), "--len", "40",
                          "--seed", "3"], capsys)
    assert again == out
    code, out, err = run(["inspect", str(numbered_run / "step-10.pt"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["checkpoint"]["step"] == 10


def test_runs_lists_the_run_once_with_its_numbered_checkpoints(numbered_run, tmp_path, capsys,
                                                               monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(numbered_run, root / "numbered")
    only_steps = root / "only-steps"            # a run folder left with numbered files only
    only_steps.mkdir()
    shutil.copy(numbered_run / "step-10.pt", only_steps / "step-10.pt")
    code, out, err = run(["runs", str(root), "--json"], capsys)
    assert code == 0, err
    listed = {os.path.basename(r["path"]): r for r in json.loads(out)}
    assert set(listed) == {"numbered", "only-steps"}
    assert listed["numbered"]["numbered_steps"] == [10, 20] and listed["numbered"]["steps"] == 20
    assert listed["numbered"]["checkpoints"] == ["best.pt", "last.pt", "step-10.pt",
                                                 "step-20.pt"]
    assert listed["only-steps"]["steps"] == 10 and listed["only-steps"]["model"] == "2x32 lstm"
    code, out, err = run(["sample", str(only_steps), "--len", "5"], capsys)   # its newest
    assert code == 0 and len(out) == 5 and f"sampling from {only_steps / 'step-10.pt'}" in err
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(["runs", str(root)], capsys)
    header, *rows = out.splitlines()
    assert header.split()[-2:] == ["step-N.pt", "run"]
    by_run = {line.split()[-1]: line.split()[-2] for line in rows[:2]}
    assert by_run == {str(root / "numbered"): "2", str(root / "only-steps"): "1"}


def test_outputs_never_write_over_a_numbered_checkpoint(numbered_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(numbered_run, copy)
    before = (copy / "step-10.pt").read_bytes()
    for name in ("step-10.pt", "step-30.pt"):      # one there, one the run may write later
        code, out, err = run(["sample", str(copy), "-o", str(copy / name)], capsys)
        assert code == 1 and out == ""
        assert err.strip().endswith(f"{copy / name}: it would replace a run's checkpoint; "
                                    "choose another file name")
    assert (copy / "step-10.pt").read_bytes() == before and not (copy / "step-30.pt").exists()
    elsewhere = tmp_path / "notes"                 # the same name outside a run is a file
    elsewhere.mkdir()
    code, _, err = run(["sample", str(copy), "-o", str(elsewhere / "step-30.pt"), "--len", "5"],
                       capsys)
    assert code == 0, err
    assert len((elsewhere / "step-30.pt").read_text(encoding="utf-8")) == 5


def test_a_new_run_replaces_old_numbered_checkpoints_only_with_overwrite(numbered_run,
                                                                         small_text, tmp_path,
                                                                         capsys):
    folder = tmp_path / "run"
    shutil.copytree(numbered_run, folder)
    (folder / "best.pt").unlink()
    (folder / "last.pt").unlink()
    (folder / "metrics.csv").unlink()
    (folder / "config.toml").unlink()                  # numbered checkpoints alone
    argv = ["train", str(small_text), *TINY_FLAGS, "--max-steps", "5", "--eval-every", "5",
            "--out", str(folder)]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert f"run folder {folder} already holds a run (2 step-N.pt)" in err
    assert sorted(step_files(folder)) == [10, 20]
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert step_files(folder) == {}                  # none of the old run's steps mix in
    assert load_checkpoint(folder / "last.pt")["step"] == 5


def test_a_new_session_removes_the_temporary_file_of_a_killed_numbered_save(tmp_path):
    from charrnn import files

    folder = tmp_path / "run"
    folder.mkdir()
    stale = folder / ".step-30.pt.0a1b2c3d.tmp"     # what atomic_write leaves when killed
    stale.write_bytes(b"half a checkpoint")
    kept = folder / "step-20.pt"
    kept.write_bytes(b"a whole one")
    files.prepare_run_dir(folder, "[model]\n", checkpoint_bytes=1, replaced=[])
    assert not stale.exists() and kept.read_bytes() == b"a whole one"
