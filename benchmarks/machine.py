"""The processor the benchmarks ran on: its name, the instruction-set flags that decide
their figures, its CPU count, and whether it does bfloat16 natively.

``describe()`` reads /proc/cpuinfo (no lscpu needed) and falls back to
``platform.processor()`` elsewhere; it does not import torch. ``bf16_support()`` decides
from the flags, or, without /proc/cpuinfo, from a probe of a few small matmuls that stops
after a fraction of a second. ``BENCH_HIDE_CPU_FLAGS=avx512_bf16,amx_bf16`` makes the
flags look absent, to try the path a processor without them takes; the description says
which flags were hidden.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
HIDE_ENV = "BENCH_HIDE_CPU_FLAGS"
# The flags worth printing beside a figure (x86's "flags", Arm's "Features").
RELEVANT_X86 = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
RELEVANT_ARM = ("asimd", "sve", "sve2", "bf16", "i8mm")
BF16_X86 = ("avx512_bf16", "amx_bf16")
BF16_ARM = ("bf16",)


def parse_cpuinfo(text: str) -> tuple[str | None, set[str] | None, bool]:
    """(model name, flags, whether the flags are Arm's) of the first processor listed in
    /proc/cpuinfo text; None for what the text does not say."""
    name = flags = None
    arm = False
    for line in text.splitlines():
        if not line.strip():
            if flags is not None:
                break              # the end of the first processor's block
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and name is None:
            name = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags, arm = set(value.split()), key == "features"
    return name, flags, arm


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe(cpuinfo: str | None = None) -> dict:
    """The processor, as a JSON-ready dict: name, arch, cpus, the relevant flags it has
    and lacks (None each when unknown), and the flags hidden by BENCH_HIDE_CPU_FLAGS.
    ``cpuinfo``: /proc/cpuinfo text to read instead of the file."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    name, flags, arm = parse_cpuinfo(cpuinfo)
    hidden = sorted(f for f in os.environ.get(HIDE_ENV, "").replace(",", " ").split())
    relevant = RELEVANT_ARM if arm else RELEVANT_X86
    if flags is not None:
        flags -= set(hidden)
    return {"name": name or platform.processor() or platform.machine() or "unknown",
            "arch": platform.machine(), "cpus": cpu_count(),
            "flags": None if flags is None else [f for f in relevant if f in flags],
            "lacks": None if flags is None else [f for f in relevant if f not in flags],
            "arm": arm, "hidden_flags": hidden}


def summary(d: dict) -> str:
    """One line for the human output: name, CPUs, flags."""
    line = f"processor: {d['name']} ({d['arch']}), {d['cpus']} CPUs"
    if d["flags"] is None:
        return line + "; flags unknown (no /proc/cpuinfo)"
    line += f"; flags: {' '.join(d['flags']) or 'none of note'}"
    if d["lacks"]:
        line += f"; lacks {' '.join(d['lacks'])}"
    if d["hidden_flags"]:
        line += f" ({HIDE_ENV} hides {','.join(d['hidden_flags'])})"
    return line


def bf16_support(d: dict) -> tuple[bool, str]:
    """(whether bfloat16 matmuls run natively, a line saying so and why). From the flags
    when /proc/cpuinfo gave them, else from ``probe_bf16()``."""
    if d["flags"] is not None:
        wanted = BF16_ARM if d["arm"] else BF16_X86
        have = [f for f in wanted if f in d["flags"]]
        if have:
            return True, f"bf16: native ({'/'.join(have)})"
        return False, (f"bf16: skipped, this processor has no {'/'.join(wanted)} "
                       "instructions (bf16 would be emulated)")
    ratio = probe_bf16()
    if ratio == float("inf"):
        return False, ("bf16: skipped, one small bf16 matmul took over 0.1 s in a short probe "
                       "(emulated; no /proc/cpuinfo flags to read)")
    if ratio <= 2.0:
        return True, (f"bf16: native by a short probe (bf16 matmul {ratio:.1f}x the time of "
                      "fp32; no /proc/cpuinfo flags to read)")
    return False, (f"bf16: skipped, a short probe found bf16 matmuls {ratio:.1f}x slower than "
                   "fp32 (emulated; no /proc/cpuinfo flags to read)")


def probe_bf16(n: int = 256, seconds: float = 0.1) -> float:
    """Best time of a bf16 matmul of size ``n`` over the best fp32 one, each repeated for
    at most ``seconds``; a bf16 product slower than ``seconds`` ends the probe at once
    (infinity: certainly emulated)."""
    import torch

    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        best[dtype], start = float("inf"), time.perf_counter()
        for _ in range(50):
            t = time.perf_counter()
            a @ b
            best[dtype] = min(best[dtype], time.perf_counter() - t)
            if time.perf_counter() - start > seconds:
                break
        if best[dtype] > seconds:
            return float("inf")
    return best[torch.bfloat16] / best[torch.float32]
