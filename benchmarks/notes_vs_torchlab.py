"""The notes' Fashion-MNIST pipeline against `torchlab train --model notes-cnn`, in one run.

The notes' pipeline is rebuilt as they wrote it: torchvision's FashionMNIST with
per-sample PIL -> ToTensor -> Normalize transforms, DataLoader(batch 64,
shuffle, drop_last) for training, their network, Adam at 1e-3, and a
checkpoint written on every batch whose loss beats the best so far. Its
test loader also shuffles and drops the last batch, and it reports the mean of
the batch accuracies; we print that figure and the accuracy over the whole
test set beside it.

torchlab runs through its CLI with the same settings on the same 60,000
training images (`--val-size 0`), scoring the whole test set after each epoch.

    python benchmarks/notes_vs_torchlab.py --data-dir ../shared/data --epochs 3 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from run_cli import torchlab_json
from torchlab.data.locate import candidate_dirs, files_in
from torchlab.data.vision import DATASETS


class NotesNet(nn.Module):
    """The notes' network, as they define it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, stride=1, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1)
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(13 * 13 * 64, 10)

    def forward(self, x):
        x = self.max_pool(self.relu(self.conv2(self.conv1(x))))
        return self.fc1(x.view(-1, 13 * 13 * 64))


def torchvision_root(data_dir: str) -> Path:
    """torchvision extracts the .gz files next to themselves, so give it a writable copy."""
    spec = DATASETS["fashion-mnist"].files
    for folder in candidate_dirs(Path(data_dir), spec):
        if files_in(folder, spec):
            root = Path(tempfile.mkdtemp()) / "FashionMNIST" / "raw"
            shutil.copytree(folder, root)
            root.chmod(0o755)
            return root.parent.parent
    sys.exit(f"no Fashion-MNIST under {data_dir}")


def notes_pipeline(root: Path, epochs: int, seed: int, device: str = "cpu") -> list[dict]:
    torch.manual_seed(seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.286,), (0.353,))])
    train_set = datasets.FashionMNIST(root=str(root), train=True, download=True, transform=tf)
    test_set = datasets.FashionMNIST(root=str(root), train=False, download=True, transform=tf)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
    notes_test_loader = DataLoader(test_set, batch_size=64, shuffle=True, drop_last=True)  # as in the notes
    whole_test_loader = DataLoader(test_set, batch_size=1000, shuffle=False)
    model = NotesNet().to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    ckpt_dir = Path(tempfile.mkdtemp())
    best_loss, rows = float("inf"), []
    for epoch in range(epochs):
        model.train()
        tic = time.perf_counter()
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
            if loss < best_loss:  # the notes save on every batch that beats the best loss
                best_loss = loss
                torch.save(model.state_dict(), ckpt_dir / "model.pth")
                torch.save(optimizer.state_dict(), ckpt_dir / "optimizer.pth")
        seconds = time.perf_counter() - tic
        model.eval()
        with torch.no_grad():
            notes_acc = np.mean([(model(x.to(device)).argmax(1).cpu() == y).float().mean().item()
                                 for x, y in notes_test_loader])
            acc = whole_test_accuracy(model, whole_test_loader, device)
        rows.append({"epoch": epoch + 1, "seconds": seconds, "acc": acc, "notes_acc": notes_acc,
                     "scored": len(notes_test_loader) * 64})
    return rows


def whole_test_accuracy(model, loader: DataLoader, device: str) -> float:
    """Share of the loader's whole dataset that the model classifies right (call under no_grad, in eval mode)."""
    correct = sum((model(x.to(device)).argmax(1).cpu() == y).sum().item() for x, y in loader)
    return correct / len(loader.dataset)


def epoch_rows(summary: dict) -> list[dict]:
    """Per-epoch training seconds and test accuracy from a `torchlab train --test-every-epoch --json` summary."""
    rows, previous = [], 0.0
    for h in summary["history"]:
        rows.append({"epoch": h["epoch"], "seconds": h["train_seconds"] - previous, "acc": h["test_acc"]})
        previous = h["train_seconds"]
    return rows


def torchlab_pipeline(data_dir: str, epochs: int, seed: int, extra: list[str], device: str = "cpu") -> list[dict]:
    run_dir = Path(tempfile.mkdtemp()) / "run"
    summary = torchlab_json(["train", "fashion-mnist", "--model", "notes-cnn", "--epochs", str(epochs),
                             "--batch-size", "64", "--optimizer", "adam", "--lr", "1e-3", "--val-size", "0",
                             "--test-every-epoch", "--seed", str(seed), "--data-dir", data_dir,
                             "--run-dir", str(run_dir), "--device", device, "--precision", "fp32", *extra])
    return [row | {"notes_acc": None, "scored": 10000} for row in epoch_rows(summary)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run of each pipeline per seed")
    parser.add_argument("--nchw", action="store_true", help="also time torchlab with --channels-last off")
    parser.add_argument("--device", default="cpu", help="cpu (the figures in the issue) or cuda")
    parser.add_argument("--json-out", help="also write the per-seed results to this JSON file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, seeds {args.seeds}")
    root = torchvision_root(args.data_dir)
    pipelines = {"notes pipeline": lambda seed: notes_pipeline(root, args.epochs, seed, args.device),
                 "torchlab notes-cnn": lambda seed: torchlab_pipeline(args.data_dir, args.epochs, seed, [], args.device)}
    if args.nchw:
        pipelines["torchlab notes-cnn NCHW"] = lambda seed: torchlab_pipeline(
            args.data_dir, args.epochs, seed, ["--channels-last", "off"], args.device)
    results = {name: [] for name in pipelines}
    for seed in args.seeds:  # interleaved, so a slow spell of the machine hits every pipeline alike
        for name, run in pipelines.items():
            results[name].append(run(seed))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"seeds": args.seeds, "results": results}))
    base = np.mean([r["seconds"] for rows in results["notes pipeline"] for r in rows])
    print(f"\nper seed\n{'pipeline':<34}{'seed':>5}{'epoch':>6}{'s/epoch':>9}{'test acc':>10}{'notes metric':>14}{'scored':>8}")
    for name, runs in results.items():
        for seed, rows in zip(args.seeds, runs):
            for r in rows:
                notes = f"{r['notes_acc']:.2%}" if r["notes_acc"] is not None else "-"
                print(f"{name:<34}{seed:>5}{r['epoch']:>6}{r['seconds']:>9.1f}{r['acc']:>10.2%}{notes:>14}{r['scored']:>8}")
    print(f"\nmean over {len(args.seeds)} seeds\n{'pipeline':<34}{'epoch':>6}{'s/epoch':>9}{'speed-up':>9}"
          f"{'test acc':>10}{'min':>8}{'max':>8}")
    for name, runs in results.items():
        for e in range(args.epochs):
            secs = np.mean([rows[e]["seconds"] for rows in runs])
            accs = [rows[e]["acc"] for rows in runs]
            print(f"{name:<34}{e + 1:>6}{secs:>9.1f}{base / secs:>8.2f}x{np.mean(accs):>10.2%}"
                  f"{min(accs):>8.2%}{max(accs):>8.2%}")
    for name, runs in results.items():
        mean = np.mean([r["seconds"] for rows in runs for r in rows])
        print(f"mean s/epoch {name}: {mean:.1f} ({base / mean:.2f}x the notes pipeline)")


if __name__ == "__main__":
    main()
