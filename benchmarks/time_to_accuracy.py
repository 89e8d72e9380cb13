"""Time to accuracy on Fashion-MNIST: the notes' pipeline, the pytorch/examples recipe and torchlab, in one run.

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data            # CPU, everything (~30 min)
    python benchmarks/time_to_accuracy.py --device cuda --contenders notes-cnn fast --skip scaling

Contenders (each trains on all 60,000 training images and scores the whole
10,000-image test set after every epoch):
  notes pipeline   the notes' code rebuilt faithfully (per-sample PIL transforms, DataLoader, batch 64,
                   their CNN, Adam 1e-3), from notes_vs_torchlab.py
  examples recipe  pytorch/examples mnist/main.py for Fashion-MNIST: its network with dropout, Adadelta
                   at lr 1.0, StepLR(gamma 0.7) per epoch, batch 64, per-sample transforms
  notes-cnn        `torchlab train fashion-mnist` with the notes' settings (--recipe notes)
  fast T           `torchlab train fashion-mnist --recipe fast --target T`, for each target T (91, 93, 94)

Times are training seconds (evaluation for this table excluded, compile time
included), summed over epochs until the first epoch whose test accuracy
reaches each target. "peak" is the share of this machine's matrix-multiply
rate (a 2048 x 2048 matmul, measured in the same run, in the precision the
contender trains in) that its training achieves: 3 x forward multiply-adds
x 2 FLOPs x images / seconds / peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from notes_vs_torchlab import NotesNet, epoch_rows, notes_pipeline, torchvision_root, whole_test_accuracy
from run_cli import torchlab_json
from torchlab.config import FAST, FAST_TARGETS
from torchlab.models.registry import build_model, count_macs, model_config

TARGETS = (0.90, 0.91, 0.92, 0.93, 0.94)
HERE = Path(__file__).resolve().parent


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n matmul over a few repeats."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 2):
        sync(device)
        tic = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class ExamplesNet(nn.Module):
    """The network of pytorch/examples mnist/main.py."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def examples_recipe(root: Path, epochs: int, seed: int, device: str) -> list[dict]:
    """pytorch/examples mnist/main.py, as written (its MNIST normalisation included), on Fashion-MNIST."""
    torch.manual_seed(seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    # download=True only extracts: torchvision_root holds a copy of the .gz files already.
    train_set = datasets.FashionMNIST(str(root), train=True, download=True, transform=tf)
    test_set = datasets.FashionMNIST(str(root), train=False, download=True, transform=tf)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)
    model = ExamplesNet().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    rows = []
    for epoch in range(epochs):
        model.train()
        tic = time.perf_counter()
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            F.nll_loss(model(data), target).backward()
            optimizer.step()
        sync(device)
        seconds = time.perf_counter() - tic
        model.eval()
        with torch.no_grad():
            acc = whole_test_accuracy(model, test_loader, device)
        scheduler.step()
        rows.append({"epoch": epoch + 1, "seconds": seconds, "acc": acc})
    return rows


def torchlab_run(data_dir: str, device: str, flags: list[str]) -> list[dict]:
    run_dir = Path(tempfile.mkdtemp()) / "run"
    s = torchlab_json(["train", "fashion-mnist", "--val-size", "0", "--test-every-epoch", "--data-dir", data_dir,
                       "--device", device, "--run-dir", str(run_dir), *flags])
    return epoch_rows(s)


def macs_of(name: str) -> int:
    if name in ("notes pipeline",):
        return count_macs(NotesNet(), (1, 28, 28))
    if name == "examples recipe":
        return count_macs(ExamplesNet(), (1, 28, 28))
    model = "notes-cnn" if name == "notes-cnn" else FAST_TARGETS["cpu"][int(name.split()[-1])]["model"]
    return count_macs(build_model(model, model_config(model)), (1, 28, 28))


def summarise(name: str, rows: list[dict], peak: float, images: int = 60000) -> dict:
    print(f"{name}: " + ", ".join(f"epoch {r['epoch']} {r['seconds']:.1f} s {r['acc']:.2%}" for r in rows),
          file=sys.stderr, flush=True)  # as each contender ends, in case a later one fails
    elapsed, reached = 0.0, {}
    for r in rows:
        elapsed += r["seconds"]
        for t in TARGETS:
            if r["acc"] >= t and t not in reached:
                reached[t] = elapsed
    ips = images * len(rows) / max(elapsed, 1e-9)
    return {"name": name, "reached": reached, "final": rows[-1]["acc"], "epochs": len(rows), "seconds": elapsed,
            "images_per_second": ips, "peak_share": 6 * macs_of(name) * ips / peak, "rows": rows}


def print_table(results: list[dict], base: float | None) -> None:
    head = "".join(f"{f'{t:.0%}':>8}" for t in TARGETS)
    print(f"\n{'contender':<20}{'epochs':>7}{head}{'final':>8}{'train s':>9}{'img/s':>8}{'peak':>7}{'vs notes':>9}")
    for r in results:
        cells = "".join(f"{r['reached'][t]:>8.1f}" if t in r["reached"] else f"{'':>8}" for t in TARGETS)
        ratio = f"{base / r['reached'][0.91]:>8.1f}x" if base and 0.91 in r["reached"] else ""
        print(f"{r['name']:<20}{r['epochs']:>7}{cells}{r['final']:>8.2%}{r['seconds']:>9.1f}"
              f"{r['images_per_second']:>8.0f}{r['peak_share']:>7.0%}{ratio:>9}")
    if base:
        print(f"vs notes: the notes pipeline's seconds to 90% ({base:.1f} s) / the contender's seconds to 91%")


def fashion_train(data_dir: str, device: str):
    """The 60,000 training images as the fast path holds them: uint8 on the device, with their labels."""
    from torchlab.data import catalog

    info = catalog.load("fashion-mnist", data_dir, offline=True)
    return info.train.images.to(device), info.train.labels.to(device), (info.mean, info.std)


def image_rate(data, batch: int, rt, steps: int, warmup: int = 3, model_name: str | None = None) -> tuple[float, float]:
    """(images per second after warm-up, seconds of the warm-up steps) for training steps of the fast model."""
    from torchlab.data.vision import TensorLoader
    from torchlab.engine import train_one_epoch

    images, labels, norm = data
    name = model_name or FAST_TARGETS["cpu"][94]["model"]
    torch.manual_seed(0)
    model = build_model(name, model_config(name)).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if rt.compile else model
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loader = TensorLoader(images, labels, batch, train=True, augment=True, flip=True, norm=norm, erase=0.25)
    batches = loader.epoch(0)
    first = train_one_epoch(forward, (next(batches) for _ in range(warmup)), opt, None, rt, log_every=10**9)
    timed = train_one_epoch(forward, (next(batches) for _ in range(steps)), opt, None, rt, log_every=10**9)
    return timed["images"] / timed["seconds"], first["seconds"]


def hardware_choices(data, device: str, batch: int, budget_images: int) -> dict:
    """Measure each setting the fast recipe could use; keep what pays on this device."""
    from torchlab.engine import Runtime

    dev = torch.device(device)
    steps = 40 if device == "cpu" else 200
    rows = {}
    for precision in ("fp32", "bf16"):
        for layout in ("off", "on"):
            rows[f"{precision} channels-last {layout}"] = image_rate(data, batch, Runtime(dev, precision == "bf16", layout == "on"), steps)
    best = max(rows, key=lambda k: rows[k][0])
    bf16, cl = best.startswith("bf16"), best.endswith("on")
    rows[f"{best} + compile"] = image_rate(data, batch, Runtime(dev, bf16, cl, compile=True), steps)
    if device == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // 2))
        rows[f"{best}, {torch.get_num_threads()} thread(s)"] = image_rate(data, batch, Runtime(dev, bf16, cl), steps)
        torch.set_num_threads(threads)
    plain, compiled = rows[best], rows[f"{best} + compile"]
    saved = budget_images / plain[0] - budget_images / compiled[0]  # seconds compile saves over the budget
    compile_cost = compiled[1] - plain[1]  # its extra warm-up time
    print(f"\nhardware settings on {device}, vgg-small, batch {batch} (img/s after warm-up; warm-up s)")
    for name, (ips, warm) in rows.items():
        print(f"  {name:<38}{ips:>8.0f} img/s{warm:>8.1f} s")
    print(f"  compile: costs {compile_cost:.1f} s, saves {saved:.1f} s over {budget_images} images -> "
          f"{'on' if saved > compile_cost else 'off'}")
    from torchlab.engine import native_bf16

    return {"device": device, "native_bf16": native_bf16(dev), "precision": "bf16" if bf16 else "fp32", "channels_last": "on" if cl else "off",
            "compile": "on" if saved > compile_cost else "off",
            "measured": {k: {"images_per_second": round(v[0], 1), "warmup_seconds": round(v[1], 2)} for k, v in rows.items()}}


def scaling(data, device: str, batches: list[int], fractions: list[float]) -> None:
    """Seconds per epoch against the training-set size, and images per second against the batch size."""
    from torchlab.engine import Runtime

    kind = "cuda" if device == "cuda" else "cpu"
    settings = {**FAST[kind], **FAST_TARGETS[kind][94]}
    rt = Runtime.choose(torch.device(device), settings["precision"], settings["channels_last"], settings["compile"])
    images, labels, norm = data
    print(f"\nscaling on {device}: {rt.describe()}")
    for frac in fractions:
        n = int(len(labels) * frac)
        steps = n // settings["batch_size"]
        ips, _ = image_rate((images[:n], labels[:n], norm), settings["batch_size"], rt, steps - 3)
        print(f"  {frac:>5.0%} of the training set ({n} images): {n / ips:6.1f} s per epoch")
    for b in batches:
        ips, _ = image_rate(data, b, rt, max(5, min(40, 6000 // b)))
        print(f"  batch {b:>5}: {ips:8.0f} img/s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--contenders", nargs="*", default=["notes", "examples", "notes-cnn", "fast"],
                    choices=["notes", "examples", "notes-cnn", "fast"])
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the notes, examples and notes-cnn contenders")
    ap.add_argument("--targets", type=int, nargs="+", default=[91, 93, 94], help="targets of the fast recipe")
    ap.add_argument("--skip", nargs="*", default=[], choices=["hardware", "scaling"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--record", action="store_true", help="write the hardware choices to benchmarks/recorded/")
    args = ap.parse_args(argv)
    device = args.device
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}")
    peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    print("matmul peak (2048^2): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))
    out = {"device": name, "peaks": peaks}
    data = fashion_train(args.data_dir, device)
    if "hardware" not in args.skip:
        kind = "cuda" if device == "cuda" else "cpu"
        longest = FAST_TARGETS[kind][94]
        out["choices"] = hardware_choices(data, device, longest["batch_size"], 60000 * longest["epochs"])
        if args.record:  # the tests check that the fast recipe uses what was measured here
            (HERE / "recorded").mkdir(exist_ok=True)
            (HERE / "recorded" / f"choices-{kind}.json").write_text(json.dumps(out["choices"], indent=2) + "\n")
    results = []
    root = torchvision_root(args.data_dir) if {"notes", "examples"} & set(args.contenders) else None
    if "notes" in args.contenders:
        results.append(summarise("notes pipeline", notes_pipeline(root, args.epochs, args.seed, device), peaks["fp32"]))
    if "examples" in args.contenders:
        results.append(summarise("examples recipe", examples_recipe(root, args.epochs, args.seed, device), peaks["fp32"]))
    if "notes-cnn" in args.contenders:
        rows = torchlab_run(args.data_dir, device, ["--recipe", "notes", "--epochs", str(args.epochs)])
        results.append(summarise("notes-cnn", rows, peaks["fp32"]))
    if "fast" in args.contenders:
        from torchlab.engine import native_bf16

        precision = FAST["cuda" if device == "cuda" else "cpu"]["precision"]
        if precision == "auto":
            precision = "bf16" if native_bf16(torch.device(device)) else "fp32"
        for t in args.targets:
            rows = torchlab_run(args.data_dir, device, ["--recipe", "fast", "--target", str(t), "--seed", str(args.seed)])
            results.append(summarise(f"fast {t}", rows, peaks[precision]))
    notes = next((r for r in results if r["name"] == "notes pipeline"), None)
    print_table(results, notes["reached"].get(0.90) if notes else None)
    if "scaling" not in args.skip:
        scaling(data, device, [32, 64, 128, 256, 512, 1024], [0.25, 0.5, 1.0])
    if not results:
        return 0
    if args.json_out:
        out["results"] = [{k: v for k, v in r.items()} | {"reached": {str(k): v for k, v in r["reached"].items()}}
                          for r in results]
        args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
