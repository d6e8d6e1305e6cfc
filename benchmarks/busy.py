"""Training speed with one thread, with all of them, and with the count charrnn chooses,
on a quiet machine and beside one busy process, side by side in one run.

    python benchmarks/bench.py --threads          # these figures alone, about 3 minutes
    python benchmarks/bench.py --threads --quick  # about 1 minute

Each figure is the chars/s of ``charrnn.train.train`` (training steps only) over a
``--max-time`` run of the default model, in rounds that take each thread setting in
turn, so that the machine's drift falls on all of them alike; the median over rounds is
reported. The busy process is ``python -c "while True: pass"``, started before a
round's runs and stopped after them: on a 2-core machine it takes one core, as a
browser tab or another job does. The ratios the figures are judged by:
``auto / one thread`` beside the busy process and ``auto / the better of one and all``
on the quiet machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from charrnn import threads
from charrnn.config import ModelConfig, TrainConfig
from charrnn.train import train

SETTINGS = ("one", "all", "auto")


def run_once(text: Path, setting: str, seconds: float, out: Path) -> tuple[float, int]:
    """chars/s of one run of the default model with ``setting`` threads, and the count
    it ended with."""
    count = {"one": 1, "all": threads.available(), "auto": 0}[setting]
    config = TrainConfig(max_time=seconds, eval_every=10**9, sample_every=0,
                         val_fraction=1e-4, device="cpu", threads=count, out=str(out))
    result = train(text, ModelConfig(), config, progress=False, overwrite=True)
    return result.chars_per_s, result.threads


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def figures(text: Path, seconds: float, rounds: int, folder: Path, log) -> dict:
    """{"quiet"|"busy": {setting: median chars/s}, "ratios": {...}}."""
    saved = os.environ.pop("OMP_NUM_THREADS", None)    # "auto" must choose for itself
    before = threads.current()
    runs: dict[str, dict[str, list[float]]] = {"quiet": {}, "busy": {}}
    try:
        for r in range(rounds):
            for load in ("quiet", "busy"):
                neighbour = busy_process() if load == "busy" else None
                try:
                    for setting in SETTINGS:
                        rate, count = run_once(text, setting, seconds,
                                               folder / f"{load}-{setting}")
                        runs[load].setdefault(setting, []).append(rate)
                        log(f"threads, round {r + 1}, {load}, {setting}: {rate:,.0f} chars/s"
                            f" ({count} at the end)")
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
    finally:
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved
        threads.set_threads(before)
    medians = {load: {s: round(statistics.median(v)) for s, v in by.items()}
               for load, by in runs.items()}
    # The same ratios within each round, whose runs met the same machine: its speed can
    # drift between rounds more than the settings differ within one.
    each_round = [ratios({load: {s: v[r] for s, v in by.items()} for load, by in runs.items()})
                  for r in range(rounds)]
    return {**medians, "seconds": seconds, "rounds": rounds, "cpus": threads.available(),
            "ratios": ratios(medians),
            "paired_ratios": {k: round(statistics.median(r[k] for r in each_round), 3)
                              for k in each_round[0]}}


def ratios(speeds: dict) -> dict[str, float]:
    """The figures the thread choice is judged by, from {load: {setting: chars/s}}."""
    q, b = speeds["quiet"], speeds["busy"]
    return {"busy_auto_over_one": round(b["auto"] / b["one"], 3),
            "quiet_auto_over_best": round(q["auto"] / max(q["one"], q["all"]), 3)}


def describe(f: dict) -> list[str]:
    lines = []
    for load in ("quiet", "busy"):
        row = f[load]
        lines.append(f"train 2x256 lstm, {load}{' (one busy process beside it)' * (load == 'busy')}"
                     f": one thread {row['one']:,}, all {f['cpus']} {row['all']:,}, chosen "
                     f"{row['auto']:,} chars/s")
    r = f["ratios"]
    lines.append(f"  chosen / one thread beside the busy process: {r['busy_auto_over_one']} "
                 f"(goal 0.8 or more); chosen / the better of one and all on the quiet "
                 f"machine: {r['quiet_auto_over_best']} (goal 0.95 or more); medians of "
                 f"{f['rounds']} rounds of {f['seconds']:g} s runs")
    p = f["paired_ratios"]
    lines.append(f"  the same ratios within each round, median over rounds: "
                 f"{p['busy_auto_over_one']} and {p['quiet_auto_over_best']}")
    return lines
