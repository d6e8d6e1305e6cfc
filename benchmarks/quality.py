"""Time to quality: train a time-budgeted preset on tiny-shakespeare several times and
report the median validation loss, with the processor it was measured on.

    python benchmarks/quality.py                          # every preset below, 3 runs each
    python benchmarks/quality.py --preset 2min             # one preset, 3 runs
    python benchmarks/quality.py --preset 2min --beside 105s
                                   # each run followed by a run of the 105 s preset
    python benchmarks/quality.py --config my.toml --runs 5 --json
    python benchmarks/quality.py --sweep --budget 120 [--corpus pycode] [--threads 1]
                                   # 8 fixed model shapes beside --size auto (sweep.py)

Each run is ``charrnn train CORPUS --config FILE --json`` in a fresh process, timed
from the process's start to its exit (start-up and the final validation included); the
loss is the final full validation pass (nats/char on the last 10%). ``--beside`` runs a
second preset right after each run of the first, so that both see the same machine at
nearly the same moment: a gain measured as the difference of the two travels from one
processor to another better than either number alone.

Beside the losses: training steps, chars/s, the precision the run trained in (a preset
with dtype "auto" trains in bfloat16 on a CPU with bf16 instructions), and the fraction
of this machine's matmul peak in that precision (measured for a few seconds) that the
training steps reached, counting 6 FLOP per weight per character
(``bench.train_flops_per_char``).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import machine, sweep  # noqa: E402
from benchmarks.bench import matmul_peak, train_flops_per_char  # noqa: E402
from charrnn import config as cfg  # noqa: E402

# preset (configs/shakespeare-<name>.toml) -> the validation loss it is meant to reach
PRESETS = {"2min": 1.45, "10min": 1.40, "105s": 1.48}
DEFAULT = ("2min", "10min")
CORPUS = ROOT / "data" / "tinyshakespeare.txt"


def config_path(preset: str) -> Path:
    return ROOT / "configs" / f"shakespeare-{preset}.toml"


@functools.cache
def vocab_size() -> int:
    return len(set(CORPUS.read_text(encoding="utf-8")))


def flops_per_char(model: dict) -> float:
    """Training FLOP per character of the ``[model]`` table a run saved (with --size
    auto, the shape it chose)."""
    return train_flops_per_char(cfg.build("model", model), vocab_size())


def run_once(config: Path, out: Path, extra: list[str]) -> dict:
    """One training command; its wall time, steps, chars/s and final val loss."""
    command = [sys.executable, "-m", "charrnn", "train", str(CORPUS), "--config", str(config),
               "--out", str(out), "--json", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    # What the run said it chose, as a user sees it (no -q: samples too, as for a user).
    said = [line for line in done.stderr.splitlines()
            if line.startswith(("model:", "threads:", "size auto:"))]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    model = cfg.read_toml(out / "config.toml")["model"]
    return {"wall_s": round(wall, 1), "steps": result["step"],
            "chars_per_s": round(result["chars_per_s"]), "dtype": result["dtype"],
            "threads": result["threads"], "val_loss": round(result["val_loss"], 4),
            "model": f"{model['num_layers']}x{model['hidden_size']} d{model['dropout']:g}",
            "train_flop_per_char": round(flops_per_char(model)), "said": said}


class Peaks:
    """This machine's matmul peak (GFLOP/s) in each precision, measured when first asked."""

    def __init__(self) -> None:
        self.gflops: dict[str, float] = {}

    def __call__(self, dtype: str) -> float:
        if dtype not in self.gflops:
            gflops, size = matmul_peak(getattr(torch, dtype), 3.0)
            self.gflops[dtype] = round(gflops, 1)
            print(f"{dtype} matmul peak: {gflops:.1f} GFLOP/s ({size}²)", file=sys.stderr,
                  flush=True)
        return self.gflops[dtype]


def summarise(name: str, config: Path, target: float | None, runs: list[dict],
              peaks: Peaks) -> dict:
    for r in runs:
        r["fraction_of_peak"] = round(r["chars_per_s"] * r["train_flop_per_char"] / 1e9
                                      / peaks(r["dtype"]), 3)
    median = statistics.median(r["val_loss"] for r in runs)
    return {"name": name, "config": str(config), "target": target, "runs": runs,
            "median_val_loss": round(median, 4),
            "median_steps": statistics.median(r["steps"] for r in runs),
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "met": None if target is None else median <= target}


def describe(s: dict) -> str:
    runs = ", ".join(f"{r['val_loss']:.4f} ({r['model']}, {r['wall_s']} s, {r['steps']} steps, "
                     f"{r['chars_per_s']:,} chars/s, {r['dtype']}, "
                     f"{r['fraction_of_peak']:.0%} of its peak)"
                     for r in s["runs"])
    verdict = ("" if s["target"] is None else
               f", target {s['target']}: {'met' if s['met'] else 'missed'}")
    return f"{s['name']}: median {s['median_val_loss']:.4f}{verdict}; runs {runs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), action="append",
                        help=f"configs/shakespeare-NAME.toml (default: {', '.join(DEFAULT)})")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="any other config file with a time budget")
    parser.add_argument("--beside", choices=list(PRESETS),
                        help="run this preset right after every run, for a paired comparison")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default=None, help="passed to charrnn train")
    parser.add_argument("--dtype", default=None, help="passed to charrnn train")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--sweep", action="store_true",
                        help="fixed model shapes beside --size auto at one --budget")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="with --sweep: seconds of wall time per row")
    parser.add_argument("--corpus", default="shakespeare",
                        help="with --sweep: shakespeare, pycode (this Python's standard "
                        "library sources) or a path")
    parser.add_argument("--threads", default=None, help="passed to charrnn train")
    parser.add_argument("--only", choices=("fixed", "auto"),
                        help="with --sweep: run only the fixed shapes, or only the auto row")
    parser.add_argument("--jsonl", type=Path, help="with --sweep: append each row here")
    parser.add_argument("--shape", action="append", type=sweep.parse_shape,
                        help="with --sweep: a fixed shape such as 1x384 or 2x512:0.15 "
                        "(layers x width : dropout) instead of the sweep's own eight")
    args = parser.parse_args()
    extra = [flag for name in ("device", "dtype", "threads") if getattr(args, name)
             for flag in (f"--{name}", getattr(args, name))]
    if args.sweep:
        return run_sweep(args, extra)
    candidates = [(p, config_path(p), PRESETS[p]) for p in args.preset or []]
    candidates += [(str(c), c.resolve(), None) for c in args.config]
    if not candidates:
        candidates = [(p, config_path(p), PRESETS[p]) for p in DEFAULT]

    processor = machine.describe()
    print(machine.summary(processor), file=sys.stderr, flush=True)
    peaks = Peaks()
    peaks("float32")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, target in candidates:
            runs: list[dict] = []
            beside: list[dict] = []
            for i in range(args.runs):
                runs.append(run_once(config, Path(tmp) / f"run-{len(results)}-{i}", extra))
                print(f"{name} run {i + 1}: {runs[-1]}", file=sys.stderr, flush=True)
                if args.beside:
                    beside.append(run_once(config_path(args.beside),
                                           Path(tmp) / f"beside-{len(results)}-{i}", extra))
                    print(f"  {args.beside} beside it: {beside[-1]}", file=sys.stderr, flush=True)
            entry = summarise(name, config, target, runs, peaks)
            if args.beside:
                entry["beside"] = summarise(args.beside, config_path(args.beside),
                                            PRESETS[args.beside], beside, peaks)
                entry["median_gain"] = round(statistics.median(
                    b["val_loss"] - r["val_loss"] for r, b in zip(runs, beside)), 4)
            results.append(entry)
    if args.json:
        print(json.dumps({"processor": processor, "peak_gflops": peaks.gflops,
                          "results": results}))
        return
    print(machine.summary(processor))
    print("matmul peak: " + ", ".join(f"{dtype} {gflops} GFLOP/s"
                                      for dtype, gflops in peaks.gflops.items()))
    for entry in results:
        print(describe(entry))
        for run in entry["runs"]:
            print("\n".join(f"  {line}" for line in run["said"]))
        if "beside" in entry:
            print(f"  beside it, {describe(entry['beside'])}")
            print(f"  {entry['name']} is lower by {entry['median_gain']:.4f} (median of the "
                  "paired differences)")


def run_sweep(args: argparse.Namespace, extra: list[str]) -> None:
    processor = machine.describe()
    print(machine.summary(processor), file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = sweep.sweep(args.corpus, args.budget, extra, jsonl=args.jsonl,
                              fixed=args.only != "auto", auto=args.only != "fixed",
                              shapes=args.shape, tmp=Path(tmp))
    if args.json:
        print(json.dumps({"processor": processor, "results": results}))
        return
    print(machine.summary(processor))
    flags = " ".join(extra) or "default threads and dtype"
    print(f"{args.corpus}, {args.budget:g} s per row, {flags}")
    print(sweep.table(results))


if __name__ == "__main__":
    main()
