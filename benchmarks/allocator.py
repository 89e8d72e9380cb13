"""The CPU memory allocator and the OpenMP settings, measured on real training runs, paired.

    python benchmarks/allocator.py --data-dir ../shared/data --rounds 3

Each setting trains each recipe for a fixed number of steps through the `torchlab` console script, in a
fresh process (an allocator is chosen when a process starts). Settings take turns within a round, and
the order rotates from round to round, so the machine's drift hits every setting alike. The table gives
img/s (median over rounds), the ratio to glibc's malloc in the same round (median, min-max) and the
process's minor page faults (memory handed back to the system and faulted in again shows up there).

Allocators: glibc's malloc as it is, glibc with trimming and per-size mmap off (the variables below, and
what `torchlab` now does in-process with mallopt), and Debian's tcmalloc (libtcmalloc-minimal4) and
jemalloc (libjemalloc2) through LD_PRELOAD; missing libraries are skipped. OpenMP: GNU OpenMP's
defaults, threads bound to cores, and a passive wait policy.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from run_cli import torchlab_train_process

HERE = Path(__file__).resolve().parent
LIBS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
# Keep freed memory in the process: no trimming of the heap top, and allocations up to 32 MiB (glibc's
# ceiling) from the heap instead of a fresh mmap each time.
NO_TRIM = {"MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
           "MALLOC_TOP_PAD_": str(64 << 20)}
OMP = {"omp default": {}, "OMP_PROC_BIND=close": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"},
       "OMP_WAIT_POLICY=passive": {"OMP_WAIT_POLICY": "PASSIVE"}}
RECIPES = {"notes": ["--recipe", "notes"], "fast 91": ["--recipe", "fast", "--target", "91"],
           "fast 93": ["--recipe", "fast", "--target", "93"]}


def library(name: str) -> str | None:
    return next((str(Path(d) / name) for d in LIBS if (Path(d) / name).exists()), None)


def allocators() -> dict[str, dict]:
    found = {"glibc": {"TORCHLAB_MALLOC": "system"}, "glibc, no trim": {"TORCHLAB_MALLOC": "system", **NO_TRIM}}
    for label, lib in (("tcmalloc", "libtcmalloc_minimal.so.4"), ("jemalloc", "libjemalloc.so.2")):
        if (path := library(lib)) is not None:
            found[label] = {"LD_PRELOAD": path, "TORCHLAB_MALLOC": "system"}
        else:
            print(f"{label}: {lib} not found, skipped", file=sys.stderr)
    return found


def train(recipe: list[str], env: dict, data_dir: str, steps: int) -> tuple[float, int]:
    """(training img/s, minor page faults) of one `torchlab train` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    summary, _ = torchlab_train_process(["fashion-mnist", *recipe, "--data-dir", data_dir, "--max-steps", str(steps),
                                         "--val-size", "0"], env)
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    return summary["images_per_second"], faults


def measure(settings: dict[str, dict], recipes: list[str], args) -> dict:
    """{(recipe, setting): [(img/s, faults) per round]}, settings rotating through the rounds."""
    results: dict = {}
    names = list(settings)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for recipe in recipes:
            for name in order:
                ips, faults = train(RECIPES[recipe], settings[name], args.data_dir, args.steps[recipe])
                results.setdefault((recipe, name), []).append((ips, faults))
                print(f"round {r + 1} {recipe:8} {name:26} {ips:7.0f} img/s {faults / 1e6:6.2f} M faults",
                      file=sys.stderr, flush=True)
    return results


def table(title: str, results: dict, recipes: list[str], names: list[str]) -> None:
    base = names[0]
    print(f"\n{title}\n| recipe | setting | img/s (median) | vs {base} (median, min-max) | minor faults (M) |")
    print("|---|---|---|---|---|")
    for recipe in recipes:
        for name in names:
            runs = results[(recipe, name)]
            ratios = [ips / b[0] for (ips, _), b in zip(runs, results[(recipe, base)])]
            print(f"| {recipe} | {name} | {statistics.median(r[0] for r in runs):,.0f} | "
                  f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | "
                  f"{statistics.median(r[1] for r in runs) / 1e6:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--only", choices=["allocators", "omp"], help="measure only the allocators, or only the OpenMP "
                    "settings (with --allocator)")
    ap.add_argument("--allocator", help="the allocator for the OpenMP settings (default: the fastest measured)")
    args = ap.parse_args(argv)
    args.steps = {"notes": 300, "fast 91": 200, "fast 93": 100}
    from torchlab import hardware

    cpu = hardware.cpu_info()
    print(f"{cpu['model']}, {cpu['cores']} cores, features {', '.join(cpu['features'])}, torch kernels "
          f"{cpu['capability']}" + "".join(f", {v}={os.environ[v]}" for v in hardware.FEATURE_VARIABLES
                                           if v in os.environ))
    tic = time.perf_counter()
    for recipe in args.recipes:  # the first run of each recipe measures its settings; later runs read the cache
        train(RECIPES[recipe], {}, args.data_dir, 250)
    mallocs = allocators()
    best = args.allocator
    if args.only != "omp":
        results = measure(mallocs, args.recipes, args)
        table("allocators (OpenMP defaults)", results, args.recipes, list(mallocs))
        best = best or max(mallocs, key=lambda n: statistics.median(
            ips / b[0] for r in args.recipes for (ips, _), b in zip(results[(r, n)], results[(r, "glibc")])))
    if args.only != "allocators":
        omp = {f"{best}, {name}": {**mallocs[best], **env} for name, env in OMP.items()}
        table(f"OpenMP settings with {best}", measure(omp, args.recipes, args), args.recipes, list(omp))
    print(f"\n{time.perf_counter() - tic:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
