"""Big-corpus benchmark: prepare and train on a text far larger than the ids need in RAM.

    python benchmarks/big_corpus.py              # 2 GB corpus
    python benchmarks/big_corpus.py --gb 0.2     # a quicker look
    python benchmarks/big_corpus.py --json

Writes a synthetic corpus (tiny-shakespeare repeated, a line of CJK, emoji and accents
after each copy) to a temporary folder, then runs, each in a fresh process:
``charrnn prepare`` cold (scan and encode), ``charrnn prepare`` again (cache hit), and a
short ``charrnn train`` on it that reads the memory-mapped ids (validating on a separate
small file: a full pass over 10% of 2 GB would take hours at batch 1). Prints the
MB/s and each process's peak resident memory (from wait4, so it is the child's own),
with the processor's name, flags and CPU count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import machine  # noqa: E402

CORPUS = ROOT / "data" / "tinyshakespeare.txt"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_corpus(path: Path, gigabytes: float, after_each: str = "春眠不觉晓 🙂 naïve café\n"
                ) -> int:
    """tiny-shakespeare repeated to ``gigabytes``, ``after_each`` after every copy."""
    unit = (CORPUS.read_text(encoding="utf-8") + after_each).encode("utf-8")
    target = int(gigabytes * 1e9)
    with open(path, "wb") as f:
        written = 0
        while written < target:
            written += f.write(unit[:target - written])
    return written


def run(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) and stdout of ``python -m charrnn ARGS`` in a child,
    reaped with wait4 so that the peak is this child's alone."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "charrnn", *args], cwd=cwd,
                                 stdout=out, stderr=err,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code:
            raise SystemExit(f"charrnn {' '.join(args)} failed:\n{err.read()}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="corpus size in GB (1e9 bytes)")
    parser.add_argument("--steps", type=int, default=200, help="training steps")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    processor = machine.describe()
    log(machine.summary(processor))

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        folder = Path(tmp)
        text, val = folder / "big.txt", folder / "val.txt"
        log(f"writing a {args.gb:g} GB corpus to {text} ...")
        size = make_corpus(text, args.gb)
        val.write_text(CORPUS.read_text(encoding="utf-8")[-100_000:], encoding="utf-8")
        cache = ["--cache-dir", str(folder / ".cache")]
        results: dict = {"date": time.strftime("%Y-%m-%d"), "processor": processor,
                         "corpus_bytes": size}

        log("prepare (cold) ...")
        results["prepare"] = measure(run(["prepare", str(text), *cache, "--json"], folder), size)
        log("prepare (cached) ...")
        results["prepare_cached"] = measure(run(["prepare", str(text), *cache, "--json"],
                                                folder), size)
        log(f"train {args.steps} steps on the memory-mapped ids ...")
        seconds, rss, out = run(["train", str(text), "--val-file", str(val), *cache,
                                 "--max-steps", str(args.steps), "--eval-every",
                                 str(args.steps), "--sample-every", "0", "--out",
                                 str(folder / "run"), "--quiet", "--json"], folder)
        summary = json.loads(out)
        results["train"] = {"steps": summary["step"], "seconds": round(seconds, 1),
                            "peak_rss_mb": round(rss), "chars_per_s": summary["chars_per_s"],
                            "val_loss": round(summary["val_loss"], 4)}
    if args.json:
        print(json.dumps(results))
        return
    p, c, t = results["prepare"], results["prepare_cached"], results["train"]
    print(machine.summary(processor))
    print(f"corpus: {size / 1e9:.2f} GB")
    print(f"prepare, cold:   {p['seconds']:.1f} s, {p['mb_per_s']:.1f} MB/s, "
          f"peak RSS {p['peak_rss_mb']} MB, {p['chars']:,} chars, vocabulary {p['vocab_size']}")
    print(f"prepare, cached: {c['seconds']:.2f} s, peak RSS {c['peak_rss_mb']} MB")
    print(f"train:           {t['steps']} steps in {t['seconds']} s, peak RSS "
          f"{t['peak_rss_mb']} MB, {t['chars_per_s']:,.0f} chars/s, val {t['val_loss']}")


def measure(result: tuple[float, float, str], size: int) -> dict:
    seconds, rss, out = result
    report = json.loads(out)
    return {"seconds": round(seconds, 2),
            "mb_per_s": None if report["cached"] else round(size / 1e6 / seconds, 1),
            "peak_rss_mb": round(rss), "chars": report["chars"],
            "vocab_size": report["vocab_size"], "cached": report["cached"]}


if __name__ == "__main__":
    main()
