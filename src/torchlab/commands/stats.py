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
from torchlab.i18n import _
from torchlab.logger import say


def add_arguments(p) -> None:
    p.add_argument("dataset", choices=catalog.NAMES, help=_("a built-in dataset, or image-folder with --data-dir"))
    p.add_argument("--data-dir", help=_("folder holding the dataset (for image-folder: the class sub-folders, "
                                      "or train/ and val/)"))
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))


def run(args) -> int:
    tic = time.perf_counter()
    images, source = catalog.iter_train_images(args.dataset, args.data_dir)
    say(_("reading the training images of {dataset} from {source}").format(dataset=args.dataset, source=source))
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
    lines = [_("{dataset}: {images} training images, {pixels} pixels per channel ({seconds} s, from {source})").format(
                 dataset=r["dataset"], images=r["images"], pixels=f"{r['pixels']:,}", seconds=f"{r['seconds']:.1f}",
                 source=r["source"]),
             "  " + _("mean per channel  {mean}").format(mean=mean),
             "  " + _("std per channel   {std}").format(std=std),
             f"  transforms.Normalize(mean={mean}, std={std})"]
    if "torchlab_uses" in r:
        used = r["torchlab_uses"]
        # One rounding for every number on the page, so 0.2860 above and here read as the same value.
        lines.append("  " + _("torchlab trains with mean {mean}, std {std}").format(mean=as_tuple(used["mean"]),
                                                                                 std=as_tuple(used["std"])))
    return "\n".join(lines)
