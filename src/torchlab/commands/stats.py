"""`torchlab stats DATASET`: derive the numbers that `transforms.Normalize` needs.

The notes type in 0.286 and 0.353 for Fashion-MNIST. Here they are measured:
the mean and (population) standard deviation of every pixel of every training
image, per channel, after scaling to [0, 1] as ToTensor does, in one
streaming pass (data/stats.py). The test split is never looked at.
"""

from __future__ import annotations

import json
import time

from torchlab.data import catalog
from torchlab.data.stats import channel_stats
from torchlab.logger import say


def add_arguments(p) -> None:
    p.add_argument("dataset", choices=catalog.NAMES, help="a built-in dataset, or image-folder with --data-dir")
    p.add_argument("--data-dir", help="folder holding the dataset (for image-folder: the class sub-folders, "
                                      "or train/ and val/)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    tic = time.perf_counter()
    images, source = catalog.iter_train_images(args.dataset, args.data_dir)
    say(f"reading the training images of {args.dataset} from {source}")
    stats = channel_stats(images)
    result = {"dataset": args.dataset, "source": source, **stats, "seconds": round(time.perf_counter() - tic, 3)}
    known = catalog.KNOWN_STATS.get(args.dataset)
    if known:
        result["torchlab_uses"] = {"mean": list(known[0]), "std": list(known[1])}
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


def as_tuple(values: list[float]) -> str:
    """Python tuple syntax with 4 decimals: (0.2860,) or (0.5180, 0.4762, 0.3496)."""
    inner = ", ".join(f"{v:.4f}" for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"


def text(r: dict) -> str:
    mean, std = as_tuple(r["mean"]), as_tuple(r["std"])
    lines = [f"{r['dataset']}: {r['images']} training images, {r['pixels']:,} pixels per channel "
             f"({r['seconds']:.1f} s, from {r['source']})",
             f"  mean per channel  {mean}",
             f"  std per channel   {std}",
             f"  transforms.Normalize(mean={mean}, std={std})"]
    if "torchlab_uses" in r:
        used = r["torchlab_uses"]
        lines.append(f"  torchlab trains with mean {tuple(used['mean'])}, std {tuple(used['std'])}")
    return "\n".join(lines)
