"""`torchlab data`: find the image datasets on disk (or download them) and check them."""

from __future__ import annotations

from torchlab.data import catalog
from torchlab.i18n import _


def add_arguments(p) -> None:
    p.add_argument("names", nargs="*", choices=[[], *catalog.NAMES], metavar="NAME",
                   help=", ".join(catalog.NAMES) + " (default: fashion-mnist, mnist)")
    p.add_argument("--data-dir", help=_("folder holding the dataset files"))
    p.add_argument("--offline", action="store_true", help=_("only look on disk, never download"))


def run(args) -> int:
    for name in args.names or ["fashion-mnist", "mnist"]:
        d = catalog.load(name, args.data_dir, offline=args.offline)
        counts = " + ".join(f"{len(split)} {split_name}" for split_name, split in
                            (("train", d.train), ("val", d.val), ("test", d.test)) if split is not None)
        print(f"{name}: {counts} images {tuple(d.train.images.shape[1:])}, {len(d.classes)} classes, "
              f"checked, from {d.source}")
    return 0
