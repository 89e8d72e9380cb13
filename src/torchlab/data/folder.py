"""Folders of images, one sub-folder per class (ImageFolder layout), decoded into memory.

    DIR/train/ants/*.jpg  DIR/train/bees/*.jpg  DIR/val/ants/...   train/ and val/ used as given
    DIR/ants/*.jpg        DIR/bees/*.jpg                           a seeded split is made

Every image is decoded once, turned RGB, resized so its shorter side is
`stored_size(size)` and centre-cropped to a square, then kept as uint8
[N, 3, S, S]. Training crops `size` x `size` windows of random scale and
shape out of that square; evaluation takes the central `size` x `size`
(the usual resize-to-8/7-then-centre-crop of ImageNet evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from torchlab.data.vision import Split, centre_crop
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.logger import tracked


def stored_size(size: int) -> int:
    """Side of the square kept in memory: 8/7 of the crop, e.g. 64 -> 73 (224 -> 256 in ImageNet terms)."""
    return size * 8 // 7


@dataclass
class FolderData:
    classes: tuple[str, ...]
    train: Split  # uint8 [N, 3, S, S], S = stored_size(size)
    val: Split | None  # uint8 [M, 3, size, size], centre-cropped
    test: Split | None
    skipped: int  # files that are not images Pillow can decode
    layout: str  # "train/ and val/ as given" or "one folder, split here"


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UserError(_("--data-dir {root}: not a folder").format(root=root), _("point it at a folder of class sub-folders"))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(_("--data-dir {root}: no class sub-folders").format(root=root),
                        _("put the images of each class in their own sub-folder"))
    return folders


def open_rgb(path: Path) -> Image.Image | None:
    """A file as an RGB image, or None if it is hidden or not an image Pillow can decode."""
    if path.name.startswith("."):
        return None
    try:
        with Image.open(path) as img:
            # Camera rotation applied; palette and gray -> RGB; alpha dropped, as torchvision's ImageFolder does.
            return ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def decode_native(path: Path) -> torch.Tensor | None:
    """One file -> uint8 [3, H, W] at its own size; None if not a decodable image."""
    img = open_rgb(path)
    return None if img is None else TF.pil_to_tensor(img)


def square(img: Image.Image, side: int) -> Image.Image:
    """Resize so the shorter side is `side` (aspect ratio kept), then cut the central side x side square."""
    img = TF.resize(img, side, antialias=True)
    return img.crop(((img.width - side) // 2, (img.height - side) // 2,
                     (img.width - side) // 2 + side, (img.height - side) // 2 + side))


def decode(path: Path, side: int) -> torch.Tensor | None:
    """One file -> uint8 [3, side, side] (shorter side resized, centre-cropped); None if not a decodable image."""
    img = open_rgb(path)
    return None if img is None else TF.pil_to_tensor(square(img, side))


def image_files(folder: Path) -> list[Path]:
    """Files under a class folder, sorted, leaving out hidden files and folders (.DS_Store, .ipynb_checkpoints)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_split(root: Path, side: int, classes: tuple[str, ...] | None = None) -> tuple[Split, tuple[str, ...], int]:
    """Decode every class folder under `root`; returns (split, class names, skipped file count)."""
    folders = class_folders(root)
    names = tuple(f.name for f in folders)
    if classes is not None and names != classes:
        raise UserError(_("{root}: classes {names} differ from the training classes {classes}")
                        .format(root=root, names=', '.join(names), classes=', '.join(classes)),
                        _("give every split the same class sub-folders"))
    files = [(label, path) for label, folder in enumerate(folders) for path in image_files(folder)]
    images, labels, skipped = [], [], 0
    for label, path in tracked(files, f"decoding {root.name}", "img"):
        x = decode(path, side)
        if x is None:
            skipped += 1
            continue
        images.append(x)
        labels.append(label)
    found = set(labels)
    for label, folder in enumerate(folders):
        if label not in found:
            raise UserError(_("{folder}: class {name} holds no images").format(folder=folder, name=repr(folder.name)),
                            _("add images or remove the folder"))
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64)), names, skipped


def centre(split: Split, size: int) -> Split:
    """Cut the central size x size window out of stored squares: [N, 3, S, S] -> [N, 3, size, size]."""
    return Split(centre_crop(split.images, size).contiguous(), split.labels)


def stratified_split(split: Split, fraction: float, seed: int, classes: tuple[str, ...]) -> tuple[Split, Split]:
    """Hold out `fraction` of every class (at least one image each), chosen by a seeded permutation."""
    gen = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for label in split.labels.unique():
        idx = (split.labels == label).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n = max(1, round(fraction * len(idx)))
        if n >= len(idx):
            raise UserError(_("class {name} has only {count} images: too few to split off validation")
                            .format(name=repr(classes[int(label)]), count=len(idx)),
                            _("add images, or give train/ and val/ sub-folders"))
        held.append(idx[:n])
        keep.append(idx[n:])
    keep_idx, held_idx = torch.cat(keep).sort().values, torch.cat(held).sort().values
    return Split(split.images[keep_idx], split.labels[keep_idx]), Split(split.images[held_idx], split.labels[held_idx])


def load_folder(root: str | Path, size: int, val_fraction: float, seed: int) -> FolderData:
    """Read an image folder for training at `size` x `size` pixels.

    With a train/ sub-folder, val/ and test/ are used when present; without
    val/, a seeded share of each training class is held out instead.
    """
    root, side = Path(root).expanduser(), stored_size(size)
    given = (root / "train").is_dir()
    train, classes, skipped = read_split(root / "train" if given else root, side)
    val = test = None
    for name in ("val", "test") if given else ():
        if (root / name).is_dir():
            split, _names, more = read_split(root / name, side, classes)
            skipped += more
            val, test = (split, test) if name == "val" else (val, split)
    layout = "train/ " + ("and val/ as given" if val is not None else "as given") if given else "one folder"
    if val is None and val_fraction > 0:
        train, val = stratified_split(train, val_fraction, seed, classes)
        layout += f", {val_fraction:.0%} of each class held out (seed {seed})"
    centred = [centre(s, size) if s is not None else None for s in (val, test)]
    return FolderData(classes, train, centred[0], centred[1], skipped,
                      layout + (", test/ as given" if test is not None else ""))
