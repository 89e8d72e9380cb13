"""Does `torchlab lr-find` suggest a good learning rate? Its suggestion against a grid of 5 lrs.

For each configuration, on Fashion-MNIST: `torchlab lr-find` suggests an lr; then each of 5 grid lrs (the
configuration's usual lr x 1/10, 1/3, 1, 3, 10) and the suggestion train for `--epochs` epochs each, and
the table gives their test accuracies, the grid's best lr and the suggestion's ratio to it.

    a: notes-cnn + Adam      b: notes-cnn + SGD (Nesterov)      c: vgg-small + SGD one-cycle

    python benchmarks/lr_find.py --data-dir ../shared/data                      # 18 runs x 2 epochs: hours
    python benchmarks/lr_find.py --subset 2000 --epochs 1 --configs a           # a check that it works
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from run_cli import torchlab_json
from torchlab.cli import main as cli_main

CONFIGS = {
    "a": ("notes-cnn + adam", ["--model", "notes-cnn", "--optimizer", "adam"], 1e-3),
    "b": ("notes-cnn + sgd", ["--model", "notes-cnn", "--optimizer", "sgd"], 1e-2),
    "c": ("vgg-small + sgd one-cycle", ["--model", "vgg-small", "--optimizer", "sgd", "--schedule", "onecycle",
                                        "--weight-decay", "5e-4", "--batch-size", "128"], 0.1),
}
FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def source_folder(data_dir: str) -> Path:
    """The folder holding Fashion-MNIST's four IDX files under `data_dir` (torchvision's layout or flat)."""
    for folder in (Path(data_dir) / "fashion-mnist" / "FashionMNIST" / "raw", Path(data_dir)):
        if (folder / FILES[0]).exists():
            return folder
    raise SystemExit(f"no Fashion-MNIST under {data_dir}")


def subset(folder: Path, n: int) -> Path:
    """A copy of the dataset with only the first `n` training images (IDX: 16- and 8-byte headers)."""
    out = Path(tempfile.mkdtemp(prefix="lr-find-data-"))
    for name in FILES:
        raw = gzip.decompress((folder / name).read_bytes())
        if name.startswith("train"):
            header, size = (16, 28 * 28) if "images" in name else (8, 1)
            raw = raw[:4] + n.to_bytes(4, "big") + raw[8:header] + raw[header:header + n * size]
        (out / name).write_bytes(gzip.compress(raw, compresslevel=1))
    return out


def test_acc(flags: list[str], lr: float, epochs: int) -> float | None:
    """Test accuracy after `epochs` at `lr`; None when the run diverged (torchlab stops on a NaN loss)."""
    run = Path(tempfile.mkdtemp()) / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["train", "fashion-mnist", *flags, "--lr", repr(lr), "--epochs", str(epochs),
                         "--run-dir", str(run), "--quiet"])
    return json.loads((run / "summary.json").read_text())["test_acc"] if code == 0 else None


def row(key: str, common: list[str], epochs: int) -> dict:
    """One configuration: the suggestion, the grid's accuracies and the suggestion's."""
    name, flags, base = CONFIGS[key]
    flags = [*flags, *common]
    tic = time.perf_counter()
    found = torchlab_json(["lr-find", "fashion-mnist", *flags, "--run-dir", str(Path(tempfile.mkdtemp()) / "f")])
    find_s = time.perf_counter() - tic
    grid = {base * f: test_acc(flags, base * f, epochs) for f in FACTORS}
    return {"name": name, "suggested": found["suggestion"], "rule": found["rule"], "find_s": find_s, "grid": grid,
            "at_suggested": test_acc(flags, found["suggestion"], epochs)}


def shown(acc: float | None) -> str:
    return "diverged" if acc is None else f"{acc:.2%}"


def print_table(rows: list[dict]) -> None:
    print(flush=True)
    print(f"\n{'config':<27}{'suggested':>10}{'':>3}" + "".join(f"{'x' + format(f, 'g'):>15}" for f in FACTORS)
          + f"{'best grid lr':>14}{'acc@sugg':>10}{'sugg/best':>10}{'acc - best':>11}{'find s':>8}")
    for r in rows:
        scored = {lr: acc for lr, acc in r["grid"].items() if acc is not None}
        best = max(scored, key=scored.get)
        cells = "".join(f"{format(lr, '.3g') + ' ' + shown(acc):>15}" for lr, acc in r["grid"].items())
        gap = f"{r['at_suggested'] - scored[best]:>+11.2%}" if r["at_suggested"] is not None else f"{'-':>11}"
        print(f"{r['name']:<27}{r['suggested']:>10.3g}{r['rule'][:1]:>3}{cells}{best:>14.3g}"
              f"{shown(r['at_suggested']):>10}{r['suggested'] / best:>10.2f}{gap}{r['find_s']:>8.0f}")
    print("\nrule: s = steepest descent of the smoothed loss, m = the minimum's lr / 10; grid cells: lr test accuracy; diverged: the loss became NaN")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TORCHLAB_DATA", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=0, help="train on the first N training images (0: all)")
    parser.add_argument("--configs", default="abc", help="which of a, b, c to run, e.g. ab")
    args = parser.parse_args()
    data = source_folder(args.data_dir)
    data = subset(data, args.subset) if args.subset else data
    val = max(min(5000, args.subset // 10 if args.subset else 5000), 1)
    common = ["--data-dir", str(data), "--val-size", str(val)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.epochs} epoch(s) per run, "
          f"{'the first ' + str(args.subset) if args.subset else 'all'} training images")
    rows = []
    for key in args.configs:  # each configuration's table as soon as it is done: c alone takes long
        rows.append(row(key, common, args.epochs))
        print_table(rows)


if __name__ == "__main__":
    main()
