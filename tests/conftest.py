"""Shared fixtures: tiny synthetic IDX datasets and an isolated environment for every test."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import pytest
import torch

from torchlab.data.idx import write_idx

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test downloads, reads the user's cache or $TORCHLAB_DATA, or writes outside tmp_path."""
    monkeypatch.setenv("TORCHLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHLAB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    from torchlab.data import vision

    spec = vision.DATASETS["fashion-mnist"]  # never pick up a Debian copy installed on this machine
    files = dataclasses.replace(spec.files, debian_dir=str(tmp_path / "no-debian"))
    monkeypatch.setitem(vision.DATASETS, "fashion-mnist", dataclasses.replace(spec, files=files))


@pytest.fixture
def one_thread():
    """Tiny forward passes run much faster on one thread when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_split(n: int, seed: int, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable 28x28 images: class k is a bright 6x6 block at a position set by k, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for k in range(classes):
        r, c = 2 + (k // 5) * 12, 2 + (k % 5) * 5
        images[labels == k, r : r + 6, c : c + 6] = 230
    return images, labels.to(torch.uint8)


def write_dataset(folder: Path, n_train: int = 600, n_test: int = 250, gz: bool = True) -> Path:
    """Write the four IDX files (Fashion-MNIST names) of a synthetic dataset into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_split(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return folder


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


# Flags for fast CLI training runs on the tiny dataset.
TINY = ["--device", "cpu", "--val-size", "100", "--batch-size", "50", "--eval-batch-size", "64", "--log-every", "2"]
