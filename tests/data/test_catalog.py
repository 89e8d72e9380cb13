"""catalog.load: every dataset in one common shape, with its normalisation and augmentation settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import cifar_split, synthetic_split, write_cifar, write_dataset
from torchlab.data import catalog
from torchlab.data.folder import stored_size
from torchlab.errors import UserError


def make_image_folder(root: Path, layout: str = "given", n: int = 6) -> Path:
    """Two classes of noisy images of several sizes; `given`: train/ + val/, `one`: class folders only."""
    g = torch.Generator().manual_seed(0)
    sizes = [(40, 30), (23, 31), (32, 32), (50, 17)]
    for c, name in enumerate(("blue", "red")):
        for i in range(n):
            split = ("train" if i < n - 2 else "val") if layout == "given" else ""
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            w, h = sizes[i % len(sizes)]
            pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
            pixels[..., 2 * c] //= 4  # blue/: little red; red/: little blue
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


def direct_stats(images: torch.Tensor):
    x = images.double().div(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1), x.std(1, correction=0)


def test_fashion_mnist(tmp_path):
    write_dataset(tmp_path / "f", n_train=30, n_test=12)
    d = catalog.load("fashion-mnist", str(tmp_path / "f"), offline=True)
    assert d.name == "fashion-mnist" and len(d.classes) == 10 and d.classes[0] == "T-shirt/top"
    assert d.train.images.shape == (30, 1, 28, 28) and d.test.images.shape == (12, 1, 28, 28) and d.val is None
    assert torch.equal(d.train.images[:, 0], synthetic_split(30, 1)[0])
    assert d.mean == (0.2860,) and d.std == (0.3530,)
    assert (d.flip, d.pad, d.crop) == (True, 2, 0)
    assert str(tmp_path / "f") in d.source


def test_mnist_does_not_flip(tmp_path):
    write_dataset(tmp_path / "m", n_train=10, n_test=10)
    d = catalog.load("mnist", str(tmp_path / "m"), offline=True)
    assert d.classes == tuple("0123456789") and not d.flip and d.crop == 0
    assert d.mean == (0.1307,)


def test_cifar10(tmp_path):
    write_cifar(tmp_path / "c", n_train_per_batch=6, n_test=8)
    d = catalog.load("cifar10", str(tmp_path / "c"), offline=True)
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck" and len(d.classes) == 10
    assert d.train.images.shape == (30, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (8, 3, 32, 32) and d.val is None
    assert torch.equal(d.test.images, cifar_split(8, 6)[0])
    assert d.mean == catalog.CIFAR_MEAN and d.std == catalog.CIFAR_STD and len(d.mean) == 3
    assert (d.flip, d.pad, d.crop) == (True, 4, 0)
    assert catalog.KNOWN_STATS["cifar10"] == (catalog.CIFAR_MEAN, catalog.CIFAR_STD)
    assert catalog.KNOWN_STATS["fashion-mnist"] == ((0.2860,), (0.3530,))


@pytest.mark.parametrize("size", [16, 24])
def test_image_folder_given_layout(tmp_path, size):
    root = make_image_folder(tmp_path / "imgs")
    d = catalog.load("image-folder", str(root), size=size, offline=True)
    side = stored_size(size)
    assert d.classes == ("blue", "red")
    assert d.train.images.shape == (8, 3, side, side) and d.val.images.shape == (4, 3, size, size)
    assert d.test is None
    assert (d.flip, d.crop) == (True, size)
    assert "train/ and val/ as given" in d.source and str(root) in d.source
    mean, std = direct_stats(d.train.images)  # the stored training squares, not val
    assert len(d.mean) == len(d.std) == 3
    assert torch.tensor(d.mean, dtype=torch.float64) == pytest.approx(mean, abs=1e-4)
    assert torch.tensor(d.std, dtype=torch.float64) == pytest.approx(std, abs=1e-4)
    assert d.mean[1] > d.mean[0] and d.mean[1] > d.mean[2]  # red and blue are each quartered in one class


def test_image_folder_one_folder_layout(tmp_path):
    root = make_image_folder(tmp_path / "imgs", layout="one", n=10)
    (root / "red" / "notes.txt").write_text("x")
    d = catalog.load("image-folder", str(root), size=16, val_fraction=0.2, seed=3, offline=True)
    assert len(d.train) == 16 and len(d.val) == 4
    assert sorted(d.val.labels.tolist()) == [0, 0, 1, 1]
    assert "20% of each class held out (seed 3)" in d.source and "1 non-image files skipped" in d.source
    again = catalog.load("image-folder", str(root), size=16, val_fraction=0.2, seed=3)
    assert torch.equal(d.val.images, again.val.images)


def test_image_folder_needs_data_dir():
    for data_dir in (None, ""):
        with pytest.raises(UserError) as info:
            catalog.load("image-folder", data_dir)
        assert "image-folder needs --data-dir DIR" in info.value.message


def test_unknown_name():
    with pytest.raises(UserError, match="unknown dataset 'svhn'"):
        catalog.load("svhn")


def test_load_train_images(tmp_path):
    write_dataset(tmp_path / "f", n_train=20, n_test=5)
    images, source = catalog.load_train_images("fashion-mnist", str(tmp_path / "f"))
    assert images.shape == (20, 1, 28, 28) and str(tmp_path / "f") in source


@pytest.mark.parametrize("layout", ["given", "one"])
def test_iter_train_images_streams_native_sizes(tmp_path, layout):
    root = make_image_folder(tmp_path / "imgs", layout=layout)
    (root / ("train" if layout == "given" else "") / "red" / "notes.txt").write_text("skip me")
    images, source = catalog.iter_train_images("image-folder", str(root))
    images = list(images)
    n = 4 if layout == "given" else 6  # only train/ when it exists
    assert len(images) == 2 * n
    assert source == (str(root / "train") if layout == "given" else str(root))
    sizes = [(40, 30), (23, 31), (32, 32), (50, 17)]
    assert [tuple(x.shape) for x in images] == [(3, h, w) for _ in range(2) for w, h in (sizes * 2)[:n]]
    first = Image.open(root / ("train" if layout == "given" else "") / "blue" / "0.png")
    assert torch.equal(images[0], torch.from_numpy(np.array(first)).permute(2, 0, 1))


def test_iter_train_images_batches_builtin_datasets(tmp_path):
    write_dataset(tmp_path / "f", n_train=30, n_test=5)
    images, _ = catalog.iter_train_images("fashion-mnist", str(tmp_path / "f"))
    batches = list(images)
    assert torch.equal(torch.cat(batches)[:, 0], synthetic_split(30, 1)[0])


def test_iter_train_images_errors(tmp_path):
    with pytest.raises(UserError, match="needs --data-dir"):
        catalog.iter_train_images("image-folder", None)
    with pytest.raises(UserError, match="not a folder"):
        catalog.iter_train_images("image-folder", str(tmp_path / "missing"))


def test_a_constant_channel_is_centred_not_divided_by_zero(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):  # green is 30 everywhere
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (12, 12), colour).save(tmp_path / split / name / "a.png")
    d = catalog.load("image-folder", str(tmp_path), size=8)
    assert d.std[1] == 1.0 and d.std[0] > 0.3 and d.mean[1] == pytest.approx(30 / 255, abs=1e-4)
