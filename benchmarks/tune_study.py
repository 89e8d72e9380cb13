"""Does `torchlab tune` find better settings than the notes' own? A study against the notes' settings.

On Fashion-MNIST with the notes' network (notes-cnn): the notes' settings (Adam, lr 1e-3, batch 64, no
weight decay) train for `--epochs`; then `torchlab tune` runs `--trials` trials of `--epochs` each over lr,
weight decay and batch size, pruning poor trials on validation accuracy. The table lists every trial
(its values, state, best validation accuracy and test accuracy) and the best trial against the baseline,
on the test set that neither chose anything on.

    python benchmarks/tune_study.py --data-dir ../shared/data                     # 12 trials x 2 epochs
    python benchmarks/tune_study.py --subset 20000 --trials 12 --epochs 2         # on the first 20,000 images
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
import tomllib
from pathlib import Path

import torch

from lr_find import source_folder, subset
from torchlab.cli import main as cli_main

SPACE = ["--param", "lr=1e-4:1e-1:log", "--param", "weight_decay=1e-6:1e-2:log", "--param", "batch_size=32,64,128"]


def quietly(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli_main([*argv, "--quiet"])


def baseline(common: list[str], epochs: int) -> dict:
    run = Path(tempfile.mkdtemp()) / "notes"
    assert quietly(["train", "fashion-mnist", "--recipe", "notes", *common, "--epochs", str(epochs),
                    "--run-dir", str(run)]) == 0
    return with_config(run)


def with_config(run: Path) -> dict:
    """A run's summary.json with its resolved settings (config.toml) under "config"."""
    return {**json.loads((run / "summary.json").read_text()),
            "config": tomllib.loads((run / "config.toml").read_text())}


def study(common: list[str], epochs: int, trials: int) -> list[dict]:
    """Every trial's summary.json, in trial order (a pruned trial has no test accuracy)."""
    folder = Path(tempfile.mkdtemp()) / "study"
    code = quietly(["tune", "fashion-mnist", "--model", "notes-cnn", "--trials", str(trials), *SPACE, *common,
                    "--epochs", str(epochs), "--study-dir", str(folder)])
    assert code == 0, f"tune exited with {code}"
    return [with_config(p.parent) for p in sorted(folder.glob("trial-*/summary.json"))]


def print_table(notes: dict, trials: list[dict], seconds: float) -> None:
    print(f"\n{'run':<10}{'lr':>10}{'weight decay':>14}{'batch':>7}{'state':>10}{'best val':>10}{'test':>9}")
    rows = [("notes", notes)] + [(f"trial {i}", t) for i, t in enumerate(trials)]
    for name, s in rows:
        cfg = s.get("config") or {}
        test = f"{s['test_acc']:.2%}" if s.get("test_acc") is not None else "-"
        print(f"{name:<10}{cfg.get('lr', 1e-3):>10.3g}{cfg.get('weight_decay', 0.0):>14.3g}"
              f"{cfg.get('batch_size', 64):>7}{s['status']:>10}{s.get('best_val_acc') or 0:>10.2%}{test:>9}")
    done = [t for t in trials if t.get("test_acc") is not None]
    best = max(done, key=lambda t: t["best_val_acc"])  # chosen on validation, as tune chooses
    pruned = sum(t["status"] == "pruned" for t in trials)
    print(f"\nbest trial (by val): test {best['test_acc']:.2%} against the notes' {notes['test_acc']:.2%} "
          f"({best['test_acc'] - notes['test_acc']:+.2%}); {pruned} of {len(trials)} trials pruned; "
          f"study {seconds / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TORCHLAB_DATA", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--subset", type=int, default=0, help="train on the first N training images (0: all)")
    args = parser.parse_args()
    data = source_folder(args.data_dir)
    data = subset(data, args.subset) if args.subset else data
    val = max(min(5000, args.subset // 10 if args.subset else 5000), 1)
    common = ["--data-dir", str(data), "--val-size", str(val), "--device", "cpu"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.trials} trials x {args.epochs} "
          f"epoch(s); {'the first ' + str(args.subset) if args.subset else 'all'} training images")
    notes = baseline(common, args.epochs)
    tic = time.perf_counter()
    trials = study(common, args.epochs, args.trials)
    print_table(notes, trials, time.perf_counter() - tic)


if __name__ == "__main__":
    main()
