"""The memory allocator the `torchlab` command runs with, chosen by measurement (benchmarks/allocator.py).

Training frees and allocates the same large activation buffers at every step. glibc's malloc hands
much of that memory back to the system and faults it in again: about 2 million minor page faults in
300 steps of notes-cnn. tcmalloc keeps it (0.24 million faults) and trained 7-14% faster than glibc on
each recipe in paired runs on an AMD EPYC Zen 3; jemalloc was 16-25% slower, and glibc told to keep
freed memory 0-8% faster.

An allocator is fixed when a process starts, so the command restarts itself once, before importing
torch, with tcmalloc preloaded where the system has it (Debian's libtcmalloc-minimal4, which `make run`
installs). Where it has not, glibc's malloc is told to keep freed memory (mallopt). TORCHLAB_MALLOC=system
leaves the process as it started; an allocator already in LD_PRELOAD is left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
FOLDERS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# glibc's mallopt parameters (<malloc.h>) and the values that keep freed memory in the process.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP = ((M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20), (M_MMAP_THRESHOLD, 32 << 20))  # 32 MiB: glibc's ceiling


def tcmalloc_path() -> str | None:
    return next((str(Path(d) / n) for n in LIBRARIES for d in FOLDERS if (Path(d) / n).is_file()), None)


def restart_with_tcmalloc() -> None:
    """Replace this process by the same command with tcmalloc preloaded; returns where there is no tcmalloc,
    on other systems than Linux, or when the choice is already made."""
    preload = os.environ.get("LD_PRELOAD", "")
    if not sys.platform.startswith("linux") or "TORCHLAB_MALLOC" in os.environ or "malloc" in preload:
        return
    path = tcmalloc_path()
    if path is None:
        return
    env = {**os.environ, "LD_PRELOAD": f"{path}:{preload}" if preload else path, "TORCHLAB_MALLOC": "tcmalloc",
           "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}  # no notes on stderr for big datasets
    sys.stdout.flush()
    os.execve(sys.executable, sys.orig_argv, env)  # the interpreter's own options and the arguments, unchanged


KEPT = False  # whether keep_freed_memory changed glibc's settings in this process


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory instead of trimming it and mapping it again (unless another
    allocator is in charge or TORCHLAB_MALLOC=system); returns whether it did."""
    global KEPT
    if os.environ.get("TORCHLAB_MALLOC") == "system" or in_use() != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    KEPT = all(mallopt(param, value) == 1 for param, value in KEEP)
    return KEPT


def in_use() -> str:
    """"tcmalloc", "jemalloc", "glibc" or "other", from the libraries mapped into this process."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "other"
    for name in ("tcmalloc", "jemalloc"):
        if name in maps:
            return name
    return "glibc" if "/libc.so" in maps or "/libc-" in maps else "other"


def describe() -> str:
    name = in_use()
    return f"{name} (keeping freed memory)" if name == "glibc" and KEPT else name
