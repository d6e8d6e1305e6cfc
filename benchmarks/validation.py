"""Validation benchmark: the speed of a pass, how close its number is to one pass over
the whole text, the share of a default run on a big corpus it takes, and the memory of
`charrnn eval` on a text far larger than that.

    python benchmarks/validation.py               # about 10 minutes on 2 cores
    python benchmarks/validation.py --quick       # a 50 MB corpus and 500 steps: a shorter look
    python benchmarks/validation.py --json        # one JSON object on stdout

1. speed: the default 2x256 LSTM scores the same characters of tiny-shakespeare as one
   stream and as charrnn's streams (``scoring.stream_plan``), alternated three times;
   the medians of chars/s and their ratio.
2. value: a model trained for a few hundred steps on tiny-shakespeare's first 90% (or
   ``--checkpoint``) scores the last 10% both ways: the difference in nats per character.
3. share: a default ``charrnn.train.train`` on a synthetic corpus (200 MB by default;
   tiny-shakespeare repeated) timed in this process: the seconds spent in validation
   passes over the wall time of the call, reading and encoding the corpus included.
4. eval memory: ``charrnn eval`` of a small model on that corpus in a child process: its
   peak resident memory beside the size of the text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import machine  # noqa: E402
from benchmarks.big_corpus import make_corpus  # noqa: E402
from charrnn import scoring  # noqa: E402
from charrnn import train as train_module  # noqa: E402
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from charrnn.config import ModelConfig, TrainConfig  # noqa: E402
from charrnn.data import Vocab, load_text, split  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402

CORPUS = ROOT / "data" / "tinyshakespeare.txt"
CPU = torch.device("cpu")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def one_stream(model: CharRNN, ids: np.ndarray) -> tuple[float, int]:
    """``nats_sum`` as a single stream in chunks of 1,024 steps: the pass before
    streams existed."""
    saved = scoring.STREAMS, scoring.CHUNK_STEPS
    scoring.STREAMS, scoring.CHUNK_STEPS = 1, 1024
    try:
        return scoring.nats_sum(model, ids, CPU)
    finally:
        scoring.STREAMS, scoring.CHUNK_STEPS = saved


def speed(chars: int) -> dict:
    torch.manual_seed(0)
    text = load_text(CORPUS)
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text[:chars + 1])
    model = CharRNN(len(vocab), ModelConfig())
    rates: dict[str, list[float]] = {"one_stream": [], "streams": []}
    for _ in range(3):
        for name, score in (("one_stream", one_stream),
                            ("streams", lambda m, i: scoring.nats_sum(m, i, CPU))):
            start = time.perf_counter()
            _, scored = score(model, ids)
            rates[name].append(scored / (time.perf_counter() - start))
    one, many = (statistics.median(rates[k]) for k in ("one_stream", "streams"))
    return {"chars": chars, "streams": len(scoring.stream_plan(len(ids))),
            "one_stream_chars_per_s": round(one), "streams_chars_per_s": round(many),
            "ratio": round(many / one, 2), "runs": rates}


def value(checkpoint: Path | None, steps: int, folder: Path) -> dict:
    if checkpoint is None:
        checkpoint = folder / "value" / "best.pt"
        log(f"  training the default model for {steps} steps on tiny-shakespeare ...")
        train_module.train(CORPUS, ModelConfig(), TrainConfig(
            max_steps=steps, eval_every=steps, sample_every=0, device="cpu",
            out=str(folder / "value"), cache_dir=str(folder / "cache")), progress=False)
    model, vocab = model_from_checkpoint(load_checkpoint(checkpoint))
    _, val = split(vocab.encode(load_text(CORPUS)), 0.1)
    one = one_stream(model, val)
    many = scoring.nats_sum(model, val, CPU)
    return {"checkpoint": str(checkpoint), "val_chars": len(val),
            "streams": len(scoring.stream_plan(len(val))),
            "one_stream": one[0] / one[1], "streams_value": many[0] / many[1],
            "difference": many[0] / many[1] - one[0] / one[1]}


def share(corpus: Path, steps: int | None, folder: Path) -> dict:
    """A default run (every setting at its default but the step budget when given),
    with ``Run.evaluate``'s validation pass timed."""
    passes: list[float] = []
    score = train_module.Run.score

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return score(self, *args, **kwargs)
        finally:
            passes.append(time.perf_counter() - start)

    train_module.Run.score = timed
    try:
        start = time.perf_counter()
        result = train_module.train(corpus, ModelConfig(), TrainConfig(
            max_steps=steps, device="cpu", out=str(folder / "share"),
            cache_dir=str(folder / "cache")), progress=False)
        wall = time.perf_counter() - start
    finally:
        train_module.Run.score = score
    return {"corpus_mb": round(corpus.stat().st_size / 1e6, 1), "steps": result.step,
            "val_max_chars": TrainConfig().val_max_chars, "passes": len(passes),
            "validation_s": round(sum(passes), 2), "wall_s": round(wall, 2),
            "share": round(sum(passes) / wall, 4), "val_loss": result.val_loss,
            "train_chars_per_s": round(result.chars_per_s)}


def eval_memory(corpus: Path, folder: Path) -> dict:
    """``charrnn eval`` of a 1x32 LSTM on the whole corpus, in a child process."""
    small = folder / "small"
    train_module.train(CORPUS, ModelConfig(hidden_size=32, num_layers=1, embedding_dim=16),
                       TrainConfig(max_steps=5, eval_every=5, sample_every=0, device="cpu",
                                   out=str(small), cache_dir=str(folder / "cache")),
                       progress=False)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "charrnn", "eval", str(small / "best.pt"),
                              str(corpus), "--json", "-q", "--cache-dir",
                              str(folder / "eval-cache")], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit("charrnn eval failed")
    scored = json.loads(out)
    return {"text_mb": round(corpus.stat().st_size / 1e6, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "scored": scored["scored"],
            "seconds": round(time.perf_counter() - start, 1),
            "nats_per_char": scored["nats_per_char"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpus, fewer steps")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--checkpoint", type=Path, help="a trained tiny-shakespeare model "
                        "for the value check, instead of training one")
    parser.add_argument("--mb", type=float, help="size of the big corpus (default 200, "
                        "quick 50)")
    parser.add_argument("--steps", type=int, help="steps of the default run (default: the "
                        "default budget, 3000; quick 500)")
    args = parser.parse_args()
    cpu = machine.describe()
    log(machine.summary(cpu))
    results: dict = {"processor": cpu, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        folder = Path(tmp)
        log("1. speed of a pass, one stream vs streams ...")
        results["speed"] = speed(200_000 if args.quick else 1_000_000)
        log("2. the value, one stream vs streams ...")
        results["value"] = value(args.checkpoint, 100 if args.quick else 400, folder)
        corpus = folder / "big.txt"
        make_corpus(corpus, (args.mb or (50 if args.quick else 200)) / 1000, after_each="")
        log(f"3. a default run on {corpus.stat().st_size / 1e6:.0f} MB ...")
        results["share"] = share(corpus, args.steps or (500 if args.quick else None), folder)
        log("4. eval of the whole corpus ...")
        results["eval_memory"] = eval_memory(corpus, folder)
    if args.json:
        print(json.dumps(results))
        return
    s, v, sh, ev = (results[k] for k in ("speed", "value", "share", "eval_memory"))
    print(machine.summary(cpu))
    print(f"speed ({s['chars']:,} chars, default 2x256 LSTM): one stream "
          f"{s['one_stream_chars_per_s']:,} chars/s, {s['streams']} streams "
          f"{s['streams_chars_per_s']:,} chars/s: {s['ratio']}x")
    print(f"value (tiny-shakespeare's last 10%, {v['streams']} streams): one stream "
          f"{v['one_stream']:.6f}, streams {v['streams_value']:.6f} nats/char, difference "
          f"{v['difference']:+.2e}")
    print(f"share (default run, {sh['steps']} steps on {sh['corpus_mb']} MB, "
          f"{sh['passes']} passes of at most {sh['val_max_chars']:,} chars): validation "
          f"{sh['validation_s']}s of {sh['wall_s']}s = {sh['share']:.1%}")
    print(f"eval ({ev['text_mb']} MB text, {ev['scored']:,} chars scored in "
          f"{ev['seconds']}s): peak RSS {ev['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
