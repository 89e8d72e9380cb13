"""What this machine is and how fast it computes, measured once and cached.

The same instruction can be native on one CPU and emulated on the next: bf16
arithmetic runs at twice the fp32 rate on a CPU with AVX512-BF16 or AMX, and
70x slower than fp32 on one with AVX2 only. Variables such as
ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA change it again. So torchlab reads
the CPU's flags only to describe the machine; every choice is made from rates
measured here (`rates`) or from timing the real training step (runtime.py).

Measurements are kept in $XDG_CACHE_HOME/torchlab/runtime.json (by default
~/.cache/torchlab), under a key made of everything that changes them: the
device, the CPU's model and flags, the torch version, the thread count and the
feature-limiting variables. A changed key measures again; a damaged file is
measured again and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from torchlab.data.locate import cache_root

CACHE_VERSION = 1
# Variables that limit which instructions torch, oneDNN and MKL use: each changes what is fast.
FEATURE_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                     "ONEDNN_DEFAULT_FPMATH_MODE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# CPU features worth naming: (label, flags that show it in /proc/cpuinfo).
FEATURES = (("AVX2", ("avx2",)), ("AVX-512", ("avx512f",)), ("AVX512-BF16", ("avx512_bf16",)),
            ("AMX", ("amx_bf16", "amx_tile")), ("NEON", ("asimd", "neon")), ("SVE", ("sve",)), ("BF16", ("bf16",)))


# --- the machine ---------------------------------------------------------------------------------------

def cpu_info() -> dict:
    """{"model", "flags", "features", "capability", "cores"}: what the OS and torch say about the CPU."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and model in ("", platform.machine(), platform.processor()):
                model = value.strip() or model
            elif key in ("flags", "Features") and not flags:  # x86 and ARM spell it differently
                flags = set(value.split())
    except OSError:  # not Linux: the model from platform, no flags
        pass
    features = [label for label, names in FEATURES if flags & set(names)]
    capability = torch.backends.cpu.get_cpu_capability()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"model": model, "flags": sorted(flags), "features": features, "capability": capability, "cores": cores}


def beyond_avx2() -> bool:
    """Whether this CPU has more than AVX2 (AVX-512, AMX): then a pass with REDUCED_TO_AVX2 differs."""
    cpu = cpu_info()
    return cpu["capability"] == "AVX512" or bool({"AVX-512", "AVX512-BF16", "AMX"} & set(cpu["features"]))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (mps) on {platform.machine()}"
    return cpu_info()["model"]


def machine_key(device: torch.device) -> str:
    """A short digest of everything that changes a measurement on `device`."""
    cpu = cpu_info()
    parts = {"device": device.type, "name": device_name(device), "flags": cpu["flags"], "cores": cpu["cores"],
             "capability": cpu["capability"], "torch": torch.__version__,
             "env": {v: os.environ.get(v) for v in FEATURE_VARIABLES + THREAD_VARIABLES}}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# --- the cache -----------------------------------------------------------------------------------------

def cache_file() -> Path:
    return cache_root() / "runtime.json"


def load_cache() -> dict:
    """The cached measurements; a missing, unreadable or damaged file is an empty cache."""
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {"version": CACHE_VERSION, "machines": {}}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("machines"), dict):
        return {"version": CACHE_VERSION, "machines": {}}
    return data


def cached(device: torch.device, section: str, key: str) -> dict | None:
    entry = load_cache()["machines"].get(machine_key(device), {}).get(section, {}).get(key)
    return entry if isinstance(entry, dict) else None


def remember(device: torch.device, section: str, key: str, value: dict) -> None:
    """Store one measurement; a cache that cannot be written is skipped (the next run measures again)."""
    data = load_cache()
    machine = data["machines"].setdefault(machine_key(device), {})
    machine["about"] = {"device": device_name(device), "torch": torch.__version__,
                        "env": {v: os.environ[v] for v in FEATURE_VARIABLES + THREAD_VARIABLES if v in os.environ}}
    machine.setdefault(section, {})[key] = value
    path = cache_file()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


# --- rates -----------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def best_rate(op: Callable[[], None], flops: float, device: torch.device, budget: float) -> tuple[float, float]:
    """(best FLOP/s over repeats of `op`, seconds of one run); repeats stop after `budget` seconds."""
    op()  # warm-up: kernels chosen, memory allocated
    sync(device)
    best, spent = float("inf"), 0.0
    while spent < budget:
        tic = time.perf_counter()
        op()
        sync(device)
        took = time.perf_counter() - tic
        best, spent = min(best, took), spent + took
    return flops / best, best


def ladder(make: Callable[[int], tuple[Callable[[], None], float]], sizes: tuple[int, ...], device: torch.device,
           budget: float) -> float:
    """The best rate over growing problem sizes; a size whose single run would take over a quarter of the
    budget (predicted from the last size's rate) is not tried, so an emulated precision stops at the small
    sizes, in well under `budget` seconds."""
    best = 0.0
    for size in sizes:
        op, flops = make(size)
        if best and flops / best > budget / 4:
            break
        rate, _ = best_rate(op, flops, device, budget / len(sizes))
        best = max(best, rate)
    return best


def matmul_rate(device: torch.device, dtype: torch.dtype, budget: float = 1.0) -> float:
    """FLOP/s of square matmuls (256 to 2048), the best kept."""
    def make(n):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        return (lambda: a @ b), 2.0 * n**3

    return ladder(make, (256, 512, 1024, 2048), device, budget)


def conv_rate(device: torch.device, dtype: torch.dtype, channels_last: bool, budget: float = 1.0) -> float:
    """FLOP/s of a 3x3 convolution, 64 -> 64 channels on 28x28 maps, batches of 8 to 128, the best kept."""
    weight = torch.randn(64, 64, 3, 3, device=device).to(dtype)
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def make(batch):
        x = torch.randn(batch, 64, 28, 28, device=device).to(dtype).contiguous(memory_format=layout)
        return (lambda: torch.nn.functional.conv2d(x, weight, padding=1)), 2.0 * batch * 64 * 28 * 28 * 64 * 9

    return ladder(make, (8, 32, 128), device, budget)


def rates(device: torch.device, convs: bool = False, measure: bool = True) -> dict | None:
    """GFLOP/s of matmul (and with `convs`, convolution) in fp32 and bf16 on `device`, from the cache or
    measured: about 2 s for the matmuls, 4 more for the convolutions. None when not cached and not `measure`."""
    key = device.type + (" convs" if convs else "")
    found = cached(device, "rates", key)
    if found is not None or not measure:
        return found
    result = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            try:
                result[f"matmul {name}"] = matmul_rate(device, dtype) / 1e9
                for layout in (False, True) if convs else ():
                    result[f"conv {name} {'nhwc' if layout else 'nchw'}"] = conv_rate(device, dtype, layout) / 1e9
            except RuntimeError:  # this device has no such kernels: the precision is out
                result[f"matmul {name}"] = 0.0
    remember(device, "rates", key, result)
    return result


def bf16_speedup(device: torch.device, measure: bool = True) -> float | None:
    """bf16 matmul rate / fp32 matmul rate here: above 1 where bf16 is native, far below where emulated.
    None when not measured yet and not `measure`."""
    r = rates(device, measure=measure)
    return None if r is None else r["matmul bf16"] / max(r["matmul fp32"], 1e-9)
