"""Speed benchmark of charrnn on this machine, every figure measured in one run.

    python benchmarks/bench.py            # full run, a few minutes
    python benchmarks/bench.py --quick    # smaller counts, under 2 minutes
    python benchmarks/bench.py --json     # one JSON object on stdout

Figures: matmul peak (fp32, bf16); training chars/s of ``charrnn.train.train`` and of a
bare PyTorch loop with the same model and batch (fp32 and bf16), with GFLOP/s and the
fraction of the measured peak; sampling chars/s at batch 1 and 64; encoding MB/s and
peak extra memory for a large corpus; ``charrnn --help`` time. Time-to-quality runs of
the presets are in ``benchmarks/quality.py``.
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

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charrnn.config import ModelConfig, TrainConfig  # noqa: E402
from charrnn.data import Vocab  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.sample import generate  # noqa: E402
from charrnn.train import train  # noqa: E402

CORPUS = ROOT / "data" / "tinyshakespeare.txt"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- peak

def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of the best of ``repeats`` square matmuls of size ``n``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


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
              steps: int, dtype: str) -> float:
    """chars/s of the plainest loop that does the same work: embedding -> nn.LSTM ->
    linear, AdamW, global-norm clip 1, hidden state carried over contiguous streams."""
    torch.manual_seed(0)
    emb = nn.Embedding(vocab_size, c.embedding_dim)
    rnn = nn.LSTM(c.embedding_dim, c.hidden_size, c.num_layers, batch_first=True)
    head = nn.Linear(c.hidden_size, vocab_size)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    length = len(ids) // batch
    streams = ids[:batch * length].view(batch, length)
    hidden = None
    start = time.perf_counter()
    for step in range(steps):
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
    return steps * batch * seq / (time.perf_counter() - start)


def charrnn_loop(text: Path, c: ModelConfig, batch: int, seq: int, steps: int,
                 dtype: str, out: Path) -> float:
    config = TrainConfig(batch_size=batch, seq_length=seq, max_steps=steps, eval_every=10**9,
                         sample_every=0, device="cpu", dtype=dtype, out=str(out))
    return train(text, c, config, progress=False, overwrite=True).chars_per_s


# ----------------------------------------------------------------------------- sampling

def sampling(vocab: Vocab, c: ModelConfig, batch: int, length: int) -> float:
    torch.manual_seed(0)
    model = CharRNN(len(vocab), c).eval()
    generate(model, vocab, 50, num_samples=batch, seed=0)   # warm-up
    start = time.perf_counter()
    generate(model, vocab, length, num_samples=batch, seed=0)
    return batch * length / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- encoding

ENCODE_CHILD = """
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


def help_time(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "charrnn", "--help"], cwd=ROOT,
                       capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ----------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (< 2 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    quick = args.quick
    steps = 30 if quick else 150
    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d")},
    }
    log("matmul peak ...")
    results["peak_gflops"] = {"float32": round(matmul_peak(torch.float32), 1),
                              "bfloat16": round(matmul_peak(torch.bfloat16), 1)}

    text = CORPUS.read_text(encoding="utf-8")
    vocab = Vocab.from_text(text)
    ids = torch.from_numpy(vocab.encode(text).astype("int64"))
    batch, seq = 32, 64
    results["train"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in (ModelConfig(), ModelConfig(hidden_size=512)):
            flops = train_flops_per_char(c, len(vocab))
            row = {"model": f"{c.num_layers}x{c.hidden_size} lstm", "batch": batch, "seq": seq,
                   "train_mflop_per_char": round(flops / 1e6, 2)}
            for dtype in ("float32", "bfloat16"):
                log(f"training {row['model']} {dtype} ...")
                ours = charrnn_loop(CORPUS, c, batch, seq, steps, dtype, Path(tmp) / dtype)
                bare = bare_loop(ids, len(vocab), c, batch, seq, steps, dtype)
                peak = results["peak_gflops"][dtype]
                row[dtype] = {"charrnn_chars_per_s": round(ours), "bare_chars_per_s": round(bare),
                              "ratio": round(ours / bare, 3),
                              "gflops": round(ours * flops / 1e9, 1),
                              "fraction_of_peak": round(ours * flops / 1e9 / peak, 3)}
            row["bf16_over_fp32"] = round(row["bfloat16"]["charrnn_chars_per_s"]
                                          / row["float32"]["charrnn_chars_per_s"], 3)
            results["train"].append(row)

        log("sampling ...")
        big = ModelConfig(hidden_size=512)
        results["sample_2x512_lstm"] = {
            "batch_1_chars_per_s": round(sampling(vocab, big, 1, 500 if quick else 3000)),
            "batch_64_chars_per_s": round(sampling(vocab, big, 64, 100 if quick else 500)),
        }
        log("encoding ...")
        results["encode"] = encoding(20 if quick else 100, Path(tmp))
    log("--help ...")
    results["help_seconds"] = round(help_time(3 if quick else 7), 3)

    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"charrnn benchmark, {m['date']}, {m['cpu']}, {m['threads']} threads, torch {m['torch']}")
    print(f"matmul peak: fp32 {r['peak_gflops']['float32']} GFLOP/s, "
          f"bf16 {r['peak_gflops']['bfloat16']} GFLOP/s")
    for row in r["train"]:
        for dtype in ("float32", "bfloat16"):
            d = row[dtype]
            print(f"train {row['model']} {row['batch']}x{row['seq']} {dtype}: charrnn "
                  f"{d['charrnn_chars_per_s']:,} chars/s, bare loop {d['bare_chars_per_s']:,} "
                  f"(ratio {d['ratio']}), {d['gflops']} GFLOP/s = {d['fraction_of_peak']:.0%} "
                  "of peak")
        print(f"  bf16 / fp32: {row['bf16_over_fp32']}")
    s = r["sample_2x512_lstm"]
    print(f"sample 2x512 lstm: batch 1 {s['batch_1_chars_per_s']:,} chars/s, batch 64 "
          f"{s['batch_64_chars_per_s']:,} chars/s aggregate")
    e = r["encode"]
    print(f"encode {e['corpus_mb']} MB: {e['mb_per_s']} MB/s, peak extra memory "
          f"{e['peak_extra_mb']} MB traced, {e['peak_rss_growth_mb']} MB resident "
          "(the memory-mapped ids included)")
    print(f"charrnn --help: {r['help_seconds']} s")


if __name__ == "__main__":
    main()
