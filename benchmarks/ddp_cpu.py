"""One process against two (torchrun, Gloo) on this CPU, for the same global batch.

    python benchmarks/ddp_cpu.py --data-dir ../shared/data
    python benchmarks/ddp_cpu.py --task lm --data-dir ../shared/data --epochs 1

Both runs start from the same weights and see the same global batches; the table
gives each one's training time, final test metric, and how far apart the final
weights are. The single process uses every core; the two processes get half
each (torchrun sets OMP_NUM_THREADS=1 on a 2-core machine), so the comparison
shows the cost of the gradient all-reduce, not a speed-up: on one machine the
cores are already used by one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ARGS = {
    "fashion-mnist": ["train", "fashion-mnist", "--model", "notes-cnn", "--val-size", "0", "--test-every-epoch"],
    "lm": ["train", "lm", "--corpus", "timemachine", "--dropout", "0", "--embed-dropout", "0", "--weight-drop", "0",
           "--precision", "fp32"],
}


def run(args: list[str], processes: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    if processes == 1:
        cmd = [sys.executable, "-m", "torchlab", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "torchlab", *args]
    done = subprocess.run([*cmd, "--json", "--quiet"], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=list(ARGS), default="fashion-mnist")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    base = [*ARGS[a.task], "--data-dir", a.data_dir, "--epochs", str(a.epochs), "--device", "cpu"]
    rows = {}
    for n in (1, a.processes):
        rows[n] = run([*base, "--run-dir", str(work / f"p{n}")], n)
    w1, wn = (torch.load(work / f"p{n}" / "last.pt", weights_only=True)["model_state"] for n in (1, a.processes))
    diff = max((w1[k].float() - wn[k].float()).abs().max().item() for k in w1)
    scale = max(w1[k].float().abs().max().item() for k in w1)
    metric = "test_ppl" if a.task == "lm" else "test_acc"
    print(f"{a.task}, {a.epochs} epochs, global batch as configured; torch {torch.__version__}, {os.cpu_count()} cores")
    print(f"{'processes':>9} {'train s':>8} {'per s':>9} {metric:>9}")
    for n, s in rows.items():
        rate = s.get("images_per_second") or s.get("tokens_per_second")
        print(f"{n:>9} {s['train_seconds']:>8.1f} {rate:>9.0f} {s[metric]:>9.4f}")
    print(f"largest difference between the final weights: {diff:.2e} (largest weight {scale:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
