"""corrupt.py: every corruption against a simple reference, its shapes and ranges, and its seeding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from torchlab.data.corrupt import CORRUPTIONS, SEVERITIES, corrupt

ALL = [(name, s) for name in CORRUPTIONS for s in SEVERITIES]


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    """uint8 [6, 28, 28]: light rectangles of different sizes and shades on black, like dataset items."""
    x = np.zeros((6, 28, 28), dtype=np.uint8)
    for i in range(6):
        x[i, 2 + i : 26 - i, 6 : 22 - i] = 120 + 25 * i
    return x


def arrays(images) -> list[np.ndarray]:
    return [np.asarray(img, dtype=np.float64) / 255 for img in images]


@pytest.mark.parametrize("name,severity", ALL)
def test_every_corruption_is_an_image_and_repeats_with_its_seed(items, name, severity):
    a = corrupt(items, name, severity, seed=3)
    b = corrupt(items, name, severity, seed=3)
    assert len(a) == len(items)
    assert all(isinstance(img, Image.Image) for img in a)
    assert all(img.mode == ("RGB" if name == "paper" else "L") for img in a)
    assert all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(a, b))


@pytest.mark.parametrize("name", ["noise", "scale", "translate", "rotate", "aspect", "paper"])
def test_random_corruptions_change_with_the_seed(items, name):
    a, b = corrupt(items, name, 2, seed=0), corrupt(items, name, 2, seed=1)
    assert any(p.size != q.size or not np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(a, b))


@pytest.mark.parametrize("name", ["contrast", "brightness", "jpeg", "blur", "noise"])
def test_pixel_corruptions_grow_with_severity(items, name):
    clean = items.astype(np.float64) / 255
    errors = [np.mean([np.abs(a - c).mean() for a, c in zip(arrays(corrupt(items, name, s)), clean)])
              for s in SEVERITIES]
    assert 0 < errors[0] < errors[1] < errors[2]


def test_contrast_brightness_blur_match_their_formulas(items):
    x = items[0].astype(np.float64) / 255
    expected = np.clip(x.mean() + (x - x.mean()) * 0.3, 0, 1)
    np.testing.assert_allclose(arrays(corrupt(items[:1], "contrast", 2))[0], expected, atol=0.5 / 255)
    np.testing.assert_allclose(arrays(corrupt(items[:1], "brightness", 2))[0], np.clip(x + 0.3, 0, 1), atol=0.5 / 255)
    blurred = Image.fromarray(items[0]).filter(ImageFilter.GaussianBlur(0.8))
    np.testing.assert_array_equal(np.asarray(corrupt(items[:1], "blur", 2)[0]), np.asarray(blurred))


def test_noise_has_its_sigma_where_nothing_clips(items):
    noisy = np.asarray(corrupt(items[:1], "noise", 3)[0], dtype=np.float64) / 255
    x = items[0] / 255
    inside = (x > 0.3) & (x < 0.7)  # away from 0 and 1, where clipping would shrink the spread
    assert (noisy - x)[inside].std() == pytest.approx(0.16, rel=0.15)


def test_jpeg_is_decoded_from_jpeg_bytes(items):
    img = corrupt(items[:1], "jpeg", 3)[0]
    assert img.format == "JPEG" and img.size == (28, 28)


def test_geometry_keeps_the_item_whole(items):
    x = items[1]
    for img in corrupt(items[1:2], "translate", 3, seed=5) + corrupt(items[1:2], "aspect", 3, seed=5):
        a = np.asarray(img)
        assert a.sum() == x.astype(np.int64).sum()  # pasted, not resampled or cut
        assert a.shape != (28, 28)
    rotated = np.asarray(corrupt(items[1:2], "rotate", 3)[0])
    assert rotated.shape[0] > 28 and rotated.shape[1] > 28  # the frame grew, so no corner was cut
    assert rotated.sum() == pytest.approx(x.astype(np.int64).sum(), rel=0.03)


def test_scale_shrinks_or_enlarges_in_the_same_frame(items):
    sizes = set()
    for img in corrupt(items, "scale", 3, seed=0):
        assert img.size == (28, 28)
        rows = np.flatnonzero(np.asarray(img).max(1) > 60)
        sizes.add(rows.size)
    # items[0] spans 24 rows and the others fewer; at severity 3 an item shrinks to 0.45 or grows to 1.3
    assert min(sizes) < 10 and max(sizes) >= 24


def test_paper_and_photo_are_dark_on_light(items):
    paper = np.asarray(corrupt(items[:1], "paper", 3, seed=1)[0], dtype=np.float64) / 255  # [28, 28, 3]
    assert 0.6 < paper[0, 0].max() < 0.8  # the paper: light, but not white
    assert paper[14, 12].max() < paper[0, 0].min()  # the item darker than the paper
    assert len(set(np.round(paper[0, 0], 3))) > 1  # a colour cast: the channels differ
    for severity, side in zip(SEVERITIES, (224, 448, 896)):
        big = corrupt(items[:1], "photo", severity)[0]
        assert big.size == (side, side)
        a = np.asarray(big)
        assert a[0, 0] == 255 and a[side // 2, side // 2 - side // 28] < 200
