"""Time to accuracy on Fashion-MNIST: the notes' pipeline, the pytorch/examples recipe and torchlab, in one run.

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data            # CPU, everything (~40 min)
    python benchmarks/time_to_accuracy.py --contenders notes fast --targets 91 93 --seed 1 --skip scaling
    python benchmarks/time_to_accuracy.py --device cuda --contenders notes-cnn fast --skip scaling

It starts with `torchlab doctor`'s summary of the machine. Contenders (each trains on all 60,000 training
images and scores the whole 10,000-image test set after every epoch):
  notes pipeline   the notes' code rebuilt faithfully (per-sample PIL transforms, DataLoader, batch 64,
                   their CNN, Adam 1e-3), from notes_vs_torchlab.py
  examples recipe  pytorch/examples mnist/main.py for Fashion-MNIST: its network with dropout, Adadelta
                   at lr 1.0, StepLR(gamma 0.7) per epoch, batch 64, per-sample transforms
  notes-cnn        `torchlab train fashion-mnist` with the notes' settings (--recipe notes)
  fast T           `torchlab train fashion-mnist --recipe fast --target T`, for each target T (91, 93, 94)

Times are training seconds (evaluation for this table excluded, compile time included), summed over
epochs until the first epoch whose test accuracy reaches each target; "vs notes" divides the contender's
time to its own target (90% for the others) by the notes pipeline's time to 90%. "peak" is the share of
this machine's peak rate in the precision the contender trains in (the best of square matmuls and 3x3
convolutions, measured in the same run, several sizes each, bounded in time) that its training achieves:
3 x forward multiply-adds x 2 FLOPs x images / seconds / peak. Only precisions the device runs natively
are measured.

"settings" times each recipe's training step in every setting `auto` may choose, as torchlab does
(runtime.py), and compares the one `auto` picked with the fastest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from notes_vs_torchlab import NotesNet, epoch_rows, notes_pipeline, torchvision_root, whole_test_accuracy
from run_cli import torchlab_train_process
from torchlab.models.registry import build_model, count_macs, model_config

TARGETS = (0.90, 0.91, 0.92, 0.93, 0.94)
HERE = Path(__file__).resolve().parent


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peaks(device: str, budget: float = 3.0) -> dict[str, float]:
    """FLOP/s per native precision: the best of matmuls (256-2048) and 3x3 convolutions (NCHW and NHWC)."""
    from torchlab import hardware

    dev = torch.device(device)
    found = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rates = {"matmul": hardware.matmul_rate(dev, dtype, budget)}
        if name == "bf16" and rates["matmul"] < found["fp32"]["matmul"]:
            print(f"bf16: matmul {rates['matmul'] / 1e9:.1f} GFLOP/s against {found['fp32']['matmul'] / 1e9:.1f} in "
                  "fp32: emulated, so not a training precision here")
            break
        for layout in (False, True):
            rates[f"conv {'nhwc' if layout else 'nchw'}"] = hardware.conv_rate(dev, dtype, layout, budget)
        found[name] = rates
        print(f"{name} peak (GFLOP/s): " + ", ".join(f"{k} {v / 1e9:,.1f}" for k, v in rates.items()))
    return {name: max(rates.values()) for name, rates in found.items()}


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


def torchlab_run(data_dir: str, device: str, flags: list[str]) -> tuple[list[dict], dict]:
    """(epoch rows, resolved config) of one run of the `torchlab` command, as a user starts it."""
    import tomllib

    summary, run_dir = torchlab_train_process(["fashion-mnist", "--val-size", "0", "--test-every-epoch",
                                               "--data-dir", data_dir, "--device", device, *flags])
    return epoch_rows(summary), tomllib.loads((run_dir / "config.toml").read_text())


def macs_of(name: str) -> int:
    """Multiply-adds per 28x28 image of a contender's network (torchlab's by model name)."""
    network = {"notes pipeline": NotesNet, "examples recipe": ExamplesNet}.get(name)
    model = network() if network else build_model(name, model_config(name))
    return count_macs(model, (1, 28, 28))


def summarise(name: str, rows: list[dict], peak: float, model: str | None = None, goal: float = 0.90,
              images: int = 60000) -> dict:
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
            "images_per_second": ips, "peak_share": 6 * macs_of(model or name) * ips / peak, "goal": goal,
            "rows": rows}


def print_table(results: list[dict], base: float | None) -> None:
    head = "".join(f"{f'{t:.0%}':>8}" for t in TARGETS)
    print(f"\n{'contender':<20}{'epochs':>7}{head}{'final':>8}{'train s':>9}{'img/s':>8}{'peak':>7}{'vs notes':>10}")
    for r in results:
        cells = "".join(f"{r['reached'][t]:>8.1f}" if t in r["reached"] else f"{'':>8}" for t in TARGETS)
        ratio = f"{r['reached'][r['goal']] / base:>9.2f}x" if base and r["goal"] in r["reached"] else f"{'':>10}"
        print(f"{r['name']:<20}{r['epochs']:>7}{cells}{r['final']:>8.2%}{r['seconds']:>9.1f}"
              f"{r['images_per_second']:>8.0f}{r['peak_share']:>7.0%}{ratio}")
    if base:
        print(f"vs notes: the contender's seconds to its target (fast T: T%, the others 90%) / the notes "
              f"pipeline's seconds to 90% ({base:.1f} s)")


def fashion_train(data_dir: str, device: str):
    """The 60,000 training images as the fast path holds them: uint8 on the device, with their labels."""
    from torchlab.data import catalog

    info = catalog.load("fashion-mnist", data_dir, offline=True)
    return info.train.images.to(device), info.train.labels.to(device), (info.mean, info.std)


def image_rate(data, batch: int, rt, steps: int, name: str, warmup: int = 3) -> tuple[float, float]:
    """(images per second after warm-up, seconds of the warm-up steps) for training steps of the fast model."""
    from torchlab.data.vision import TensorLoader
    from torchlab.engine import train_one_epoch

    images, labels, norm = data
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


def recipe_runtime(device: str, recipe: str, target: int):
    """(config, training-step workload, runtime auto picks) of `torchlab train fashion-mnist --recipe ...`."""
    from torchlab import runtime
    from torchlab.config import resolve
    from torchlab.tasks import classify

    cfg = resolve({"recipe": recipe, "target": target, "device": device})
    work = classify.workload(cfg, model_config(cfg.model), (1, 28, 28), cfg.epochs * 60000 // cfg.batch_size)
    return cfg, work, runtime.choose(torch.device(device), runtime.Requested.of(cfg), work)[0]


def settings_check(data, device: str, targets: list[int]) -> list[dict]:
    """For each recipe's model: every setting auto may choose, timed afresh in interleaved rounds, and the
    setting auto picks (from torchlab's cache, measuring where it has none) against the fastest."""
    from torchlab import runtime

    dev, rows = torch.device(device), []
    print(f"\nsettings on {device} (img/s of each recipe's training step; auto's pick against the fastest)")
    for recipe, target in [("notes", 94), ("strong", 94)] + [("fast", t) for t in targets]:
        cfg, work, picked = recipe_runtime(device, recipe, target)
        space = [r for r in runtime.candidates(dev, runtime.Requested.of(cfg), work, []) if not r.compile]
        timed = runtime.measure(work, space + ([picked] if picked.compile else []))
        best = max(timed, key=lambda k: timed[k]["rate"])
        share = timed[picked.label()]["rate"] / timed[best]["rate"]
        print(f"  {recipe} {target if recipe == 'fast' else ''} ({work.name}): auto picks {picked.label()}, "
              f"{share:.0%} of the fastest ({best}); " + ", ".join(f"{k} {v['rate']:,.0f}" for k, v in timed.items()))
        rows.append({"recipe": recipe, "target": target, "workload": work.name, "picked": picked.label(),
                     "fastest": best, "share": share, "rates": {k: v["rate"] for k, v in timed.items()}})
    return rows


def scaling(data, device: str, batches: list[int], fractions: list[float]) -> None:
    """Seconds per epoch of `--recipe fast` against the training-set size, and img/s against the batch size."""
    cfg, _, rt = recipe_runtime(device, "fast", 94)
    images, labels, norm = data
    print(f"\nscaling on {device}: {cfg.model}, {rt.describe()}")
    with rt.threads_set():
        for frac in fractions:
            n = int(len(labels) * frac)
            ips, _ = image_rate((images[:n], labels[:n], norm), cfg.batch_size, rt, n // cfg.batch_size - 3, cfg.model)
            print(f"  {frac:>5.0%} of the training set ({n} images): {n / ips:6.1f} s per epoch")
        for b in batches:
            ips, _ = image_rate(data, b, rt, max(5, min(40, 6000 // b)), cfg.model)
            print(f"  batch {b:>5}: {ips:8.0f} img/s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--contenders", nargs="*", default=["notes", "examples", "notes-cnn", "fast"],
                    choices=["notes", "examples", "notes-cnn", "fast"])
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the notes, examples and notes-cnn contenders")
    ap.add_argument("--targets", type=int, nargs="+", default=[91, 93, 94], help="targets of the fast recipe")
    ap.add_argument("--skip", nargs="*", default=[], choices=["settings", "scaling"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    from torchlab.commands import doctor

    device = args.device
    print(doctor.text(doctor.report(argparse.Namespace(device=device, measure=False, data_dir=args.data_dir))))
    print()
    peak = peaks(device)
    out = {"device": device, "peaks": peak, "seed": args.seed}
    data = fashion_train(args.data_dir, device)
    if "settings" not in args.skip:
        out["settings"] = settings_check(data, device, args.targets)
    results = []
    root = torchvision_root(args.data_dir) if {"notes", "examples"} & set(args.contenders) else None
    if "notes" in args.contenders:
        results.append(summarise("notes pipeline", notes_pipeline(root, args.epochs, args.seed, device), peak["fp32"]))
    if "examples" in args.contenders:
        results.append(summarise("examples recipe", examples_recipe(root, args.epochs, args.seed, device), peak["fp32"]))
    if "notes-cnn" in args.contenders:
        rows, cfg = torchlab_run(args.data_dir, device, ["--recipe", "notes", "--epochs", str(args.epochs),
                                                         "--seed", str(args.seed)])
        results.append(summarise("notes-cnn", rows, peak[cfg["precision"]]))
    if "fast" in args.contenders:
        for t in args.targets:
            rows, cfg = torchlab_run(args.data_dir, device, ["--recipe", "fast", "--target", str(t), "--seed", str(args.seed)])
            results.append(summarise(f"fast {t} ({cfg['model']}, {cfg['precision']})", rows, peak[cfg["precision"]],
                                     cfg["model"], t / 100))
    notes = next((r for r in results if r["name"] == "notes pipeline"), None)
    print_table(results, notes["reached"].get(0.90) if notes else None)
    if "scaling" not in args.skip:
        scaling(data, device, [32, 64, 128, 256, 512, 1024], [0.25, 0.5, 1.0])
    if args.json_out:
        out["results"] = [{k: v for k, v in r.items()} | {"reached": {str(k): v for k, v in r["reached"].items()}}
                          for r in results]
        args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
