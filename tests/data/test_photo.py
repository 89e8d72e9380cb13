"""photo.py: a photo made to look like a dataset image, on synthetic photos with a known background and box."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from torchlab.data.photo import PhotoOptions, background, item_box, noise_level, prepare_gray, to_grayscale


def photo(w: int, h: int, box: tuple[int, int, int, int], paper: float, ink: float,
          cast=(1.0, 1.0, 1.0), noise: float = 0.0, seed: int = 0) -> Image.Image:
    """An RGB photo: a rectangle of `ink` at box (left, top, right, bottom) on `paper`, each channel scaled."""
    a = np.full((h, w), paper)
    left, top, right, bottom = box
    a[top:bottom, left:right] = ink
    a = a + np.random.default_rng(seed).normal(0, noise, a.shape) if noise else a
    rgb = np.clip(a[..., None] * np.array(cast), 0, 1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), mode="RGB")


CASTS = [(1.0, 1.0, 1.0), (0.96, 0.9, 0.84), (0.84, 0.92, 0.96), (1.0, 0.85, 0.85)]


@pytest.mark.parametrize("cast", CASTS)
@pytest.mark.parametrize("paper,ink", [(0.92, 0.1), (0.75, 0.2), (0.45, 0.1)])
def test_dark_item_on_lighter_paper_is_inverted(cast, paper, ink):
    # 0.45 paper is darker than 0.5: only comparing it with the item gets the inversion right
    out, steps = prepare_gray(photo(60, 40, (20, 8, 40, 32), paper, ink, cast), 28)
    assert steps["inverted"] and "lighter" in steps["inversion"]
    assert out[:, 0].max() < 0.05 and out[:, -1].max() < 0.05  # background brought to black (item: 20 x 24)
    assert out[14, 14] > 0.95  # the item to white


@pytest.mark.parametrize("cast", CASTS)
@pytest.mark.parametrize("paper,ink", [(0.05, 0.9), (0.3, 0.8), (0.55, 0.95)])
def test_light_item_on_darker_background_is_kept(cast, paper, ink):
    out, steps = prepare_gray(photo(60, 40, (20, 8, 40, 32), paper, ink, cast), 28)
    assert not steps["inverted"] and "darker" in steps["inversion"]
    assert out[:, 0].max() < 0.05 and out[:, -1].max() < 0.05 and out[14, 14] > 0.95


def test_levels_map_background_to_zero_and_item_to_one():
    out, steps = prepare_gray(photo(50, 50, (10, 5, 40, 45), 0.3, 0.8), 28, options=PhotoOptions(frame=False))
    assert steps["levels"]["applied"]
    assert steps["levels"]["background"] == pytest.approx(0.3, abs=0.01)
    assert steps["levels"]["white"] == pytest.approx(0.8, abs=0.01)
    assert out.min() == pytest.approx(0, abs=0.01) and out.max() == pytest.approx(1, abs=0.01)


@pytest.mark.parametrize("w,h,box", [(80, 60, (10, 20, 30, 50)), (60, 90, (35, 5, 55, 25)), (40, 40, (0, 10, 40, 30))])
def test_item_is_trimmed_and_fills_the_frame_centred(w, h, box):
    out, steps = prepare_gray(photo(w, h, box, 0.0, 1.0), 28)
    assert steps["frame"]["item_box"] == list(box)
    left, top, right, bottom = box
    bw, bh = right - left, bottom - top
    rows, cols = np.flatnonzero(out.max(1) > 0.5), np.flatnonzero(out.max(0) > 0.5)
    long_side, short_side = (rows, cols) if bh >= bw else (cols, rows)
    assert long_side.size == 28  # the longest side fills the frame, as Fashion-MNIST's conversion did
    assert short_side.size == pytest.approx(28 * min(bw, bh) / max(bw, bh), abs=1)
    assert abs((short_side[0] + short_side[-1]) / 2 - 13.5) <= 0.5  # centred


def test_mnist_framing_puts_a_20_pixel_box_centred_by_mass():
    img = photo(100, 100, (30, 10, 50, 90), 0.0, 1.0)  # a bar, 20 x 80
    out, steps = prepare_gray(img, 28, style="mass")
    rows, cols = np.flatnonzero(out.max(1) > 0.5), np.flatnonzero(out.max(0) > 0.5)
    assert rows.size == 20 and cols.size == 5
    weight = out / out.sum()
    assert (weight.sum(1) * np.arange(28)).sum() == pytest.approx(14, abs=0.501)  # where MNIST has it, to the nearest whole pixel
    assert (weight.sum(0) * np.arange(28)).sum() == pytest.approx(14, abs=0.501)


def test_dataset_image_is_left_as_it_is():
    a = np.zeros((28, 28))
    a[0:28, 6:22] = np.linspace(0.2, 1.0, 16)  # fills the frame's height, centred, light on black
    img = Image.fromarray((a * 255).round().astype(np.uint8), mode="L")
    out, steps = prepare_gray(img, 28)
    assert not steps["inverted"]
    np.testing.assert_allclose(out, np.asarray(img) / 255, atol=1 / 255)


def test_noisy_background_box_and_levels():
    img = photo(60, 60, (15, 10, 45, 50), 0.85, 0.15, noise=0.05)
    assert noise_level(to_grayscale(img)) == pytest.approx(0.05, abs=0.02)
    out, steps = prepare_gray(img, 28)
    assert steps["inverted"]
    left, top, right, bottom = steps["frame"]["item_box"]
    assert abs(left - 15) <= 1 and abs(top - 10) <= 1 and abs(right - 45) <= 1 and abs(bottom - 50) <= 1
    assert out[:, :3].mean() < 0.1 and out[10:18, 10:18].mean() > 0.8


def test_grain_is_filtered_and_clean_images_are_not():
    noisy = photo(60, 60, (15, 10, 45, 50), 0.85, 0.15, noise=0.08)
    _, steps = prepare_gray(noisy, 28)
    assert steps["denoise"]["applied"] and steps["denoise"]["noise"] > 0.03
    _, steps = prepare_gray(noisy, 28, options=PhotoOptions(denoise=False))
    assert steps["denoise"] == {"applied": False, "why": "--no-denoise"}
    _, steps = prepare_gray(photo(60, 60, (15, 10, 45, 50), 0.85, 0.15), 28)
    assert not steps["denoise"]["applied"] and steps["denoise"]["noise"] == 0


def test_large_photo_is_read_at_working_size_and_box_reported_in_its_pixels():
    out, steps = prepare_gray(photo(1200, 900, (300, 100, 900, 800), 0.9, 0.1), 28)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert steps["size"] == [1200, 900]
    assert all(abs(a - b) <= 12 for a, b in zip(steps["frame"]["item_box"], (300, 100, 900, 800)))


def test_each_step_can_be_switched_off():
    img = photo(60, 40, (20, 8, 40, 32), 0.8, 0.2)
    out, steps = prepare_gray(img, 28, options=PhotoOptions(invert="no", levels=False, denoise=False, frame=False))
    assert not steps["inverted"] and steps["inversion"] == "--invert no"
    assert steps["levels"] == {"applied": False, "why": "--no-levels"}
    assert not steps["frame"]["applied"] and steps["frame"]["padded_to_square"]
    assert out[14, 14] == pytest.approx(0.2, abs=0.02)  # untouched: dark item, light paper
    assert out[13, 2] == pytest.approx(0.8, abs=0.02)
    assert out[0, 14] == pytest.approx(0.8, abs=0.02)  # padded with the background, not black


def test_blank_image_gives_no_box():
    img = Image.new("L", (30, 30), 255)
    out, steps = prepare_gray(img, 28)
    assert steps["inverted"] and not steps["frame"]["applied"] and steps["frame"]["why"] == "no item found"
    assert out.max() < 0.01
    assert item_box(np.zeros((10, 10))) is None and background(np.zeros((10, 10))) == 0
