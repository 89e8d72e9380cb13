from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from conftest import synthetic_split, write_dataset
from torchlab.data import vision
from torchlab.data.idx import write_idx
from torchlab.data.vision import Split, TensorLoader, hold_out, load_idx_dataset, normalise, random_crop, random_flip
from torchlab.errors import UserError


def fashion():
    return vision.DATASETS["fashion-mnist"]


def test_load_tiny_dataset_shapes_and_types(tiny_data):
    train, test, source = load_idx_dataset(fashion(), str(tiny_data), offline=True)
    assert train.images.dtype == torch.uint8 and test.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test.labels.dtype == torch.int64
    assert train.images.shape == (600, 1, 28, 28)
    assert test.images.shape == (250, 1, 28, 28)
    assert len(train) == 600 and len(test) == 250
    images, labels = synthetic_split(600, seed=1)
    assert torch.equal(train.images[:, 0], images)
    assert torch.equal(train.labels, labels.long())
    images, labels = synthetic_split(250, seed=2)
    assert torch.equal(test.images[:, 0], images)
    assert torch.equal(test.labels, labels.long())
    assert str(tiny_data) in source


@pytest.mark.parametrize("prefix", ["train", "t10k"])
@pytest.mark.parametrize("n_labels", [9, 11])
def test_label_image_count_mismatch_raises(tmp_path, prefix, n_labels):
    folder = write_dataset(tmp_path / "d", n_train=10, n_test=10)
    _, labels = synthetic_split(n_labels, seed=5)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    with pytest.raises(UserError) as info:
        load_idx_dataset(fashion(), str(folder), offline=True)
    assert str(folder / f"{prefix}-labels-idx1-ubyte.gz") in info.value.message
    assert f"{n_labels} labels for 10 images" in info.value.message


def test_corrupt_file_in_dataset_raises_user_error(tmp_path):
    folder = write_dataset(tmp_path / "d", n_train=10, n_test=10)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError) as info:
        load_idx_dataset(fashion(), str(folder), offline=True)
    assert str(path) in info.value.message


def make_split(n: int) -> Split:
    images = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).expand(n, 1, 2, 2).to(torch.uint8).clone()
    return Split(images, torch.arange(n))


def test_hold_out_same_seed_same_split():
    train = make_split(100)
    a_train, a_val = hold_out(train, 20, seed=7)
    b_train, b_val = hold_out(train, 20, seed=7)
    assert torch.equal(a_train.labels, b_train.labels) and torch.equal(a_val.labels, b_val.labels)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_val.images, b_val.images)


def test_hold_out_different_seed_different_split():
    train = make_split(100)
    _, a_val = hold_out(train, 20, seed=7)
    _, b_val = hold_out(train, 20, seed=8)
    assert not torch.equal(a_val.labels, b_val.labels)


@pytest.mark.parametrize("n,val_size", [(100, 20), (100, 1), (100, 99), (37, 10)])
def test_hold_out_partitions_the_set(n, val_size):
    train = make_split(n)
    kept, val = hold_out(train, val_size, seed=3)
    assert len(val) == val_size and len(kept) == n - val_size
    kept_ids, val_ids = set(kept.labels.tolist()), set(val.labels.tolist())
    assert not kept_ids & val_ids
    assert kept_ids | val_ids == set(range(n))
    for part in (kept, val):  # images still go with their labels
        assert torch.equal(part.images[:, 0, 0, 0].long(), part.labels % 256)


def test_hold_out_does_not_take_the_first_or_last_block():
    kept, val = hold_out(make_split(1000), 100, seed=0)
    ids = val.labels
    assert not torch.equal(ids, torch.arange(900, 1000)) and not torch.equal(ids, torch.arange(100))


@pytest.mark.parametrize("val_size", [0, -1])
def test_hold_out_zero_returns_none(val_size):
    train = make_split(10)
    kept, val = hold_out(train, val_size, seed=0)
    assert val is None
    assert kept is train


@pytest.mark.parametrize("mean,std", [((0.2860,), (0.3530,)), ((0.5,), (0.1,))])
def test_normalise_standardises(mean, std):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4000, 1, 8, 8, generator=g) * std[0] + mean[0]).clamp(0, 1)
    images = (x * 255).round().to(torch.uint8)
    scaled = images.float() / 255
    m, s = scaled.mean().item(), scaled.std().item()
    out = normalise(images, (m,), (s,), torch.device("cpu"))
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert abs(out.mean().item()) < 1e-4
    assert abs(out.std().item() - 1) < 1e-4
    assert images.dtype == torch.uint8  # input untouched
    assert torch.equal(images, (x * 255).round().to(torch.uint8))


def test_normalise_per_channel():
    images = torch.tensor([[0, 255], [51, 102]], dtype=torch.uint8).view(1, 2, 1, 2)
    out = normalise(images, (0.5, 0.2), (0.5, 0.2), torch.device("cpu"))
    expected = torch.tensor([[-1.0, 1.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    assert torch.allclose(out, expected, atol=1e-6)


def loader_data(n: int):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 6, 6).clone()
    return images, torch.arange(n)


@pytest.mark.parametrize("n,batch", [(10, 3), (10, 5), (10, 10), (10, 16), (1, 4), (101, 7)])
def test_eval_loader_yields_everything_in_order(n, batch):
    images, labels = loader_data(n)
    loader = TensorLoader(images, labels, batch, train=False)
    batches = list(loader.epoch())
    assert len(loader) == math.ceil(n / batch) == len(batches)
    assert [len(y) for _, y in batches[:-1]] == [batch] * (len(batches) - 1)
    assert len(batches[-1][1]) == n - batch * (len(batches) - 1)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert torch.equal(torch.cat([x for x, _ in batches]), images)


def test_eval_loader_is_the_same_every_epoch_and_start_skips():
    images, labels = loader_data(23)
    loader = TensorLoader(images, labels, 5, train=False, seed=3)
    first = [y for _, y in loader.epoch(0)]
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loader.epoch(4)]))
    assert [y.tolist() for _, y in loader.epoch(0, start=2)] == [y.tolist() for y in first[2:]]


@pytest.mark.parametrize("n,batch", [(10, 3), (10, 5), (100, 7), (5, 8)])
def test_train_loader_drops_last_partial_batch(n, batch):
    images, labels = loader_data(n)
    loader = TensorLoader(images, labels, batch, train=True, seed=1)
    batches = list(loader.epoch(0))
    assert len(loader) == n // batch == len(batches)
    assert all(len(y) == batch for _, y in batches)
    seen = torch.cat([y for _, y in batches]) if batches else torch.empty(0, dtype=torch.long)
    assert len(seen) == (n // batch) * batch
    assert len(set(seen.tolist())) == len(seen)  # no repeats
    assert set(seen.tolist()) <= set(range(n))
    for x, y in batches:  # images still go with their labels
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_train_loader_shuffles():
    images, labels = loader_data(100)
    loader = TensorLoader(images, labels, 10, train=True, seed=1)
    seen = torch.cat([y for _, y in loader.epoch(0)])
    assert not torch.equal(seen, labels)
    assert sorted(seen.tolist()) == list(range(100))


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augment"])
def test_train_loader_same_seed_and_epoch_same_batches(augment):
    images, labels = loader_data(50)
    a = TensorLoader(images, labels, 8, train=True, seed=4, augment=augment, flip=True)
    b = TensorLoader(images, labels, 8, train=True, seed=4, augment=augment, flip=True)
    for (xa, ya), (xb, yb) in zip(a.epoch(2), b.epoch(2), strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augment"])
def test_train_loader_epochs_and_seeds_differ(augment):
    images, labels = loader_data(50)
    loader = TensorLoader(images, labels, 8, train=True, seed=4, augment=augment)
    other_seed = TensorLoader(images, labels, 8, train=True, seed=5, augment=augment)
    e0 = torch.cat([y for _, y in loader.epoch(0)])
    e1 = torch.cat([y for _, y in loader.epoch(1)])
    s5 = torch.cat([y for _, y in other_seed.epoch(0)])
    assert not torch.equal(e0, e1)
    assert not torch.equal(e0, s5)


@pytest.mark.parametrize("augment,flip", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("start", [0, 1, 3, 5, 6])
def test_train_loader_start_resumes_mid_epoch(augment, flip, start):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(50, 2, 6, 6, generator=g)
    labels = torch.arange(50)
    loader = TensorLoader(images, labels, 8, train=True, seed=9, augment=augment, flip=flip, pad=2)
    full = list(loader.epoch(3))
    resumed = list(TensorLoader(images, labels, 8, train=True, seed=9, augment=augment, flip=flip, pad=2).epoch(3, start=start))
    assert len(full) == 6
    assert len(resumed) == len(full) - start
    for (xf, yf), (xr, yr) in zip(full[start:], resumed, strict=True):
        assert torch.equal(yf, yr) and torch.equal(xf, xr)


def test_train_loader_augments_only_in_training():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=g) + 0.5
    labels = torch.arange(40)
    plain = TensorLoader(images, labels, 8, train=True, seed=2, augment=False)
    augmented = TensorLoader(images, labels, 8, train=True, seed=2, augment=True, flip=True, pad=2)
    changed = 0
    for (xp, yp), (xa, ya) in zip(plain.epoch(0), augmented.epoch(0), strict=True):
        assert torch.equal(yp, ya)
        assert torch.equal(xp, images[yp])
        changed += int(not torch.equal(xa, xp))
    assert changed > 0
    evaluation = TensorLoader(images, labels, 8, train=False, seed=2, augment=True, flip=True, pad=2)
    assert evaluation.augment is False
    assert torch.equal(torch.cat([x for x, _ in evaluation.epoch(0)]), images)


def test_train_loader_augment_uses_fill_value():
    images = torch.full((16, 1, 5, 5), 3.0)
    fill = torch.full((1, 1, 1, 1), -7.0)
    loader = TensorLoader(images, torch.arange(16), 16, train=True, seed=0, augment=True, pad=2, fill=fill)
    (x, _), = list(loader.epoch(0))
    assert set(x.unique().tolist()) <= {3.0, -7.0}
    assert (x == -7.0).any()


def crop_reference(x: torch.Tensor, pad: int, fill: torch.Tensor, seed: int) -> torch.Tensor:
    n, c, h, w = x.shape
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    padded = fill.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    out = torch.empty_like(x)
    for i in range(n):
        y0, x0 = int(dy[i]), int(dx[i])
        out[i] = padded[i, :, y0 : y0 + h, x0 : x0 + w]
    return out


@pytest.mark.parametrize("pad", [1, 2, 4])
@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (9, 3, 5, 7)])
def test_random_crop_matches_reference(pad, shape):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(*shape, generator=g)
    c = shape[1]
    fill = torch.linspace(-1, -2, c).view(1, c, 1, 1)
    out = random_crop(x, pad, fill, torch.Generator().manual_seed(42))
    expected = crop_reference(x, pad, fill, 42)
    assert out.shape == x.shape
    assert torch.allclose(out, expected, atol=1e-6)


def test_random_crop_shifts_vary_per_image():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the middle; its new position shows the shift
    out = random_crop(x, 2, torch.zeros(1, 1, 1, 1), torch.Generator().manual_seed(0))
    positions = {tuple(torch.nonzero(img[0]).flatten().tolist()) for img in out}
    assert len(positions) > 5
    assert all(2 <= r <= 6 and 2 <= col <= 6 for r, col in positions)


def test_random_crop_pad_zero_is_identity_with_zero_fill():
    x = torch.rand(8, 2, 6, 5, generator=torch.Generator().manual_seed(3))
    out = random_crop(x, 0, torch.zeros(1, 2, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


@pytest.mark.parametrize("fill", [-0.81, 9.0])
def test_random_crop_pad_zero_is_identity_up_to_rounding(fill):
    # random_crop pads via (x - fill) + fill, so a nonzero fill costs up to an ulp of |fill| per pixel
    x = torch.rand(8, 2, 6, 5, generator=torch.Generator().manual_seed(3))
    out = random_crop(x, 0, torch.full((1, 2, 1, 1), fill), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.allclose(out, x, rtol=0, atol=1e-5)


def test_random_flip_flips_masked_images():
    x = torch.rand(200, 2, 4, 5, generator=torch.Generator().manual_seed(3))
    out = random_flip(x, torch.Generator().manual_seed(11))
    mask = torch.rand(200, generator=torch.Generator().manual_seed(11)) < 0.5
    assert 0 < mask.sum() < 200
    assert torch.equal(out[mask], x[mask].flip(3))
    assert torch.equal(out[~mask], x[~mask])
    assert not torch.equal(x[mask], x[mask].flip(3))


# --- uint8 batches, random erasing, and per-sample references from torchvision ---

def uint8_images(n: int, c: int = 1, h: int = 10, w: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_uint8_random_crop_matches_torchvision_pad_and_crop():
    x = uint8_images(20, c=3)
    out = random_crop(x, 3, None, torch.Generator().manual_seed(5))
    dy, dx = vision.crop_offsets(20, 3, torch.Generator().manual_seed(5), "cpu")
    assert out.dtype == torch.uint8
    for i in range(20):
        padded = TF.pad(x[i], [3])  # zeros on every side, as RandomCrop(padding=3)
        assert torch.equal(out[i], TF.crop(padded, int(dy[i]), int(dx[i]), 10, 9)), i


def test_random_erase_matches_torchvision_erase():
    x = torch.randn(300, 2, 12, 10, generator=torch.Generator().manual_seed(1))
    out = vision.random_erase(x, 0.5, torch.Generator().manual_seed(8))
    top, left, bh, bw = vision.erase_boxes(300, 12, 10, 0.5, torch.Generator().manual_seed(8))
    erased = bh > 0
    assert 100 < erased.sum() < 200  # about half
    area = (bh * bw)[erased].float() / 120
    assert area.min() >= 0.01 and area.max() <= 0.4  # the 2-33% of torchvision's default, after rounding
    for i in range(300):
        expected = TF.erase(x[i], int(top[i]), int(left[i]), int(bh[i]), int(bw[i]), torch.tensor(0.0)) \
            if erased[i] else x[i]
        assert torch.equal(out[i], expected), i


def test_random_erase_keeps_every_box_inside_the_image():
    top, left, bh, bw = vision.erase_boxes(2000, 7, 5, 1.0, torch.Generator().manual_seed(2))
    assert (bh >= 1).all() and (bw >= 1).all()
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= 7).all() and (left + bw <= 5).all()


def per_sample_reference(images, labels, mean, std, pad, erase, seed, epoch, batch):
    """What the training loader should yield, built one image at a time with torchvision's functions."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(labels), generator=gen)
    for step in range(len(labels) // batch):
        idx = order[step * batch : (step + 1) * batch]
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + step)  # the same draws, in order
        dy, dx = vision.crop_offsets(batch, pad, g, "cpu")
        flips = torch.rand(batch, generator=g) < 0.5
        boxes = vision.erase_boxes(batch, images.shape[2], images.shape[3], erase, g)
        out = []
        for k, i in enumerate(idx.tolist()):
            img = TF.crop(TF.pad(images[i], [pad]), int(dy[k]), int(dx[k]), images.shape[2], images.shape[3])
            img = TF.horizontal_flip(img) if flips[k] else img
            img = TF.normalize(img.float() / 255, mean, std)
            top, left, h, w = (int(t[k]) for t in boxes)
            out.append(TF.erase(img, top, left, h, w, torch.tensor(0.0)) if h else img)
        yield torch.stack(out), labels[idx]


def test_uint8_training_batches_match_the_per_sample_reference():
    images, labels = uint8_images(40, c=2), torch.arange(40)
    mean, std = (0.3, 0.6), (0.2, 0.25)
    loader = TensorLoader(images, labels, 8, train=True, seed=3, augment=True, flip=True, pad=2,
                          norm=(mean, std), erase=0.5)
    reference = per_sample_reference(images, labels, mean, std, 2, 0.5, seed=3, epoch=1, batch=8)
    for (x, y), (rx, ry) in zip(loader.epoch(1), reference, strict=True):
        assert torch.equal(y, ry)
        torch.testing.assert_close(x, rx, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n, batch", [(64, 8), (61, 8)])
def test_uint8_loader_serves_each_training_image_once_and_every_test_image_in_order(n, batch):
    images, labels = uint8_images(n), torch.arange(n)
    train = TensorLoader(images, labels, batch, train=True, seed=1, augment=True, norm=((0.5,), (0.5,)), erase=0.3)
    for epoch in range(3):
        seen = torch.cat([y for _, y in train.epoch(epoch)])
        assert len(seen) == n // batch * batch and len(set(seen.tolist())) == len(seen)
    test = TensorLoader(images, labels, batch, train=False, norm=((0.5,), (0.5,)))
    xs, ys = zip(*test.epoch())
    assert torch.equal(torch.cat(ys), labels)
    torch.testing.assert_close(torch.cat(xs), normalise(images, (0.5,), (0.5,), torch.device("cpu")))


def bars(n: int = 8) -> torch.Tensor:
    """uint8 [n, 1, 28, 28]: a light vertical bar on black."""
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 4:24, 11:17] = 200
    return x


def test_photo_changes_at_strength_zero_change_nothing():
    x = bars().float() / 255
    out = vision.photo_changes(x.clone(), 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_photo_changes_stay_in_range_and_repeat_with_the_seed():
    x = bars(64).float() / 255
    a = vision.photo_changes(x.clone(), 1.0, torch.Generator().manual_seed(3))
    b = vision.photo_changes(x.clone(), 1.0, torch.Generator().manual_seed(3))
    c = vision.photo_changes(x.clone(), 1.0, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    same = (a - x).abs().amax(dim=(1, 2, 3)) < 1e-6  # the half left as it is, exactly
    assert 16 < int(same.sum()) < 48


def test_photo_changes_turn_zoom_soften_and_add_grain():
    x = bars(256).float() / 255
    out = vision.photo_changes(x.clone(), 2.0, torch.Generator().manual_seed(0))
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-6
    # a turned bar spreads over more columns than the upright one (6), counted on a smoothed copy
    smooth = torch.nn.functional.avg_pool2d(out, 3, 1, 1)[:, 0]
    widths = (smooth > 0.4).any(1).sum(1)
    assert (widths[changed] > 7).sum() > 32 and (widths[~changed] == 6).all()
    grainy = out[:, 0, :3, :3].std(dim=(1, 2)) > 0.01  # the black corner picks up noise
    assert 16 < int(grainy.sum()) < int(changed.sum()) and not grainy[~changed].any()


def test_loader_photo_only_in_training_and_draws_match_across_processes():
    images, labels = bars(32), torch.arange(32)
    norm = ((0.3,), (0.3,))
    whole = TensorLoader(images, labels, 16, train=True, seed=1, photo=1.0, norm=norm)
    plain = TensorLoader(images, labels, 16, train=True, seed=1, norm=norm)
    for (xa, _), (xp, _) in zip(whole.epoch(0), plain.epoch(0), strict=True):
        assert not torch.equal(xa, xp)
    halves = [TensorLoader(images, labels, 16, train=True, seed=1, photo=1.0, norm=norm, rows=rows)
              for rows in (slice(0, 8), slice(8, 16))]
    for (x, y), (x0, y0), (x1, y1) in zip(whole.epoch(0), halves[0].epoch(0), halves[1].epoch(0), strict=True):
        assert torch.equal(torch.cat([y0, y1]), y)
        torch.testing.assert_close(torch.cat([x0, x1]), x)  # every image changed as in one process
    evaluation = TensorLoader(images, labels, 16, train=False, photo=1.0, norm=norm)
    assert evaluation.photo == 0.0
