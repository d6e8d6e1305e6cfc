"""Time-budget benchmark: how long `charrnn train --max-time B` takes as a whole command,
from the process's start to its exit, on an idle machine and beside a process that keeps
one core busy (a browser, another job). The suite checks the budget's rules on the run's
own clock (tests/test_budget.py); this prints the wall-clock figures a user sees.

    python benchmarks/budget.py                    # budgets 12 s and 30 s, 2 runs each
    python benchmarks/budget.py --budgets 6 60 --runs 3 --json

For each budget and load: the median wall time of the whole command, its overrun past
the budget (the worst run's too), the steps trained, and how many runs the budget was
refused for (one line, nothing trained: a start-up and one step do not fit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import machine  # noqa: E402

CORPUS = ROOT / "data" / "tinyshakespeare.txt"
BUSY = [sys.executable, "-c", "while True: pass"]


def run_once(budget: float, out: Path, busy: bool) -> dict:
    """One whole `charrnn train --max-time budget` command; its wall time and result."""
    neighbour = subprocess.Popen(BUSY) if busy else None
    try:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(CORPUS),
                               "--max-time", f"{budget:g}", "--out", str(out), "-q", "--json"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        wall = time.perf_counter() - start
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    if done.returncode == 1 and "leaves no time to train" in done.stderr:
        return {"wall_s": round(wall, 2), "refused": True, "steps": 0}
    if done.returncode != 0:
        sys.exit(f"charrnn train failed ({done.returncode}): {done.stderr.strip()}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "refused": False, "steps": result["step"]}


def summarise(budget: float, load: str, runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    return {"budget_s": budget, "load": load, "runs": runs,
            "median_wall_s": statistics.median(walls),
            "median_overrun_s": round(statistics.median(walls) - budget, 2),
            "worst_overrun_s": round(max(walls) - budget, 2),
            "median_steps": statistics.median(r["steps"] for r in runs),
            "refused": sum(r["refused"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[12.0, 30.0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    processor = machine.describe()
    print(machine.summary(processor), file=sys.stderr, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:
            runs: dict[str, list[dict]] = {"idle": [], "busy core": []}
            for i in range(args.runs):     # idle and busy in turn, so drift hits both
                for load, kept in runs.items():
                    kept.append(run_once(budget, Path(tmp) / f"{budget:g}-{load}-{i}",
                                         busy=load != "idle"))
                    print(f"--max-time {budget:g}, {load}: {kept[-1]['wall_s']:.2f} s",
                          file=sys.stderr, flush=True)
            rows += [summarise(budget, load, kept) for load, kept in runs.items()]
    if args.json:
        print(json.dumps({"processor": processor, "results": rows}))
        return
    print(machine.summary(processor))
    print(f"{'budget':>7} {'load':>10} {'wall (median)':>14} {'overrun':>8} {'worst':>7} "
          f"{'steps':>7} {'refused':>8}")
    for r in rows:
        print(f"{r['budget_s']:>6g}s {r['load']:>10} {r['median_wall_s']:>13.2f}s "
              f"{r['median_overrun_s']:>+7.2f}s {r['worst_overrun_s']:>+6.2f}s "
              f"{r['median_steps']:>7g} {r['refused']:>5}/{len(r['runs'])}")


if __name__ == "__main__":
    main()
