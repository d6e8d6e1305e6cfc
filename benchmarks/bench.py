"""Speed benchmark of charrnn on this machine, every figure measured in one run.

    python benchmarks/bench.py            # full run, about 8 minutes (at most 10)
    python benchmarks/bench.py --quick    # shorter time limits, under 2 minutes
    python benchmarks/bench.py --json     # one JSON object on stdout
    python benchmarks/bench.py --threads  # only the thread counts, quiet and beside a busy
                                          # process (busy.py), about 3 minutes
    python benchmarks/bench.py --beam     # only the cost of beam search against a draw
    BENCH_HIDE_CPU_FLAGS=avx512_bf16,amx_bf16 python benchmarks/bench.py --quick
                                          # as on a processor without bf16 instructions

Figures: matmul peak (fp32, bf16); training chars/s of ``charrnn.train.train`` and of a
bare PyTorch loop with the same model and batch (fp32 and bf16), with GFLOP/s and the
fraction of the measured peak; sampling chars/s at batch 1 and 64, and at batch 1 from
the model exported to ONNX (run by onnxruntime) and to a web page (timed in headless
Chromium, where one is installed) beside charrnn's own; encoding MB/s and
peak extra memory for a large corpus; ``charrnn --help`` time. Time-to-quality runs of
the presets are in ``benchmarks/quality.py``.

Every measurement that repeats stops on a time limit as well as on its count (``LIMITS``),
so a slow processor gives fewer repeats, not a longer run. The bf16 figures are skipped,
and the output says why, on a processor without bf16 instructions (see ``machine.py``):
there bf16 is emulated, many times slower than fp32. The processor's name, flags and CPU
count are printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import busy, machine  # noqa: E402
from charrnn.config import ModelConfig, TrainConfig  # noqa: E402
from charrnn.data import Vocab  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.sample import beam_search, generate  # noqa: E402
from charrnn.train import train  # noqa: E402

CORPUS = ROOT / "data" / "tinyshakespeare.txt"
# Counts and time limits (seconds) of the full run and of --quick. Each figure stops at
# whichever of its count and its time comes first.
LIMITS = {
    "full": {"threads_s": 15.0, "threads_rounds": 2, "peak_s": 5.0, "train_steps": 150,
             "train_s": 25.0, "sample_chars": (3000, 500), "sample_s": 10.0,
             "page_chars": 1000, "encode_mb": 100, "help_runs": 7, "help_s": 15.0,
             "beam": (400, 5)},
    "quick": {"threads_s": 8.0, "threads_rounds": 1, "peak_s": 1.5, "train_steps": 30,
              "train_s": 5.0, "sample_chars": (500, 100), "sample_s": 3.0,
              "page_chars": 200, "encode_mb": 20, "help_runs": 3, "help_s": 5.0,
              "beam": (100, 3)},
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- peak

def matmul_peak(dtype: torch.dtype, seconds: float, n_max: int = 2048) -> tuple[float, int]:
    """(GFLOP/s, n) of the fastest square matmul of size ``n``, repeated for ``seconds``.
    ``n`` doubles from 256 up to ``n_max`` while one product of the next size should take
    under a quarter of ``seconds``: a slow processor measures a smaller product."""
    n = 256
    while True:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        t = time.perf_counter()
        a @ b                                    # also the warm-up of this size
        one = time.perf_counter() - t
        if n >= n_max or 8 * one > seconds / 4:
            break
        n *= 2
    best, start = one, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9, n


# ----------------------------------------------------------------------------- training

def train_flops_per_char(c: ModelConfig, vocab_size: int) -> float:
    """Multiply-adds x 2 of one character's forward pass, x 3 for forward + backward."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[c.cell]
    h_out = c.proj_size or c.hidden_size
    macs, width = 0, c.embedding_dim
    for _ in range(c.num_layers):
        macs += gates * c.hidden_size * (width + h_out)
        if c.proj_size:
            macs += c.hidden_size * c.proj_size
        width = h_out
    macs += h_out * vocab_size
    return 3 * 2 * macs


def bare_loop(ids: torch.Tensor, vocab_size: int, c: ModelConfig, batch: int, seq: int,
              steps: int, seconds: float, dtype: str) -> tuple[float, int]:
    """(chars/s, steps timed) of the plainest loop that does the same work: embedding ->
    nn.LSTM -> linear, AdamW, global-norm clip 1, hidden state carried over contiguous
    streams. One untimed warm-up step, then ``steps`` timed steps, or fewer when
    ``seconds`` (the warm-up included) run out first."""
    torch.manual_seed(0)
    emb = nn.Embedding(vocab_size, c.embedding_dim)
    rnn = nn.LSTM(c.embedding_dim, c.hidden_size, c.num_layers, batch_first=True)
    head = nn.Linear(c.hidden_size, vocab_size)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    length = len(ids) // batch
    streams = ids[:batch * length].view(batch, length)
    hidden, done, began = None, 0, time.perf_counter()
    start = began
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        elif step > 1 and time.perf_counter() - began > seconds:
            break
        i = (step * seq) % (length - seq - 1)
        x, y = streams[:, i:i + seq], streams[:, i + 1:i + seq + 1]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            out, hidden = rnn(emb(x), hidden)
            loss = F.cross_entropy(head(out).flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hidden = tuple(h.detach() for h in hidden)
        loss.item()
        done = step
    return done * batch * seq / (time.perf_counter() - start), done


def charrnn_loop(text: Path, c: ModelConfig, batch: int, seq: int, steps: int,
                 seconds: float, dtype: str, out: Path) -> tuple[float, int]:
    """(chars/s, steps taken) of ``charrnn.train.train``: ``steps`` steps, or fewer when
    its ``max_time`` of ``seconds`` (set-up and final evaluation included) runs out. Only
    0.01% of the text validates (110 characters): the evaluation, at batch 1, is left out
    of the chars/s but not of the time limit, and scoring the usual 10% (or timing a slice
    of it to keep time for it) would take longer than the training steps."""
    config = TrainConfig(batch_size=batch, seq_length=seq, max_steps=steps, max_time=seconds,
                         eval_every=10**9, sample_every=0, val_fraction=1e-4, device="cpu",
                         dtype=dtype, out=str(out))
    result = train(text, c, config, progress=False, overwrite=True)
    return result.chars_per_s, result.step


# ----------------------------------------------------------------------------- sampling

def sampling(vocab: Vocab, c: ModelConfig, batch: int, length: int,
             seconds: float) -> float:
    """chars/s of drawing ``batch`` texts of ``length`` characters, the length cut to
    what a timed 20-character draw says fits in ``seconds``."""
    torch.manual_seed(0)
    model = CharRNN(len(vocab), c).eval()
    generate(model, vocab, 10, num_samples=batch, seed=0)   # warm-up
    start = time.perf_counter()
    generate(model, vocab, 20, num_samples=batch, seed=0)
    per_char = (time.perf_counter() - start) / 20
    length = max(20, min(length, int(seconds / per_char)))
    start = time.perf_counter()
    generate(model, vocab, length, num_samples=batch, seed=0)
    return batch * length / (time.perf_counter() - start)


BEAMS = (1, 4, 8, 16)


def beam_costs(vocab: Vocab, c: ModelConfig, length: int, rounds: int) -> dict:
    """Characters written per second by one drawn sample and by ``beam_search`` with each
    of ``BEAMS``, ``length`` characters each, in ``rounds`` rounds that take them in turn
    (the median of each); the beams' speeds also as a fraction of the draw's."""
    torch.manual_seed(0)
    model = CharRNN(len(vocab), c).eval()
    runs = {"draw": lambda: generate(model, vocab, length, seed=0),
            **{f"beam {b}": (lambda b=b: beam_search(model, vocab, length, beam=b))
               for b in BEAMS}}
    for run in runs.values():            # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    speed = {name: length / statistics.median(t) for name, t in seconds.items()}
    return {name: {"chars_per_s": round(v), "of_draw": round(v / speed["draw"], 3)}
            for name, v in speed.items()}


def beam_only(lim: dict, as_json: bool) -> None:
    processor = machine.describe()
    log(machine.summary(processor))
    vocab = Vocab("".join(sorted(set(CORPUS.read_text(encoding="utf-8")))))
    figures = beam_costs(vocab, ModelConfig(hidden_size=512), *lim["beam"])
    if as_json:
        print(json.dumps({"processor": processor, "threads": torch.get_num_threads(),
                          "beam_2x512_lstm": figures}))
        return
    print(machine.summary(processor))
    print(f"2x512 lstm, {lim['beam'][0]} characters, {torch.get_num_threads()} threads, "
          f"median of {lim['beam'][1]} rounds:")
    for name, f in figures.items():
        print(f"  {name:8} {f['chars_per_s']:>8,} chars/s  ({f['of_draw']:.3f} of a draw)")


def onnx_sampling(vocab: Vocab, c: ModelConfig, length: int, seconds: float) -> float | str:
    """chars/s of drawing one text from the same model exported to ONNX and run by
    onnxruntime, one character per call, the draw made with numpy as a program without
    torch would; or why it was not measured."""
    try:
        import onnxruntime
    except ImportError:
        return "skipped: onnxruntime is not installed (pip install -e '.[export]')"
    from charrnn.export import example_inputs, metadata, onnx_bytes

    torch.manual_seed(0)
    model = CharRNN(len(vocab), c).eval()
    session = onnxruntime.InferenceSession(onnx_bytes(model, metadata(model, vocab, {})),
                                           providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    rng = np.random.default_rng(0)

    def draw(count: int) -> None:
        feed = dict(zip(names, (t.numpy() for t in example_inputs(
            model, torch.zeros(1, 1, dtype=torch.int64)))))
        for _ in range(count):
            logits, *state = session.run(None, feed)
            p = np.exp(logits[0, -1] - logits[0, -1].max())
            feed = dict(zip(names, ([[rng.choice(len(p), p=p / p.sum())]], *state)))
            feed["ids"] = np.asarray(feed["ids"], dtype=np.int64)

    draw(10)                                                   # warm-up
    start = time.perf_counter()
    draw(20)
    length = max(20, min(length, int(seconds / ((time.perf_counter() - start) / 20))))
    start = time.perf_counter()
    draw(length)
    return round(length / (time.perf_counter() - start))


def page_sampling(vocab: Vocab, c: ModelConfig, length: int, folder: Path) -> float | str:
    """chars/s of the same model's web page generating ``length`` characters greedily in
    headless Chromium, by the page's own clock (the best of two runs), or why not."""
    from benchmarks import webpage

    binary = webpage.find_browser()
    if binary is None:
        return "skipped: no Chromium on PATH (Debian: apt-get install chromium)"
    torch.manual_seed(0)
    runs = webpage.page_speed(CharRNN(len(vocab), c).eval(), vocab, length, 2, folder, binary)
    return round(length / min(runs) * 1000)


# ----------------------------------------------------------------------------- encoding

ENCODE_CHILD = r"""
import re, sys, tempfile, time, tracemalloc
from charrnn import corpus
def rss():  # peak resident memory of this process image so far, bytes (Linux's VmHWM;
    # ru_maxrss would carry over the parent's peak from before exec)
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
before = rss()
tracemalloc.start()   # counts Python objects and numpy buffers: the extra memory of encoding
t = time.perf_counter()
with tempfile.TemporaryDirectory() as cache:
    scan, vocab, ids = corpus.prepare(sys.argv[1], cache)
    seconds = time.perf_counter() - t
    print(seconds, tracemalloc.get_traced_memory()[1], rss() - before, len(ids), len(vocab))
"""


def encoding(megabytes: int, folder: Path) -> dict:
    """Scan and encode a corpus of ``megabytes`` MB (tiny-shakespeare repeated, plus a
    line of CJK, emoji and accents per copy) into a memory-mapped cache, in a fresh
    process: the path ``charrnn prepare`` and ``charrnn train`` take."""
    unit = CORPUS.read_text(encoding="utf-8") + "春眠不觉晓 🙂 naïve café\n"
    path = folder / "big.txt"
    with open(path, "w", encoding="utf-8") as f:
        size = 0
        while size < megabytes * 1_000_000:
            size += f.write(unit)
    nbytes = path.stat().st_size
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", ENCODE_CHILD, str(path)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    seconds, traced, rss = float(out[0]), int(out[1]), int(out[2])
    path.unlink()
    return {"corpus_mb": round(nbytes / 1e6, 1), "mb_per_s": round(nbytes / 1e6 / seconds, 1),
            "peak_extra_mb": round(traced / 1e6, 1), "peak_rss_growth_mb": round(rss / 1e6, 1),
            "characters": int(out[3]), "vocab_size": int(out[4])}


def help_time(repeats: int, seconds: float) -> float:
    """Median seconds of ``charrnn --help``, run ``repeats`` times or until ``seconds``."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < seconds):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "charrnn", "--help"], cwd=ROOT,
                       capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ----------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter time limits (< 2 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", action="store_true",
                        help="only the speed with one, all and the chosen thread counts, "
                        "quiet and beside a busy process")
    parser.add_argument("--beam", action="store_true",
                        help="only the cost of beam search against drawing one sample")
    parser.add_argument("--rounds", type=int, default=0, metavar="N",
                        help="rounds of the thread figures (default: 2, 1 with --quick); "
                        "their medians steady with more")
    args = parser.parse_args()
    lim = dict(LIMITS["quick" if args.quick else "full"])
    if args.rounds > 0:
        lim["threads_rounds"] = args.rounds
    if args.threads:
        return threads_only(lim, args.json)
    if args.beam:
        return beam_only(lim, args.json)
    processor = machine.describe()
    bf16, bf16_note = machine.bf16_support(processor)
    dtypes = ("float32", "bfloat16") if bf16 else ("float32",)
    results: dict = {
        "processor": processor,
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")},
        "bf16": {"native": bf16, "note": bf16_note},
        "peak_gflops": {}, "peak_size": {},
    }
    log(machine.summary(processor))
    log(bf16_note)
    for dtype in dtypes:
        log(f"matmul peak {dtype} ...")
        gflops, n = matmul_peak(getattr(torch, dtype), lim["peak_s"])
        results["peak_gflops"][dtype], results["peak_size"][dtype] = round(gflops, 1), n

    text = CORPUS.read_text(encoding="utf-8")
    vocab = Vocab.from_text(text)
    ids = torch.from_numpy(vocab.encode(text).astype("int64"))
    batch, seq = 32, 64
    steps, seconds = lim["train_steps"], lim["train_s"]
    results["train"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in (ModelConfig(), ModelConfig(hidden_size=512)):
            flops = train_flops_per_char(c, len(vocab))
            row = {"model": f"{c.num_layers}x{c.hidden_size} lstm", "batch": batch, "seq": seq,
                   "train_mflop_per_char": round(flops / 1e6, 2)}
            for dtype in dtypes:
                log(f"training {row['model']} {dtype} ...")
                # The bare loop first: its time limit sets the number of steps of both, and
                # its warm-up step readies torch's kernels for charrnn's first step. charrnn
                # stops at twice the limit in any case, its set-up included.
                bare, done = bare_loop(ids, len(vocab), c, batch, seq, steps, seconds, dtype)
                ours, our_steps = charrnn_loop(CORPUS, c, batch, seq, done, 2 * seconds, dtype,
                                               Path(tmp) / dtype)
                if not our_steps:
                    row[dtype] = {"skipped": f"charrnn took no step within {2 * seconds:g} s "
                                             "(set-up took it all)"}
                    continue
                peak = results["peak_gflops"][dtype]
                row[dtype] = {"charrnn_chars_per_s": round(ours), "bare_chars_per_s": round(bare),
                              "steps": our_steps, "bare_steps": done,
                              "ratio": round(ours / bare, 3),
                              "gflops": round(ours * flops / 1e9, 1),
                              "fraction_of_peak": round(ours * flops / 1e9 / peak, 3)}
            if all("steps" in row.get(dtype, {}) for dtype in ("float32", "bfloat16")):
                row["bf16_over_fp32"] = round(row["bfloat16"]["charrnn_chars_per_s"]
                                              / row["float32"]["charrnn_chars_per_s"], 3)
            results["train"].append(row)

        log("thread counts, quiet and beside a busy process ...")
        results["threads"] = busy.figures(CORPUS, lim["threads_s"], lim["threads_rounds"],
                                          Path(tmp), log)
        log("sampling ...")
        big = ModelConfig(hidden_size=512)
        long, wide = lim["sample_chars"]
        results["sample_2x512_lstm"] = {
            "batch_1_chars_per_s": round(sampling(vocab, big, 1, long, lim["sample_s"])),
            "batch_64_chars_per_s": round(sampling(vocab, big, 64, wide, lim["sample_s"])),
            "onnx_batch_1_chars_per_s": onnx_sampling(vocab, big, long, lim["sample_s"]),
            "web_page_batch_1_chars_per_s": page_sampling(vocab, big, lim["page_chars"],
                                                          Path(tmp)),
        }
        log("encoding ...")
        results["encode"] = encoding(lim["encode_mb"], Path(tmp))
    log("--help ...")
    results["help_seconds"] = round(help_time(lim["help_runs"], lim["help_s"]), 3)

    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


def threads_only(lim: dict, as_json: bool) -> None:
    processor = machine.describe()
    log(machine.summary(processor))
    with tempfile.TemporaryDirectory() as tmp:
        figures = busy.figures(CORPUS, lim["threads_s"], lim["threads_rounds"], Path(tmp), log)
    if as_json:
        print(json.dumps({"processor": processor, "threads": figures}))
        return
    print(machine.summary(processor))
    print("\n".join(busy.describe(figures)))


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"charrnn benchmark, {m['date']}, {m['threads']} threads, torch {m['torch']}")
    print(machine.summary(r["processor"]))
    print(r["bf16"]["note"])
    print("matmul peak: " + ", ".join(
        f"{dtype} {gflops} GFLOP/s ({r['peak_size'][dtype]}²)"
        for dtype, gflops in r["peak_gflops"].items()))
    for row in r["train"]:
        for dtype in ("float32", "bfloat16"):
            if dtype not in row:
                continue
            d = row[dtype]
            if "skipped" in d:
                print(f"train {row['model']} {dtype}: {d['skipped']}")
                continue
            print(f"train {row['model']} {row['batch']}x{row['seq']} {dtype}: charrnn "
                  f"{d['charrnn_chars_per_s']:,} chars/s, bare loop {d['bare_chars_per_s']:,} "
                  f"(ratio {d['ratio']}), {d['gflops']} GFLOP/s = {d['fraction_of_peak']:.0%} "
                  f"of peak; {d['steps']} and {d['bare_steps']} steps")
        if "bf16_over_fp32" in row:
            print(f"  bf16 / fp32: {row['bf16_over_fp32']}")
    print("\n".join(busy.describe(r["threads"])))
    s = r["sample_2x512_lstm"]
    print(f"sample 2x512 lstm: batch 1 {s['batch_1_chars_per_s']:,} chars/s, batch 64 "
          f"{s['batch_64_chars_per_s']:,} chars/s aggregate")
    print(f"sample 2x512 lstm, batch 1, exported: ONNX under onnxruntime "
          f"{_figure(s['onnx_batch_1_chars_per_s'])}, web page in Chromium "
          f"{_figure(s['web_page_batch_1_chars_per_s'])}")
    e = r["encode"]
    print(f"encode {e['corpus_mb']} MB: {e['mb_per_s']} MB/s, peak extra memory "
          f"{e['peak_extra_mb']} MB traced, {e['peak_rss_growth_mb']} MB resident "
          "(the memory-mapped ids included)")
    print(f"charrnn --help: {r['help_seconds']} s")


def _figure(value: float | str) -> str:
    return f"{value:,} chars/s" if isinstance(value, (int, float)) else value


if __name__ == "__main__":
    main()
