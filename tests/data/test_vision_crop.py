"""Random resized crops (image folders) and the crop-aware TensorLoader."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchlab.data.vision import TensorLoader, centre_crop, random_resized_crop


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=4, c=3, s=18, seed=0):
    return torch.rand(n, c, s, s, generator=gen(seed))


@pytest.mark.parametrize("n, c, s, size", [(4, 3, 18, 16), (1, 1, 9, 8), (3, 3, 16, 32), (2, 3, 73, 64)])
def test_output_shape(n, c, s, size):
    out = random_resized_crop(images(n, c, s), size, gen())
    assert out.shape == (n, c, size, size) and out.dtype == torch.float32


@pytest.mark.parametrize("s, size", [(6, 12), (8, 24), (7, 16), (10, 10)])
def test_whole_image_box_is_a_plain_resize_when_upscaling(s, size):
    x = images(3, 3, s)
    out = random_resized_crop(x, size, gen(), scale=(1, 1), ratio=(1, 1))
    want = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [2, 3])
def test_whole_image_box_averages_when_shrinking(factor):
    # Shrinking by an integer factor samples each output cell `factor` x `factor` times at the input pixel
    # centres: exactly an average pool (no aliasing).
    x = images(2, 3, 8 * factor)
    out = random_resized_crop(x, 8, gen(), scale=(1, 1), ratio=(1, 1))
    torch.testing.assert_close(out, F.avg_pool2d(x, factor), atol=1e-5, rtol=0)


def test_same_seed_same_crops_different_seed_different():
    x = images(8)
    a = random_resized_crop(x, 16, gen(5))
    assert torch.equal(a, random_resized_crop(x, 16, gen(5)))
    assert not torch.allclose(a, random_resized_crop(x, 16, gen(6)))


def test_boxes_differ_per_image():
    x = images(1).expand(6, -1, -1, -1).contiguous()  # one image six times
    out = random_resized_crop(x, 16, gen(0))
    assert not all(torch.allclose(out[0], out[i]) for i in range(1, 6))


def test_constant_image_stays_constant():
    colour = torch.tensor([0.2, -1.5, 3.0]).view(1, 3, 1, 1)
    x = colour.expand(5, 3, 18, 18).contiguous()
    for seed in range(3):
        out = random_resized_crop(x, 16, gen(seed))
        torch.testing.assert_close(out, colour.expand(5, 3, 16, 16), atol=1e-5, rtol=0)


def test_crop_stays_inside_the_image():
    # A bright frame outside the image would show up as zeros (roi_align's fill): every output must be 1.
    x = torch.ones(16, 1, 18, 18)
    out = random_resized_crop(x, 16, gen(1), scale=(0.9, 1.0), ratio=(0.5, 2.0))
    torch.testing.assert_close(out, torch.ones_like(out), atol=1e-5, rtol=0)


def test_small_scale_zooms_in():
    # A horizontal ramp: a crop of a quarter of the area spans about half the ramp's range, a full one all of it.
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(64, 1, 32, 32).contiguous()
    full = random_resized_crop(ramp, 16, gen(0), scale=(1, 1), ratio=(1, 1))
    small = random_resized_crop(ramp, 16, gen(0), scale=(0.25, 0.25), ratio=(1, 1))
    span = lambda y: (y[..., -1] - y[..., 0]).mean()  # noqa: E731
    assert span(full) > 0.9 and 0.4 < span(small) < 0.55


@pytest.mark.parametrize("h, w, size, top, left", [(18, 18, 16, 1, 1), (10, 10, 3, 3, 3), (9, 12, 4, 2, 4),
                                                     (16, 16, 16, 0, 0)])
def test_centre_crop_picks_the_centre(h, w, size, top, left):
    x = torch.arange(2 * h * w, dtype=torch.float32).view(1, 2, h, w)
    out = centre_crop(x, size)
    assert out.shape == (1, 2, size, size)
    assert torch.equal(out, x[:, :, top : top + size, left : left + size])


def loader(train=True, augment=True, crop=16, n=20, batch=6, seed=0, flip=True):
    x = images(n, 3, 18, seed=1)
    return TensorLoader(x, torch.arange(n), batch, train=train, seed=seed, augment=augment, flip=flip, crop=crop)


def test_training_batches_have_the_crop_size():
    batches = list(loader().epoch(0))
    assert len(batches) == 3  # 20 // 6, last partial batch dropped
    assert all(x.shape == (6, 3, 16, 16) for x, _ in batches)


def test_training_without_augment_takes_the_centre():
    lo = loader(augment=False)
    for x, y in lo.epoch(0):
        assert torch.equal(x, lo.images[y][:, :, 1:17, 1:17])


def test_augment_draws_differ_from_the_centre():
    lo = loader()
    x, y = next(iter(lo.epoch(0)))
    assert not torch.allclose(x, lo.images[y][:, :, 1:17, 1:17])


def test_eval_batches_are_untouched():
    lo = loader(train=False, n=14)
    batches = list(lo.epoch())
    assert [len(y) for _, y in batches] == [6, 6, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), lo.images)  # stored size, not cropped, in order


@pytest.mark.parametrize("start", [1, 2])
def test_same_seed_epoch_and_start_replay_the_same_batches(start):
    a, b = loader(seed=3), loader(seed=3)
    for epoch in (0, 1):
        full = list(a.epoch(epoch))
        resumed = list(b.epoch(epoch, start))
        assert len(resumed) == len(full) - start
        for (xa, ya), (xb, yb) in zip(full[start:], resumed):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert not torch.equal(list(a.epoch(0))[0][0], list(a.epoch(1))[0][0])
    assert not torch.equal(list(a.epoch(0))[0][0], list(loader(seed=4).epoch(0))[0][0])
