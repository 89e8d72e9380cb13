"""data/images.py: image files of every mode and format opened, read and prepared as `predict` reads photos.

The builders here (CASES, write_case, bad_file, ...) also make the image files of tests/test_scoring.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchlab.data.images import open_image, prepare_rgb
from torchlab.data.photo import PhotoOptions, prepare_gray, to_grayscale
from torchlab.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def prepare(img: Image.Image, size: int, invert: str, **steps) -> np.ndarray:
    """predict's preprocessing of one photo for a Fashion-MNIST model, as an array [size, size]."""
    return prepare_gray(img, size, "fill", PhotoOptions(invert=invert, **steps))[0]


def object_mask(w: int, h: int) -> np.ndarray:
    """True on a centred block covering the middle of the image, False on a border at least one pixel wide."""
    mask = np.zeros((h, w), dtype=bool)
    mask[max(1, h // 4) : h - max(1, h // 4), max(1, w // 4) : w - max(1, w // 4)] = True
    return mask


def dark_on_white(w: int, h: int) -> np.ndarray:
    return np.where(object_mask(w, h), 20, 255).astype(np.uint8)


def palette_image(gray: np.ndarray) -> Image.Image:
    img = Image.fromarray((gray > 127).astype(np.uint8)).convert("P")
    img.putpalette([30, 30, 30, 255, 255, 255] + [0] * (3 * 254))  # index 0: dark object, 1: white
    return img


def make_image(kind: str, w: int, h: int) -> tuple[Image.Image, dict]:
    """A dark object on a white background (white as a viewer shows it, transparency included)."""
    gray = dark_on_white(w, h)
    mask = object_mask(w, h)
    rgb = np.where(mask[..., None], np.array([25, 15, 35], dtype=np.uint8), np.uint8(255)).astype(np.uint8)
    if kind == "RGB":
        return Image.fromarray(rgb), {}
    if kind == "RGBA":  # transparent black background: white only once composited
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        rgba[mask] = (20, 20, 20, 255)
        return Image.fromarray(rgba), {}
    if kind == "L":
        return Image.fromarray(gray), {}
    if kind == "I;16":
        return Image.fromarray(np.where(mask, 3000, 65535).astype(np.uint16)), {}
    if kind == "P":
        return palette_image(gray), {}
    if kind == "P-transparent":  # index 2 (black) is transparent and fills the background
        img = Image.fromarray(np.where(mask, 0, 2).astype(np.uint8)).convert("P")
        img.putpalette([40, 40, 40, 255, 255, 255, 0, 0, 0] + [0] * (3 * 253))
        return img, {"transparency": 2}
    if kind == "LA":
        lum = Image.fromarray(np.where(mask, 30, 0).astype(np.uint8))
        alpha = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
        return Image.merge("LA", (lum, alpha)), {}
    if kind == "CMYK":
        return Image.fromarray(rgb).convert("CMYK"), {}
    if kind == "1":
        return Image.fromarray(gray > 127), {}
    raise AssertionError(kind)


CASES = [
    # id, image kind, format, (width, height), mode Pillow reports when reading the file back
    ("png-rgb", "RGB", "PNG", (5, 7), "RGB"),
    ("png-rgb-big", "RGB", "PNG", (400, 300), "RGB"),
    ("png-rgba", "RGBA", "PNG", (37, 23), "RGBA"),
    ("png-l", "L", "PNG", (300, 400), "L"),
    ("png-i16", "I;16", "PNG", (41, 60), "I;16"),
    ("png-p", "P", "PNG", (7, 5), "P"),
    ("png-p-transparent", "P-transparent", "PNG", (64, 33), "P"),
    ("png-la", "LA", "PNG", (19, 50), "LA"),
    ("png-1", "1", "PNG", (28, 28), "1"),
    ("jpeg-rgb", "RGB", "JPEG", (123, 80), "RGB"),
    ("jpeg-l", "L", "JPEG", (9, 30), "L"),
    ("jpeg-cmyk", "CMYK", "JPEG", (100, 61), "CMYK"),
    ("bmp-rgb", "RGB", "BMP", (77, 29), "RGB"),
    ("gif", "P", "GIF", (30, 45), "P"),
    ("gif-transparent", "P-transparent", "GIF", (45, 30), "P"),
]


def write_case(folder: Path, case) -> Path:
    name, kind, fmt, (w, h), _ = case
    img, params = make_image(kind, w, h)
    path = folder / f"{name}.{fmt.lower()}"
    img.save(path, fmt, **params)
    return path


def write_animated_gif(folder: Path, w: int = 50, h: int = 35) -> Path:
    first = palette_image(dark_on_white(w, h))
    second = palette_image(np.full((h, w), 0, dtype=np.uint8))  # all dark
    path = folder / "animated.gif"
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    return path


def square(light_object: bool, w: int = 40, h: int = 40) -> Image.Image:
    mask = object_mask(w, h)
    return Image.fromarray(np.where(mask, 240, 10).astype(np.uint8) if light_object
                           else np.where(mask, 10, 240).astype(np.uint8))


def truncated_png(tmp_path: Path) -> Path:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def bad_file(tmp_path: Path, kind: str) -> Path:
    if kind == "text":
        path = tmp_path / "notes.png"
        path.write_text("this is not an image\n")
    elif kind == "empty":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    elif kind == "truncated":
        path = truncated_png(tmp_path)
    elif kind == "missing":
        path = tmp_path / "missing.png"
    elif kind == "directory":
        path = tmp_path / "folder.png"
        path.mkdir()
    else:
        raise AssertionError(kind)
    return path


BAD = ["text", "empty", "truncated", "missing", "directory"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_mode_and_format_is_read_as_intended(tmp_path, case):
    path = write_case(tmp_path, case)
    with Image.open(path) as img:
        assert img.format == case[2]
        assert img.mode == case[4]
        assert img.size == case[3]
        if case[1] == "P-transparent":
            assert "transparency" in img.info


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_prepare_every_mode_inverts_dark_object_on_white(tmp_path, case):
    path = write_case(tmp_path, case)
    out, steps = prepare_gray(open_image(path), 28)
    assert out.dtype == np.float32 and out.shape == (28, 28)
    assert out.min() >= 0 and out.max() <= 1 and steps["inverted"]
    assert out[13:15, 13:15].mean() > 0.7  # the (dark) object comes out light, framed to fill the frame
    whole = prepare(open_image(path), 28, "auto", frame=False)  # unframed, the white border shows: now black
    assert whole[0].mean() < 0.1 and whole[-1].mean() < 0.1 and whole[:, 0].mean() < 0.1 and whole[:, -1].mean() < 0.1
    assert whole[13:15, 13:15].mean() > 0.7


@pytest.mark.parametrize(
    "light_object,invert,center_light,border_light",
    [
        (False, "auto", True, False),  # dark on white: inverted
        (True, "auto", True, False),  # light on black: kept
        (False, "no", False, True),
        (True, "no", True, False),
        (False, "yes", True, False),
        (True, "yes", False, True),
    ],
)
def test_prepare_inversion(light_object, invert, center_light, border_light):
    out = prepare(square(light_object), 28, invert, frame=False)  # unframed, so the border stays in view
    assert out.dtype == np.float32 and out.shape == (28, 28)
    assert 0 <= out.min() and out.max() <= 1
    center, border = out[12:16, 12:16].mean(), np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]]).mean()
    assert (center > 0.8) if center_light else (center < 0.2)
    assert (border > 0.8) if border_light else (border < 0.2)


@pytest.mark.parametrize("size", [28, 32, 7])
def test_prepare_output_size(size):
    out = prepare(square(True, 90, 45), size, "auto")
    assert out.shape == (size, size) and out.dtype == np.float32


@pytest.mark.parametrize("w,h", [(120, 40), (40, 120), (400, 300), (30, 70), (64, 64)])
def test_prepare_keeps_aspect_ratio(w, h):
    bar = np.zeros((h, w), dtype=np.uint8)
    bar[1:-1, 1:-1] = 255  # a white bar in a 1-pixel black frame: trimmed, framed, not stretched
    out = prepare(Image.fromarray(bar), 28, "no")
    w, h = w - 2, h - 2
    side = max(w, h)
    margin = (side - min(w, h)) / 2 * 28 / side  # background rows (wide) or columns (tall) on each side
    if w == h:
        assert out.min() > 0.95
        return
    across = out if w > h else out.T  # rows of the padded direction first
    assert across[: int(margin) - 1].max() < 0.05 and across[28 - int(margin) + 1 :].max() < 0.05
    assert across[14, 1:-1].min() > 0.95
    bright = int((across.mean(axis=1) > 0.5).sum())
    assert abs(bright - 28 * min(w, h) / side) <= 1.5


def test_prepare_wide_dark_on_white_pads_with_background():
    img = Image.fromarray(dark_on_white(200, 50))
    out = prepare(img, 28, "auto")
    assert out[:3].max() < 0.05 and out[-3:].max() < 0.05
    assert out[14, 14] > 0.8


def test_prepare_applies_jpeg_exif_orientation(tmp_path):
    arr = np.zeros((20, 60), dtype=np.uint8)
    arr[2:-2, 2:-2] = 250  # a light wide bar on black
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: shown tall
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif)
    out = prepare(open_image(path), 28, "no")
    assert out[:, :3].max() < 0.05 and out[:, -3:].max() < 0.05  # tall: padded left and right
    assert out[2:5, 14].min() > 0.9  # the bar fills the height (its JPEG-blurred edge row aside)


def test_sixteen_bit_full_range_maps_to_unit_interval(tmp_path):
    a = np.zeros((30, 30), dtype=np.uint16)
    a[:, 15:] = 65535
    a[0, 0] = 1
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    path = tmp_path / "sixteen.png"
    img.save(path)
    reread = open_image(path)
    assert reread.mode == "I;16"
    gray = to_grayscale(reread)
    assert gray.min() == 0.0 and gray.max() == 1.0
    assert gray[0, 0] == pytest.approx(1 / 65535)
    out = prepare(reread, 30, "no", levels=False, frame=False)
    assert out[:, :14].max() < 0.02 and out[:, 16:].min() > 0.98


def test_sixteen_bit_gradient_is_not_clipped():
    a = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    gray = to_grayscale(Image.fromarray(a))
    assert gray.min() == 0.0 and gray.max() == 1.0
    assert np.allclose(gray.ravel(), a.ravel() / 65535)
    assert len(np.unique(gray)) == 256


@pytest.mark.parametrize(
    "values,mode,scale",
    [
        ([0, 1000], "I;16", 65535.0),  # a dark 16-bit image stays dark: no contrast stretch
        ([0, 200], "I", 255.0),  # 32-bit values within 0..255 are 8-bit data
        ([0, 40000], "I", 65535.0),
    ],
)
def test_wide_integer_modes_scale_by_bit_depth(values, mode, scale):
    a = np.array([values * 4] * 8, dtype=np.uint16 if mode == "I;16" else np.int32)
    img = Image.fromarray(a)
    assert img.mode == mode
    gray = to_grayscale(img)
    assert np.allclose(gray, a / scale)


@pytest.mark.parametrize("kind", ["RGBA", "P-transparent", "LA"])
def test_transparent_pixels_become_white(kind):
    img, params = make_image(kind, 20, 20)
    if "transparency" in params:
        img.info["transparency"] = params["transparency"]
    gray = to_grayscale(img)
    mask = object_mask(20, 20)
    assert gray[~mask].min() == 1.0
    assert gray[mask].max() < 0.2


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_trns_transparency_in_l_and_rgb_becomes_white(tmp_path, mode):
    mask = object_mask(12, 12)
    gray = np.where(mask, 30, 0).astype(np.uint8)  # black background, marked transparent
    img = Image.fromarray(gray if mode == "L" else np.stack([gray] * 3, axis=-1))
    path = tmp_path / f"trns-{mode}.png"
    img.save(path, transparency=0 if mode == "L" else (0, 0, 0))
    reread = open_image(path)
    assert reread.mode == mode and "transparency" in reread.info
    gray_out = to_grayscale(reread)
    assert gray_out[~mask].min() == 1.0


@pytest.mark.parametrize("kind", BAD)
def test_bad_file_raises_user_error_naming_path(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    with pytest.raises(UserError) as info:
        open_image(path)
    assert str(path) in info.value.message
    assert info.value.hint


def test_colour_photos_are_prepared_as_evaluation_saw_them(tmp_path):
    """predict's input for an image-folder model equals the val tensor training scored (same resize and crop)."""
    from torchlab.data.folder import centre, decode, stored_size
    from torchlab.data.vision import Split

    rng = np.random.default_rng(0)
    for w, h in [(90, 60), (61, 97), (64, 64)]:
        path = tmp_path / f"photo{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        stored = decode(path, stored_size(24))[None]  # [1, 3, 27, 27] uint8
        expected = centre(Split(stored, torch.zeros(1)), 24).images[0].float() / 255
        got = torch.from_numpy(prepare_rgb(Image.open(path), 24, "image-folder"))
        assert got.shape == (3, 24, 24)
        assert torch.allclose(got, expected, atol=1e-6)
