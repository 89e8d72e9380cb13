"""Every dataset `torchlab train` knows, by name, loaded into one common shape.

    fashion-mnist, mnist   IDX files (data/idx.py)        1 x 28 x 28
    cifar10                CIFAR-10 python batches         3 x 32 x 32
    image-folder           class sub-folders of images     3 x size x size

`load` returns the splits as uint8 tensors with the class names, the
normalisation and how training should augment. The tasks never need to know
which file format a dataset came in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from torchlab.data import cifar, folder
from torchlab.data.locate import locate
from torchlab.data.vision import DATASETS, Split, load_idx_dataset
from torchlab.errors import UserError
from torchlab.i18n import _

NAMES = ("fashion-mnist", "mnist", "cifar10", "image-folder")
CHANNELS = {"fashion-mnist": 1, "mnist": 1, "cifar10": 3, "image-folder": 3}  # of the images each one yields
# Per-channel mean and std of CIFAR-10's 50,000 training images (scaled to [0, 1]).
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class Loaded:
    name: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split  # uint8 [N, C, H, W]
    val: Split | None  # given by the dataset (image folders); else classify holds some out of train
    test: Split | None
    source: str
    flip: bool  # does a mirror image keep its label?
    pad: int = 2  # shift augmentation: up to this many pixels
    crop: int = 0  # image folders: model input side; train images are stored larger and cropped


# The normalisation each built-in dataset trains with (`torchlab stats NAME` measures it).
KNOWN_STATS = {name: (spec.mean, spec.std) for name, spec in DATASETS.items()} | {"cifar10": (CIFAR_MEAN, CIFAR_STD)}


def folder_root(name: str, data_dir: str | None) -> Path:
    if not data_dir:
        raise UserError(_("{name} needs --data-dir DIR").format(name=name),
                        _("point it at a folder with one sub-folder of images per class"))
    return Path(data_dir).expanduser()


def load(name: str, data_dir: str | None = None, *, size: int = 96, val_fraction: float = 0.2,
         seed: int = 0, offline: bool = False) -> Loaded:
    """Find, check and decode the dataset `name` (see NAMES); `offline` never downloads."""
    if name in DATASETS:
        spec = DATASETS[name]
        train, test, source = load_idx_dataset(spec, data_dir, offline)
        return Loaded(name, spec.classes, spec.mean, spec.std, train, None, test, source, spec.flip)
    if name == "cifar10":
        paths, source = locate(cifar.FILES, data_dir, offline)
        x, y, tx, ty, classes = cifar.read_cifar10(paths)
        return Loaded(name, classes, CIFAR_MEAN, CIFAR_STD, Split(x, y), None, Split(tx, ty), source, True, pad=4)
    if name == "image-folder":
        root = folder_root(name, data_dir)
        data = folder.load_folder(root, size, val_fraction, seed)
        mean, std = folder_stats(data.train.images)
        source = f"{root} ({data.layout}" + (f"; {data.skipped} non-image files skipped)" if data.skipped else ")")
        return Loaded(name, data.classes, mean, std, data.train, data.val, data.test, source, True, crop=size)
    raise UserError(_("unknown dataset {name}").format(name=repr(name)), _("choose one of: {names}").format(names=", ".join(NAMES)))


def folder_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel of uint8 [N, C, H, W], for normalising a folder by its own statistics."""
    from torchlab.data.stats import channel_stats

    stats = channel_stats(images.split(256))
    # A channel that never changes (std 0) would divide by zero: it carries nothing, so it is only centred.
    std = tuple(round(s, 4) if s > 1e-4 else 1.0 for s in stats["std"])
    return tuple(round(m, 4) for m in stats["mean"]), std


def load_train_images(name: str, data_dir: str | None = None) -> tuple[torch.Tensor, str]:
    """The training images of a built-in dataset as uint8 [N, C, H, W], and where they came from."""
    loaded = load(name, data_dir)
    return loaded.train.images, loaded.source


def iter_train_images(name: str, data_dir: str | None = None) -> tuple[Iterator[torch.Tensor], str]:
    """Training images for statistics, one batch or image at a time, at their native size.

    Built-in datasets yield uint8 batches [B, C, H, W]; an image folder yields
    each decodable image [3, H, W] in turn (sizes differ), from train/ if present.
    """
    if name != "image-folder":
        loaded = load(name, data_dir)
        return iter(loaded.train.images.split(1000)), loaded.source
    root = folder_root(name, data_dir)
    root = root / "train" if (root / "train").is_dir() else root
    paths = [p for f in folder.class_folders(root) for p in folder.image_files(f)]
    return (x for x in map(folder.decode_native, paths) if x is not None), str(root)
