"""Validation accuracy of `torchlab train image-folder` from scratch, on the ants/bees photos.

    python benchmarks/image_folder.py                   # default recipe, seeds 0-2
    python benchmarks/image_folder.py --seeds 0 1 2 3 4 --extra "--image-size 96"

Each seed is one full training run through the CLI. The table gives the
validation accuracy of the best epoch (the one `best.pt` keeps, so it is
chosen on the same 153 images it is scored on and flatters a little), that of
the last epoch (no selection), and the training time. The baseline row is
chance: the share of the larger class in val/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from run_cli import torchlab_json

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "hymenoptera_data"


def one_run(data_dir: Path, seed: int, extra: list[str], workdir: Path) -> dict:
    tic = time.perf_counter()
    s = torchlab_json(["train", "image-folder", "--data-dir", str(data_dir), "--seed", str(seed), "--run-dir",
                       str(workdir / f"seed{seed}"), *extra])
    return {"seed": seed, "best_val_acc": s["best_val_acc"], "best_epoch": s["best_epoch"],
            "last_val_acc": s["history"][-1]["val_acc"], "train_seconds": s["train_seconds"],
            "wall_seconds": time.perf_counter() - tic, "epochs": s["epochs"]}


def chance(data_dir: Path) -> float:
    counts = [sum(1 for p in d.iterdir() if p.is_file()) for d in sorted((data_dir / "val").iterdir()) if d.is_dir()]
    return max(counts) / sum(counts)


def row(name: str, values: list[float]) -> str:
    if len(values) == 1:
        return f"{name:<28} {values[0]:>8.2%}"
    return (f"{name:<28} {statistics.mean(values):>8.2%} {min(values):>8.2%} {max(values):>8.2%} "
            f"{statistics.stdev(values):>8.2%}")


def main_bench(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--extra", default="", help="more `torchlab train` flags, as one string")
    ap.add_argument("--json-out", type=Path, help="also write the per-seed results here")
    args = ap.parse_args(argv)
    if not (args.data_dir / "train").is_dir():
        sys.exit(f"{args.data_dir}: no train/ folder (pass --data-dir)")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(args.data_dir, seed, shlex.split(args.extra), Path(tmp)) for seed in args.seeds]
    print(f"image-folder from scratch on {args.data_dir.name}, seeds {args.seeds}, flags: {args.extra or '(defaults)'}")
    print(f"{'':<28} {'mean':>8} {'min':>8} {'max':>8} {'stdev':>8}")
    print(row("chance (larger val class)", [chance(args.data_dir)]))
    print(row("val acc, best epoch", [r["best_val_acc"] for r in runs]))
    print(row("val acc, last epoch", [r["last_val_acc"] for r in runs]))
    print(f"{'training seconds per run':<28} {statistics.mean(r['train_seconds'] for r in runs):>8.1f}"
          f"   (wall {statistics.mean(r['wall_seconds'] for r in runs):.1f} s incl. loading and evaluation)")
    for r in runs:
        print(f"  seed {r['seed']}: best {r['best_val_acc']:.2%} (epoch {r['best_epoch']}/{r['epochs']}), "
              f"last {r['last_val_acc']:.2%}, {r['train_seconds']:.1f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
