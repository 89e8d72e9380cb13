"""channel_stats against a direct float64 computation, its numerical stability, and its errors."""

from __future__ import annotations

import pytest
import torch

from torchlab.data.stats import channel_stats
from torchlab.errors import UserError


def direct(items) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Oracle: every pixel in memory at once, float64, two-pass mean then std."""
    rows = []
    for x in items:
        x = x.double() / 255 if x.dtype == torch.uint8 else x.double()
        x = x if x.dim() == 4 else x[None]
        rows.append(x.transpose(0, 1).reshape(x.shape[1], -1))  # [C, pixels]
    allpix = torch.cat(rows, 1)
    return allpix.mean(1), allpix.std(1, correction=0), allpix.shape[1]


def test_matches_direct_computation_on_mixed_items():
    g = torch.Generator().manual_seed(0)
    items = [
        torch.randint(0, 256, (3, 5, 7), generator=g, dtype=torch.uint8),  # one image
        torch.randint(0, 256, (4, 3, 2, 9), generator=g, dtype=torch.uint8),  # a batch, other size
        torch.rand(3, 11, 4, generator=g) * 0.5 + 0.2,  # float32, taken as is
        torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64),
        torch.rand(3, 1, 1, generator=g, dtype=torch.float16),
    ]
    stats = channel_stats(iter(items))  # a one-shot iterator: must be a single pass
    mean, std, pixels = direct(items)
    assert stats["images"] == 1 + 4 + 1 + 2 + 1 and stats["pixels"] == pixels
    assert torch.allclose(torch.tensor(stats["mean"], dtype=torch.float64), mean, rtol=1e-12, atol=0)
    assert torch.allclose(torch.tensor(stats["std"], dtype=torch.float64), std, rtol=1e-12, atol=0)


def test_single_channel_and_single_item():
    x = torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8)  # [1, 2, 2]
    assert channel_stats([x]) == {"mean": [0.5], "std": [0.5], "pixels": 4, "images": 1}


def test_stable_for_large_mean_and_tiny_spread():
    # float32 values near 1e4 whose spread (~0.01) is 1e6 times smaller than the mean.
    # A float64 sum of squares loses about 1e8 * 1e-16 / 1e-4 = 1e-4 of the variance here;
    # the (count, mean, M2) merge keeps it to rounding error.
    g = torch.Generator().manual_seed(1)
    items = [1e4 + 0.01 * torch.randn(50, 2, 16, 16, generator=g) for _ in range(40)]
    stats = channel_stats(items)
    mean, std, _ = direct(items)
    assert torch.allclose(torch.tensor(stats["mean"], dtype=torch.float64), mean, rtol=1e-14, atol=0)
    assert torch.allclose(torch.tensor(stats["std"], dtype=torch.float64), std, rtol=1e-9, atol=0)
    allpix = torch.cat([x.double().transpose(0, 1).reshape(2, -1) for x in items], 1)
    naive = ((allpix**2).mean(1) - allpix.mean(1) ** 2).clamp(min=0).sqrt()
    assert not torch.allclose(naive, std, rtol=1e-9, atol=0)  # the test would catch the naive formula


@pytest.mark.parametrize("items, fragment", [
    ([], "no image pixels"),
    ([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)], "1 channels but earlier ones had 3"),
    ([torch.zeros(2, 3, 2, 2), torch.zeros(2, 1, 2, 2)], "1 channels but earlier ones had 3"),
    ([torch.zeros(4, 4)], "expected [C, H, W] or [N, C, H, W]"),
    ([torch.zeros(1, 4, 4, dtype=torch.int64)], "dtype torch.int64"),
])
def test_errors(items, fragment):
    with pytest.raises(UserError) as e:
        channel_stats(items)
    assert fragment in str(e.value) and "\n" not in str(e.value)
