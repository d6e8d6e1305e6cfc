"""Time to quality: run the time-budgeted presets on tiny-shakespeare and report the
validation loss each reaches, with the wall time of the whole command.

    python benchmarks/quality.py                       # both presets, 2 runs each
    python benchmarks/quality.py --preset 105s --runs 3
    python benchmarks/quality.py --json

Each run is ``charrnn train CORPUS --config configs/shakespeare-<preset>.toml`` in a
fresh process; the loss is the final full validation pass (nats/char on the last 10%).
The processor (name, flags, CPU count) is printed first, and is "processor" in --json.
"""

from __future__ import annotations

import argparse
import csv
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

PRESETS = {"105s": 1.48, "10min": 1.42}  # preset -> target val loss
CORPUS = ROOT / "data" / "tinyshakespeare.txt"


def run_preset(preset: str, out: Path, device: str | None) -> dict:
    command = [sys.executable, "-m", "charrnn", "train", str(CORPUS), "--config",
               str(ROOT / "configs" / f"shakespeare-{preset}.toml"), "--out", str(out), "-q"]
    if device:
        command += ["--device", device]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    return {"wall_s": round(wall, 1), "steps": int(rows[-1]["step"]),
            "val_loss": round(float(rows[-1]["val_loss"]), 4),
            "chars_per_s": float(rows[-1]["chars_per_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), action="append")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--device", default=None, help="passed to charrnn train")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    processor = machine.describe()
    print(machine.summary(processor), file=sys.stderr, flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.preset or list(PRESETS):
            runs = []
            for i in range(args.runs):
                runs.append(run_preset(preset, Path(tmp) / f"{preset}-{i}", args.device))
                print(f"{preset} run {i + 1}: {runs[-1]}", file=sys.stderr, flush=True)
            losses = [r["val_loss"] for r in runs]
            results[preset] = {"target": PRESETS[preset], "runs": runs,
                               "median_val_loss": round(statistics.median(losses), 4),
                               "met": statistics.median(losses) <= PRESETS[preset]}
    if args.json:
        print(json.dumps({"processor": processor, **results}))
        return
    print(machine.summary(processor))
    for preset, r in results.items():
        walls = ", ".join(f"{x['wall_s']}s" for x in r["runs"])
        losses = ", ".join(f"{x['val_loss']:.4f}" for x in r["runs"])
        print(f"shakespeare-{preset}: val {losses} (median {r['median_val_loss']:.4f}, target "
              f"{r['target']}: {'met' if r['met'] else 'missed'}); wall {walls}")


if __name__ == "__main__":
    main()
