"""Fashion-MNIST corruptions: how each recipe's checkpoint does on test images made to look like photos.

    python benchmarks/robustness.py --train --runs /tmp/robust --data-dir ../shared/data    # trains 7 (~90 min, Zen 3)
    python benchmarks/robustness.py notes=runs/a/last.pt strong=runs/b/last.pt --images 2000

In the spirit of MNIST-C (Mu and Gilmer, 2019): a seeded sample of the test split is corrupted in memory
(never stored) by every corruption of torchlab/data/corrupt.py at severities 1-3, and every image goes
through `torchlab predict`'s own preprocessing (torchlab/data/photo.py), so the table measures what a user
gets. For each checkpoint it prints the per-corruption table, then one summary row: training seconds and
their ratio to the first contender's (the baseline, measured in the same run when --train trains it), the
whole test split's accuracy as `torchlab eval` scores it, the sample's clean accuracy, the corruption
accuracy (the mean over all corruptions and severities), the gap between the two and the corruption that
costs most at the middle severity.

With --train, contenders missing from --runs are trained first, each through the `torchlab` command in
a process of its own, on all 60,000 training images as benchmarks/time_to_accuracy.py trains them: the
notes' settings, `--recipe strong` and `--recipe fast` for targets 91 and 93, each without and with
`--photo 1` (photo-like changes while training). --settings pins the arithmetic so that a busy machine's
measurements cannot change it between contenders (fp32 NHWC with 2 threads: what `auto` picks on the
2-core Zen 3 and Zen 4 machines it was tuned on).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from torchlab import checkpoint
from torchlab import scoring as robustness  # the corruption table lives in scoring.py

CONTENDERS = {  # name -> `torchlab train fashion-mnist` flags
    "notes": ["--recipe", "notes"],
    "fast 91": ["--recipe", "fast", "--target", "91"],
    "fast 91 photo": ["--recipe", "fast", "--target", "91", "--photo", "1"],
    "fast 93": ["--recipe", "fast", "--target", "93"],
    "fast 93 photo": ["--recipe", "fast", "--target", "93", "--photo", "1"],
    "strong": ["--recipe", "strong", "--photo", "0"],
    "strong photo": ["--recipe", "strong", "--photo", "1"],
}
SETTINGS = ["--threads", "2", "--channels-last", "on", "--precision", "fp32", "--compile", "off"]


def train(name: str, runs: Path, data_dir: str | None, settings: list[str]) -> Path:
    """The contender's last.pt, trained into RUNS/NAME unless it is there already."""
    run_dir = runs / name.replace(" ", "-")
    if not (run_dir / "last.pt").is_file():
        command = [str(Path(sys.executable).parent / "torchlab"), "train", "fashion-mnist", *CONTENDERS[name],
                   "--val-size", "0", *settings, "--run-dir", str(run_dir), "--quiet"]
        command += ["--data-dir", data_dir] if data_dir else []
        print("training:", " ".join(command), flush=True)
        done = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed: {done.stderr[-1000:]}")
    return run_dir / "last.pt"


def train_seconds(path: Path) -> float | None:
    summary = path.parent / "summary.json"
    return json.loads(summary.read_text()).get("train_seconds") if summary.is_file() else None


def summary_row(name: str, r: dict, seconds: float | None, base: float | None) -> str:
    ratio = f"{seconds / base:.2f}x" if seconds and base else "-"
    time = f"{seconds:,.0f}" if seconds else "-"
    worst = f"{r['worst_middle']} {r['worst_middle_drop'] * 100:.1f}"
    return (f"{name:<15}{time:>8}{ratio:>7}{r['test_acc']:>9.2%}{r['clean_acc']:>8.2%}{r['corruption_acc']:>9.2%}"
            f"{r['gap'] * 100:>7.2f}  {worst}")


def contenders(args) -> list[tuple[str, Path]]:
    named = []
    for item in args.checkpoints:
        name, _, path = item.rpartition("=")
        named.append((name or Path(path).parent.name, Path(path)))
    if args.train:
        runs = Path(args.runs)
        named += [(name, train(name, runs, args.data_dir, SETTINGS if args.settings else []))
                  for name in args.contenders]
    if not named:
        sys.exit("name checkpoints (NAME=PATH or PATH), or pass --train")
    return named


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="*", metavar="[NAME=]CKPT", help="checkpoints to compare")
    ap.add_argument("--train", action="store_true", help="train the recipe contenders missing from --runs")
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS), metavar="NAME",
                    help=f"with --train (default: all): {', '.join(CONTENDERS)}")
    ap.add_argument("--runs", default="runs/robustness", help="where --train keeps its runs")
    ap.add_argument("--settings", action=argparse.BooleanOptionalAction, default=True,
                    help="with --train: pin fp32 NHWC 2 threads instead of measuring (default: on)")
    ap.add_argument("--images", type=int, default=2000, help="test images sampled per corruption and severity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    results, cache = [], {}  # the corrupted, preprocessed images, made once for every checkpoint
    for name, path in contenders(args):
        ckpt = checkpoint.load(str(path))
        r = robustness.corruption_table(ckpt, args.data_dir, args.device, args.images, args.seed, cache=cache)
        r["test_acc"] = robustness.full_test_accuracy(ckpt, args.data_dir, args.device)
        print(f"\n== {name}\n{robustness.table_text(r)}", flush=True)
        results.append((name, r, train_seconds(path)))
    base = results[0][2]
    print(f"\n{'contender':<15}{'train s':>8}{'ratio':>7}{'test':>9}{'clean':>8}{'corrupt':>9}{'gap':>7}"
          f"  worst at severity {robustness.MIDDLE} (points)")
    for name, r, seconds in results:
        print(summary_row(name, r, seconds, base))
    print(f"test: the whole test split as `torchlab eval` scores it; clean and corrupt: {args.images} sampled test "
          f"images (seed {args.seed}) read as `torchlab predict` reads a photo; ratio: training time against "
          f"{results[0][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
