"""CIFAR-10 in its "python version" format: pickled batches of 10,000 images each.

Each of `data_batch_1` .. `data_batch_5` and `test_batch` is a pickled dict
with `data`, a uint8 array [10000, 3072] (per row: 1024 red, then 1024 green,
then 1024 blue values of a 32x32 image, row by row), and `labels`, a list of
ints. `batches.meta` holds `label_names`.

Pickle can run code while loading, so the files are read with an unpickler
that only admits the few NumPy and codec functions these dicts need.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from torchlab.data.locate import DatasetFiles
from torchlab.errors import UserError
from torchlab.i18n import _

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
FILES = DatasetFiles("cifar10", "cifar-10-batches-py", (*TRAIN_BATCHES, "test_batch", "batches.meta"),
                     subdir="cifar-10-batches-py", downloader="CIFAR10")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# (module, name) pairs that appear in CIFAR-10's pickles, written by Python 2 or by NumPy 1 or 2.
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """Load one batch file as a dict with str keys, or raise a UserError naming the file."""
    try:
        obj = SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except OSError as e:
        raise UserError(_("{path}: cannot read ({error})").format(path=path, error=e.strerror), _("check the file's permissions")) from None
    except Exception as e:  # truncated, not a pickle, or a pickle of something else
        raise UserError(_("{path}: not a CIFAR-10 batch file ({type}: {error})").format(path=path, type=type(e).__name__, error=e),
                        _("re-download it, or delete it so torchvision fetches a fresh copy")) from None
    if not isinstance(obj, dict):
        raise UserError(_("{path}: not a CIFAR-10 batch file (holds a {type})").format(path=path, type=type(obj).__name__),
                        _("re-download it"))
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file -> uint8 images [N, 3, 32, 32] and int64 labels [N]."""
    batch = read_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(_("{path}: 'data' must be a uint8 array of shape [N, 3072]").format(path=path),
                        _("re-download the dataset"))
    if labels is None:
        raise UserError(_("{path}: no labels for {images} images").format(path=path, images=len(data)),
                        _("re-download the dataset"))
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise UserError(_("{path}: 'labels' must be a list of integers").format(path=path), _("re-download the dataset"))
    if len(labels) != len(data):
        raise UserError(_("{path}: {labels} labels for {images} images").format(path=path, labels=len(labels), images=len(data)),
                        _("re-download the dataset"))
    if any(not 0 <= v < len(CLASSES) for v in labels):
        raise UserError(_("{path}: labels outside 0..9").format(path=path), _("re-download the dataset"))
    labels = torch.tensor(labels, dtype=torch.int64)
    # Each row is channel-major (RRR..GGG..BBB), so a reshape gives CHW without copying pixels around.
    return torch.from_numpy(data.copy()).view(-1, 3, 32, 32), labels


def read_classes(path: Path) -> tuple[str, ...]:
    names = read_pickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != len(CLASSES):
        raise UserError(_("{path}: 'label_names' must list 10 class names").format(path=path), _("re-download the dataset"))
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_cifar10(paths: dict[str, Path]):
    """(train images, train labels, test images, test labels, class names) from located files."""
    parts = [read_batch(paths[name]) for name in TRAIN_BATCHES]
    test_images, test_labels = read_batch(paths["test_batch"])
    classes = read_classes(paths["batches.meta"])
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), test_images, test_labels, classes)
