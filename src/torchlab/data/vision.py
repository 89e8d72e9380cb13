"""Image-classification datasets held as tensors in memory.

The whole dataset is decoded once into a uint8 tensor, normalised once into
float32 on the training device, and served in batches by indexing: there is
no per-sample Python in the training loop. Only the training split shuffles
and drops its last partial batch; evaluation walks a split in order, whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from torchlab.data.idx import read_idx
from torchlab.data.locate import DatasetFiles, locate
from torchlab.errors import UserError
from torchlab.i18n import _

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class VisionSpec:
    files: DatasetFiles
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    originals: dict[str, tuple[str, int]]  # md5 and size of each decompressed original file
    flip: bool  # whether a horizontal flip keeps the label (true for clothes, not digits)

    @property
    def name(self) -> str:
        return self.files.name


DATASETS = {
    "fashion-mnist": VisionSpec(
        files=DatasetFiles("fashion-mnist", "FashionMNIST", IDX_FILES, "/usr/share/datasets/fashion-mnist"),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=(0.2860,), std=(0.3530,),
        originals={
            "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 47040016),
            "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60008),
            "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 7840016),
            "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10008),
        },
        flip=True,
    ),
    "mnist": VisionSpec(
        files=DatasetFiles("mnist", "MNIST", IDX_FILES),
        classes=tuple(str(d) for d in range(10)),
        mean=(0.1307,), std=(0.3081,),
        originals={
            "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47040016),
            "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60008),
            "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7840016),
            "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10008),
        },
        flip=False,
    ),
}


@dataclass
class Split:
    """A split held in memory: uint8 images [N, C, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, rows: slice) -> "Split":
        return Split(self.images[rows], self.labels[rows])


def load_idx_dataset(spec: VisionSpec, data_dir: str | None = None, offline: bool = False):
    """Find, validate and decode a dataset; returns (train Split, test Split, source)."""
    paths, source = locate(spec.files, data_dir, offline)
    tensors = {name: read_idx(path, 3 if "images" in name else 1, spec.originals.get(name))
               for name, path in paths.items()}
    splits = []
    for prefix in ("train", "t10k"):
        images, labels = tensors[f"{prefix}-images-idx3-ubyte"], tensors[f"{prefix}-labels-idx1-ubyte"]
        if len(images) != len(labels):
            raise UserError(
                _("{path}: {labels} labels for {images} images")
                .format(path=paths[f'{prefix}-labels-idx1-ubyte'], labels=len(labels), images=len(images)),
                _("the image and label files do not belong together"),
            )
        splits.append(Split(images.unsqueeze(1), labels.long()))  # [N, H, W] -> [N, 1, H, W]
    return splits[0], splits[1], source


def hold_out(train: Split, val_size: int, seed: int) -> tuple[Split, Split | None]:
    """Split `val_size` images off the training set with a seeded permutation."""
    if val_size <= 0:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    keep, held = order[:-val_size].sort().values, order[-val_size:].sort().values
    return Split(train.images[keep], train.labels[keep]), Split(train.images[held], train.labels[held])


def normalise(images: torch.Tensor, mean, std, device) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 on `device`, scaled to [0, 1] then standardised per channel."""
    x = images.to(device).float().div_(255)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


# Augmentations draw their random numbers for a whole batch. With several processes each holds only its
# rows of the global batch: `draw=(total, rows)` draws for all `total` images and keeps `rows`, so every
# image gets the same shift, flip or box as in a single-process run.
Draw = tuple[int, slice] | None


def drawn(x: torch.Tensor, draw: Draw) -> tuple[int, slice]:
    return draw if draw is not None else (len(x), slice(None))


def random_crop(x: torch.Tensor, pad: int, fill: torch.Tensor | None, gen: torch.Generator,
                draw: Draw = None) -> torch.Tensor:
    """Shift each image [N, C, H, W] by up to `pad` pixels, filling with `fill` per channel (None: zeros).

    The same as torchvision's RandomCrop(H, padding=pad) on each image: pad every side, then cut an
    H x W window at a random offset (dy, dx) in [0, 2 * pad]."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if fill is None else F.pad(x - fill, (pad, pad, pad, pad)) + fill
    total, rows = drawn(x, draw)
    dy, dx = (t[rows] for t in crop_offsets(total, pad, gen, x.device))
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # [N, H, 1]
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # [N, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # [N, C, H, W]


def crop_offsets(n: int, pad: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The window offsets random_crop draws: dy, dx [N, 1], each in [0, 2 * pad]."""
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen, device=gen.device).to(device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen, device=gen.device).to(device)
    return dy, dx


def erase_boxes(n: int, h: int, w: int, p: float, gen: torch.Generator, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
    """Boxes for random erasing, drawn as torchvision's RandomErasing does but clipped instead of retried.

    Returns top, left, height, width [N] (long); images that are not erased (probability 1 - p) get
    height and width 0."""
    u = torch.rand(n, 5, generator=gen, device=gen.device)  # [N, 5] uniforms
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_r = math.log(ratio[0]) + math.log(ratio[1] / ratio[0]) * u[:, 1]
    bh = (area * log_r.exp()).sqrt().round().clamp(1, h).long()
    bw = (area / log_r.exp()).sqrt().round().clamp(1, w).long()
    top = ((h - bh + 1) * u[:, 2]).long()  # uniform in [0, h - bh]
    left = ((w - bw + 1) * u[:, 3]).long()
    keep = u[:, 4] >= p
    return top, left, bh.masked_fill(keep, 0), bw.masked_fill(keep, 0)


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator, draw: Draw = None) -> torch.Tensor:
    """Set one random rectangle of each image [N, C, H, W] to 0 (the mean, after normalising), with
    probability p: the model must recognise clothes with a part hidden (Zhong et al., 2017)."""
    n, _, h, w = x.shape
    total, rows = drawn(x, draw)
    top, left, bh, bw = (t[rows].to(x.device) for t in erase_boxes(total, h, w, p, gen))
    rows = torch.arange(h, device=x.device)[None, :]  # [1, H]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])  # [N, H]
    in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])  # [N, W]
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)  # mask [N, 1, H, W]


def random_resized_crop(x: torch.Tensor, size: int, gen: torch.Generator, scale=(0.25, 1.0),
                        ratio=(3 / 4, 4 / 3), draw: Draw = None) -> torch.Tensor:
    """Crop a random box from each image [N, C, S, S] and resize it to [N, C, size, size].

    Each box covers a random share `scale` of the area with a random aspect
    ratio (log-uniform in `ratio`), as torchvision's RandomResizedCrop draws
    them, but sides are clipped to the image instead of retried. All boxes are
    resampled in one batched `roi_align` call (bilinear; several samples per
    output pixel when shrinking, so downscaling averages instead of aliasing).
    """
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    total, rows = drawn(x, draw)
    u = torch.rand(total, 4, generator=gen, device=gen.device)[rows].to(x.device, torch.float32)  # [N, 4]
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_r = torch.log(torch.tensor(ratio[0])) + (torch.log(torch.tensor(ratio[1] / ratio[0]))) * u[:, 1]
    bw = (area * log_r.exp()).sqrt().clamp(max=w)
    bh = (area / log_r.exp()).sqrt().clamp(max=h)
    left, top = (w - bw) * u[:, 2], (h - bh) * u[:, 3]
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=x.dtype), left, top, left + bw, top + bh], 1)
    return roi_align(x, boxes.to(x.dtype), (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of [N, C, H, W]."""
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    return x[:, :, top : top + size, left : left + size]


def random_flip(x: torch.Tensor, gen: torch.Generator, draw: Draw = None) -> torch.Tensor:
    """Mirror a random half of the batch left to right."""
    total, rows = drawn(x, draw)
    mask = torch.rand(total, generator=gen, device=gen.device)[rows].to(x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def photo_changes(x: torch.Tensor, strength: float, gen: torch.Generator, draw: Draw = None) -> torch.Tensor:
    """What a photo still carries after predict's preprocessing (data/photo.py), on a random half of
    x [N, C, H, W] in [0, 1] (items light on 0); the other half stays as it is, so the clean images keep
    their accuracy. Levels undo contrast, brightness and paper, and the framing undoes position and size, so
    at strength 1 a changed image gets: a turn of up to 15 degrees with the item shrunk to fit its frame
    again, as predict refits a turned item; a zoom-in of up to 25% that cuts the edges (an item larger than
    its frame); and, on a random half each, the softness of a small or blurred item (shrunk to as little as
    45% and enlarged back) and grain (Gaussian noise of sigma up to 0.08)."""
    total, rows = drawn(x, draw)
    u = torch.rand(total, 6, generator=gen, device=gen.device)[rows].to(x.device, x.dtype)  # [N, 6]
    changed = u[:, 0] < 0.5
    angle = (2 * u[:, 1] - 1) * math.radians(15 * strength) * changed
    # > 1 enlarges the item; a turned box is |cos| + |sin| times wider, and predict shrinks it back into frame
    zoom = (1 + 0.25 * strength * u[:, 2] * changed) / (angle.cos().abs() + angle.sin().abs())
    cos, sin, zero = angle.cos() / zoom, angle.sin() / zoom, torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    turned = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = torch.where(changed.view(-1, 1, 1, 1), turned, x)  # the unchanged half skips the resampling's blur
    # A small or blurred item is soft once predict enlarges it: shrunk to a share `side` of its size (one
    # share per batch, from 1 down to 0.45 at strength 1) and enlarged back.
    side = 1 - min(0.55 * strength, 0.7) * float(torch.rand(1, generator=gen, device=gen.device))
    small = F.interpolate(x, scale_factor=side, mode="bilinear", antialias=True, align_corners=False)
    soft = F.interpolate(small, size=x.shape[2:], mode="bilinear", align_corners=False)
    x = torch.where((changed & (u[:, 3] < 0.5)).view(-1, 1, 1, 1), soft, x)
    grain = (changed * (u[:, 4] < 0.5) * 0.08 * strength * u[:, 5]).view(-1, 1, 1, 1)
    noise = torch.randn((total, *x.shape[1:]), generator=gen, device=gen.device)[rows].to(x.device, x.dtype)
    return x.add_(noise.mul_(grain)).clamp_(0, 1)


class TensorLoader:
    """Batches from tensors already on the device.

    Training (`train=True`) draws a fresh permutation each epoch from a
    generator seeded by (seed, epoch), drops the last partial batch and
    applies augmentation; the same seed gives the same batches, so a run can
    resume in the middle of an epoch by skipping `start` batches.

    With `norm=(mean, std)` the images are uint8 (a quarter of the memory of
    float32) and each batch is shifted and flipped as uint8, then converted and
    standardised; without it they are float and used as they are.
    """

    def __init__(self, images, labels, batch_size, train, seed=0, augment=False, flip=False, pad=2, fill=None,
                 crop=0, norm=None, erase=0.0, photo=0.0, rows=slice(None)):
        self.images, self.labels = images, labels  # [N, C, H, W] uint8 (with norm) or float, [N] int64
        self.batch_size, self.train, self.seed = batch_size, train, seed
        # Training with several processes: `batch_size` is the global batch and this process takes `rows`
        # of each one (distributed.World.slice_of_batch); the order and the draws are the global ones.
        self.rows = rows
        self.augment, self.flip, self.pad, self.erase = augment and train, flip, pad, erase
        self.photo = photo if train else 0.0  # strength of photo_changes (uint8 images, norm given, no crop)
        self.fill = fill  # float images: the padding value per channel [1, C, 1, 1] (None: zeros)
        # crop > 0: images are stored larger than the model's input (image folders); training takes
        # random resized crops of `crop` pixels when augmenting, the central crop otherwise.
        self.crop = crop
        self.scale = self.shift = None
        if norm is not None:  # (x / 255 - mean) / std  ==  x * scale - shift, per channel [1, C, 1, 1]
            mean, std = (torch.tensor(v, device=images.device).view(1, -1, 1, 1) for v in norm)
            self.scale, self.shift = 1 / (255 * std), mean / std

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if not self.train:
            for i in range(start * self.batch_size, n, self.batch_size):
                # Evaluation splits are stored at the model's input size (image folders crop them when loading).
                yield self.standardise(self.images[i : i + self.batch_size]), self.labels[i : i + self.batch_size]
            return
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).to(self.images.device)
        for step in range(start, len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size][self.rows]
            yield self.transform(self.images[idx], epoch, step), self.labels[idx]

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scale is None else x.float().mul_(self.scale).sub_(self.shift)

    def transform(self, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        if not self.augment and not self.photo:
            return self.standardise(centre_crop(x, self.crop) if self.crop else x)
        # One generator per batch, so skipping batches on resume replays the same draws.
        batch_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + step)
        draw = (self.batch_size, self.rows)
        if self.crop:  # resampling needs floats
            x = random_resized_crop(self.standardise(x), self.crop, batch_gen, draw=draw)
        elif self.augment:
            x = random_crop(x, self.pad, self.fill, batch_gen, draw)
        x = random_flip(x, batch_gen, draw) if self.flip and self.augment else x
        if self.photo:  # on [0, 1] images, whose background is 0; then standardised as x * scale - shift
            x = photo_changes(x.float().div_(255), self.photo, batch_gen, draw).mul_(255 * self.scale).sub_(self.shift)
        x = self.standardise(x) if not self.crop and not self.photo else x
        return random_erase(x, self.erase, batch_gen, draw) if self.erase else x


def eval_loader(split: Split, mean, std, device, batch_size: int) -> TensorLoader:
    """A whole split, uint8 on `device`, served in order in fixed chunks (never shuffled or dropped) and
    standardised one chunk at a time."""
    return TensorLoader(split.images.to(device), split.labels.to(device), batch_size, train=False, norm=(mean, std))
