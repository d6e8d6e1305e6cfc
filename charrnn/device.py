"""Where tensors live and in what precision: ``--device`` and ``--dtype``."""

from __future__ import annotations

from typing import Any

import torch

from charrnn.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is a GPU; asking for a missing GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available here (torch "
                              f"{torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: there are only {torch.cuda.device_count()} "
                              "CUDA device(s); use cuda:0")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device '{name}'; use auto, cpu, cuda or cuda:N")
    return device


def memory_available(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device`` (None: cannot tell)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(need: int, device: torch.device, what: str, fix: str) -> None:
    """A one-line ``ConfigError`` before any work when ``need`` bytes will not fit."""
    have = memory_available(device)
    if have is not None and need > have:
        raise ConfigError(f"{what} needs about {need / 1e9:,.1f} GB of memory, more than the "
                          f"{have / 1e9:,.1f} GB free on {device.type}; {fix}")


def check_dtype(dtype: str, device: torch.device) -> None:
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--dtype bfloat16: this GPU does not support bfloat16; "
                          "use --dtype float32")


# The CPU capabilities (``torch.cpu.get_capabilities()``) that compute bfloat16 natively:
# x86's AVX512-BF16 and AMX, Arm's BF16. Without them bf16 is emulated, slower than fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively, so that bf16 autocast trains
    faster than float32: a CPU with bf16 instructions, a GPU that supports bf16 (not
    by emulation). False where torch cannot say."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:           # an older torch: no emulation to tell apart
            return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not hasattr(torch.cpu, "get_capabilities"):
        return False
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag) is True for flag in BF16_CPU_FLAGS)


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The precision a run on ``device`` trains in: ``auto`` is bfloat16 where the
    device computes it natively, float32 elsewhere; any other setting is itself."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(device) else "float32"


def autocast(device: torch.device, dtype: str):
    """The forward pass in ``dtype`` (``bfloat16``: mixed precision, float32 weights)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=(dtype == "bfloat16"))


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors inside nested dicts / lists / tuples moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
