"""Time and accuracy of `torchlab train fashion-mnist --recipe strong` on this machine.

Runs the recipe through the CLI exactly as a user would, scoring the test set
after every epoch, and prints the accuracy curve against training time. The
baseline in the same run is the notes' settings (`--recipe notes`) for the
same number of seconds' worth of epochs, unless `--no-baseline`.

    python benchmarks/strong_recipe.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from run_cli import torchlab_json


def train(args: list[str]) -> tuple[dict, float]:
    tic = time.perf_counter()
    summary = torchlab_json(["train", "fashion-mnist", "--test-every-epoch",
                             "--run-dir", str(Path(tempfile.mkdtemp()) / "run"), *args])
    return summary, time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--baseline-epochs", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    runs = {}
    strong = ["--recipe", "strong", "--data-dir", args.data_dir] + (["--epochs", str(args.epochs)] if args.epochs else [])
    runs["strong"] = train(strong)
    if not args.no_baseline:
        runs["notes"] = train(["--recipe", "notes", "--data-dir", args.data_dir, "--epochs", str(args.baseline_epochs)])
    print(f"\n{'recipe':<8}{'epoch':>6}{'train s':>9}{'val acc':>9}{'test acc':>10}{'img/s':>8}")
    for name, (summary, _) in runs.items():
        for h in summary["history"]:
            print(f"{name:<8}{h['epoch']:>6}{h['train_seconds']:>9.1f}{h['val_acc']:>9.2%}{h['test_acc']:>10.2%}"
                  f"{h['images_per_second']:>8.0f}")
    print()
    for name, (summary, wall) in runs.items():
        print(f"{name}: final test accuracy {summary['test_acc']:.2%} ({summary['test_scored']}, whole test set), "
              f"{summary['train_seconds']:.0f} s training, {wall:.0f} s wall in all (data, evaluation, checkpoints)")
    if not args.no_baseline:
        (s, _), (b, _) = runs["strong"], runs["notes"]
        print(f"strong vs notes: {s['test_acc'] - b['test_acc']:+.2%} accuracy, "
              f"{s['train_seconds'] / b['train_seconds']:.2f}x the training time")


if __name__ == "__main__":
    main()
