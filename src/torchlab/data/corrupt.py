"""Corrupted copies of dataset images, in the spirit of MNIST-C (Mu and Gilmer, 2019) and ImageNet-C
(Hendrycks and Dietterich, 2019): what a user's photo does to an image that the test set never does.

Every corruption takes one dataset image (uint8 [H, W], light item on black) and returns the PIL image a
user would hand to `torchlab predict`, at severities 1-3. Random choices come from the generator passed
in, so a seed gives the same images on every machine.
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

SEVERITIES = (1, 2, 3)


def gray_image(x: np.ndarray) -> Image.Image:
    """float [H, W] in [0, 1] -> 8-bit grayscale image."""
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8), mode="L")


def paper(x: np.ndarray, level: tuple[float, float, float], rng: np.random.Generator) -> Image.Image:
    """A dark item on off-white paper with a colour cast: (paper white, item black, largest channel cast)."""
    white, black, cast = level
    photo = black + (white - black) * (1 - x)  # [H, W], dark on light
    tint = 1 - cast * rng.random(3)  # each RGB channel dimmed by up to `cast`
    return Image.fromarray((np.clip(photo[..., None] * tint, 0, 1) * 255).round().astype(np.uint8), mode="RGB")


def contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> Image.Image:
    mean = x.mean()
    return gray_image(mean + (x - mean) * factor)


def brightness(x: np.ndarray, shift: float, rng: np.random.Generator) -> Image.Image:
    return gray_image(x + shift)  # the background lifts too; the brightest parts clip at white


def jpeg(x: np.ndarray, quality: int, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    gray_image(x).save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))  # decoded as a user's JPEG file would be


def blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> Image.Image:
    return gray_image(x).filter(ImageFilter.GaussianBlur(sigma))  # Pillow's radius is the standard deviation


def noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> Image.Image:
    return gray_image(x + rng.normal(0, sigma, x.shape))


def scale(x: np.ndarray, factor: tuple[float, float], rng: np.random.Generator) -> Image.Image:
    """The item smaller (first factor) or larger (second; cut by the frame) in the same frame, at random."""
    h, w = x.shape
    f = factor[0] if rng.random() < 0.5 else factor[1]
    item = gray_image(x).resize((round(w * f), round(h * f)), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (w, h), 0)
    canvas.paste(item, ((w - item.width) // 2, (h - item.height) // 2))  # negative offsets crop a larger item
    return canvas


def translate(x: np.ndarray, reach: float, rng: np.random.Generator) -> Image.Image:
    """The item off-centre in a frame 1.5x its size, moved `reach` of the way to the frame's edge."""
    h, w = x.shape
    side = round(1.5 * max(h, w))
    angle = rng.uniform(0, 2 * math.pi)
    slack_x, slack_y = (side - w) / 2, (side - h) / 2
    left = round(slack_x + reach * slack_x * math.cos(angle))
    top = round(slack_y + reach * slack_y * math.sin(angle))
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(gray_image(x), (left, top))
    return canvas


def rotate(x: np.ndarray, degrees: float, rng: np.random.Generator) -> Image.Image:
    """Turned by `degrees` either way, the frame enlarged so that no part is cut."""
    sign = 1 if rng.random() < 0.5 else -1
    return gray_image(x).rotate(sign * degrees, Image.Resampling.BICUBIC, expand=True, fillcolor=0)


def aspect(x: np.ndarray, ratio: float, rng: np.random.Generator) -> Image.Image:
    """A non-square frame (long side `ratio` x the short one, either way round), the item anywhere along it."""
    h, w = x.shape
    wide = rng.random() < 0.5
    size = (round(w * ratio), h) if wide else (w, round(h * ratio))
    slack = size[0] - w if wide else size[1] - h
    offset = int(rng.integers(0, slack + 1))
    canvas = Image.new("L", size, 0)
    canvas.paste(gray_image(x), (offset, 0) if wide else (0, offset))
    return canvas


def photo(x: np.ndarray, side: int, rng: np.random.Generator) -> Image.Image:
    """The path of a large photo: dark on white and `side` pixels tall, as a camera gives it."""
    h, w = x.shape
    return gray_image(1 - x).resize((round(w * side / h), side), Image.Resampling.BICUBIC)


# name -> (function, its parameter at severities 1, 2, 3, what it does)
CORRUPTIONS: dict[str, tuple[Callable, tuple, str]] = {
    "paper": (paper, ((0.92, 0.05, 0.06), (0.85, 0.10, 0.12), (0.75, 0.15, 0.16)),
              "dark on grey-white paper with a colour cast (paper white, item black, channel cast)"),
    "contrast": (contrast, (0.5, 0.3, 0.15), "contrast scaled around the mean"),
    "brightness": (brightness, (0.15, 0.3, 0.45), "every pixel lifted (the background too)"),
    "jpeg": (jpeg, (25, 15, 8), "JPEG quality"),
    "blur": (blur, (0.5, 0.8, 1.1), "Gaussian blur, sigma in pixels"),
    "noise": (noise, (0.05, 0.1, 0.16), "Gaussian noise, sigma"),
    "scale": (scale, ((0.8, 1.1), (0.6, 1.2), (0.45, 1.3)), "item shrunk or enlarged in the same frame"),
    "translate": (translate, (1 / 3, 2 / 3, 1.0), "off-centre in a 1.5x frame, share of the way to the edge"),
    "rotate": (rotate, (7, 13, 20), "rotated either way, degrees"),
    "aspect": (aspect, (4 / 3, 3 / 2, 2.0), "non-square frame, long side / short side"),
    "photo": (photo, (224, 448, 896), "inverted to dark on white and scaled up, pixels tall"),
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> list[Image.Image]:
    """uint8 [N, H, W] dataset images -> N PIL images with one corruption at one severity (1-3), seeded."""
    function, levels, _ = CORRUPTIONS[name]
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity])
    return [function(x.astype(np.float64) / 255, levels[severity - 1], rng) for x in images]
