"""The benchmarks' processor description (benchmarks/machine.py) on sample /proc/cpuinfo
texts: name, flags, the bf16 decision, and the flags a test run may hide."""

from __future__ import annotations

import importlib.util
import platform

import pytest

from helpers import ROOT

_spec = importlib.util.spec_from_file_location("bench_machine", ROOT / "benchmarks" / "machine.py")
machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machine)

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512_bf16 amx_bf16 amx_tile
bogomips\t: 4000.00

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2
"""
X86_NO_BF16 = """processor\t: 0
model name\t: Intel(R) Core(TM) i3-7100U CPU @ 2.40GHz
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve asimdrdm bf16 i8mm
CPU implementer\t: 0x41
"""


@pytest.fixture(autouse=True)
def no_hidden_flags(monkeypatch):
    monkeypatch.delenv(machine.HIDE_ENV, raising=False)


def test_x86_flags_of_the_first_processor():
    d = machine.describe(X86)
    assert d["name"] == "Intel(R) Xeon(R) Platinum 8480+"
    # The first block's flags, among the ones worth printing, in the printing order.
    assert d["flags"] == ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16",
                          "amx_tile", "amx_bf16"]
    assert d["lacks"] == ["avx512_vnni", "avx512_fp16", "amx_int8"]
    assert machine.bf16_support(d) == (True, "bf16: native (avx512_bf16/amx_bf16)")
    line = machine.summary(d)
    assert "Intel(R) Xeon(R) Platinum 8480+" in line and "avx512_bf16" in line


def test_no_bf16_instructions_is_skipped():
    d = machine.describe(X86_NO_BF16)
    assert "avx2" in d["flags"] and "avx512_bf16" in d["lacks"]
    native, note = machine.bf16_support(d)
    assert not native
    assert note == ("bf16: skipped, this processor has no avx512_bf16/amx_bf16 instructions "
                    "(bf16 would be emulated)")


def test_hidden_flags_take_the_path_of_a_processor_without_them(monkeypatch):
    monkeypatch.setenv(machine.HIDE_ENV, "amx_bf16,avx512_bf16")
    d = machine.describe(X86)
    assert "avx512_bf16" not in d["flags"] and "amx_bf16" not in d["flags"]
    assert d["hidden_flags"] == ["amx_bf16", "avx512_bf16"]
    assert machine.bf16_support(d)[0] is False
    assert machine.summary(d).endswith(f"({machine.HIDE_ENV} hides amx_bf16,avx512_bf16)")


def test_arm_features_and_a_missing_model_name():
    d = machine.describe(ARM)
    assert d["name"] == (platform.processor() or platform.machine() or "unknown")
    assert d["flags"] == ["asimd", "sve", "bf16", "i8mm"] and d["lacks"] == ["sve2"]
    assert machine.bf16_support(d) == (True, "bf16: native (bf16)")


def test_no_cpuinfo_means_flags_unknown():
    d = machine.describe("")
    assert d["flags"] is None and d["lacks"] is None
    assert machine.summary(d).endswith("flags unknown (no /proc/cpuinfo)")
