"""Per-channel mean and standard deviation of a stream of images, in one pass.

These are the numbers `transforms.Normalize(mean, std)` wants. A dataset may not
fit in memory, so images arrive in pieces and each piece is summarised by
(count, mean, M2), where M2 is the sum of squared deviations from its own mean.
Two summaries combine exactly with Chan et al.'s parallel formula:

    delta = mean_b - mean_a
    n     = n_a + n_b
    mean  = mean_a + delta * n_b / n
    M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

Unlike sum(x**2)/n - mean**2, nothing here subtracts two large, nearly equal
numbers, so the variance stays accurate when the mean is large and the spread tiny.
"""

from __future__ import annotations

from typing import Iterable

import torch

from torchlab.errors import UserError
from torchlab.i18n import _


def as_batch(item) -> torch.Tensor:
    """One item -> float64 [N, C, H, W]: uint8 is divided by 255, floating is taken as is."""
    x = torch.as_tensor(item)
    if x.dim() == 3:  # one image [C, H, W] -> a batch of one
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise UserError(_("image batch of shape {shape}: expected [C, H, W] or [N, C, H, W]").format(shape=tuple(x.shape)),
                        _("put channels first, e.g. with transforms.ToTensor()"))
    if x.dtype == torch.uint8:
        return x.double() / 255
    if x.is_floating_point():
        return x.double()
    raise UserError(_("images of dtype {dtype}: expected uint8 or floating point").format(dtype=x.dtype),
                    _("convert with .float()"))


def channel_stats(batches: Iterable) -> dict:
    """Mean and population std per channel over every pixel of every image in `batches`.

    Items are tensors [C, H, W] or [N, C, H, W]; H and W may change between items, C may not.
    Returns {"mean": [C floats], "std": [C floats], "pixels": pixels per channel, "images": count}.
    """
    count, mean, m2, images = 0, None, None, 0
    for item in batches:
        x = as_batch(item)  # [N, C, H, W] float64
        channels = x.shape[1]
        if mean is not None and channels != mean.numel():
            raise UserError(_("an image has {channels} channels but earlier ones had {earlier}")
                            .format(channels=channels, earlier=mean.numel()),
                            _("convert all images to one mode first, e.g. img.convert('RGB')"))
        flat = x.transpose(0, 1).reshape(channels, -1)  # [C, N*H*W]: one row of pixels per channel
        n_b = flat.shape[1]
        images += x.shape[0]
        if n_b == 0:
            continue
        mean_b = flat.mean(1)  # [C]
        m2_b = ((flat - mean_b[:, None]) ** 2).sum(1)  # [C], deviations from this item's own mean
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        delta = mean_b - mean  # Chan et al.: merge (count, mean, m2) with (n_b, mean_b, m2_b)
        total = count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    if count == 0:
        raise UserError(_("no image pixels to measure"), _("check that the dataset or folder holds images"))
    return {"mean": mean.tolist(), "std": (m2 / count).sqrt().tolist(), "pixels": count, "images": images}
