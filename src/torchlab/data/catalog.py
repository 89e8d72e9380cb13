"""Every built-in dataset by name: where its files are found and how its splits are decoded."""

from __future__ import annotations

import torch

from torchlab.data.vision import DATASETS, load_idx_dataset


def load_train_images(name: str, data_dir: str | None = None) -> tuple[torch.Tensor, str]:
    """The training images of a built-in dataset as uint8 [N, C, H, W], and where they came from."""
    train, _, source = load_idx_dataset(DATASETS[name], data_dir)
    return train.images, source
