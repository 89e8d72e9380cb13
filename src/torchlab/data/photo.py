"""Turn a user's photo into what a grayscale dataset image looks like.

Fashion-MNIST was made from product photos (Xiao et al., 2017): each was trimmed
to the item, its longest side scaled to 28 pixels, centred, negated and made
8-bit grayscale, so every item is light on a pure black background and
fills the frame. MNIST digits were scaled into a 20-pixel box and centred by
their mass in 28 x 28. A photo of a shoe on paper is none of that: a dark item
on a light, tinted background, anywhere in a frame of any shape. `prepare_gray`
undoes the difference in five steps, each reported and each optional:

1. grayscale (transparent pixels become white, as a viewer shows them);
2. inversion, when the background is lighter than the item;
3. levels: the background to 0 and the item's brightest part to 1;
4. denoise: a 3 x 3 median filter, only where the background shows grain;
5. trim to the item's bounding box;
6. frame it as the dataset did ("fill" or "mass", see FRAMINGS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from torchlab.i18n import N_

# How each dataset framed its items: "fill" scales the longest side to the whole frame and centres the box;
# "mass" scales it to 20/28 of the frame and puts the centre of mass in the middle.
FRAMINGS = {"fashion-mnist": "fill", "mnist": "mass"}
WORK_SIDE = 4  # statistics and trimming run on at most 4x the model's side: enough for sub-pixel boxes


@dataclass(frozen=True)
class PhotoOptions:
    invert: str = "auto"  # auto | yes | no
    levels: bool = True
    denoise: bool = True
    frame: bool = True  # trim and frame; off: pad to a square as the photo is


def to_grayscale(img: Image.Image) -> np.ndarray:
    """Any mode -> float array [H, W] in [0, 1]; transparent pixels become white, as a viewer shows them."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)  # 16/32-bit: scale by the range actually used
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(a / hi, 0, 1)
    if "transparency" in img.info or img.mode in ("LA", "PA"):  # a tRNS entry (P, L or RGB) or an alpha band
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def resized(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """A float array [H, W] resampled to [height, width]: area averages when shrinking, bilinear when
    enlarging. Neither overshoots, so the brightest pixel stays the item's, not an edge's ringing."""
    img = Image.fromarray(a.astype(np.float32), mode="F")
    shrink = width * height < a.shape[0] * a.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(img.resize((max(1, width), max(1, height)), resample), dtype=np.float64)


def median3(a: np.ndarray) -> np.ndarray:
    """3 x 3 median filter: removes isolated noisy pixels but keeps edges, so boxes and levels ignore noise."""
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").filter(ImageFilter.MedianFilter(3)))


def border_of(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def background(a: np.ndarray) -> float:
    """The background's level: the median of the border, which items touch only in part."""
    return float(np.median(border_of(a)))


def noise_level(a: np.ndarray) -> float:
    """The background's pixel noise as a standard deviation, robustly: what a 3 x 3 median filter removes
    from pixels near the background's level (1.4826 MAD). 0 on a clean background, whatever the item's
    texture."""
    smooth = median3(a)
    near = np.abs(smooth - background(a)) < 0.15
    residual = np.abs(a - smooth)[near] if near.any() else np.abs(a - smooth)
    return float(1.4826 * np.median(residual))


# Why an image was (or was not) negated, by rule: English in the JSON, translated where shown (reason_text).
REASONS = {"flag": "--invert {mode}", "blank": N_("no item found; background {background}"),
           "lighter": N_("background {background} is lighter than the item ({item})"),
           "darker": N_("background {background} is darker than the item ({item})")}


def decide_inversion(a: np.ndarray, mode: str) -> tuple[bool, dict]:
    """Whether to negate: items must come out lighter than their background, as in the dataset; and why,
    as {"rule": a key of REASONS, and its values}."""
    if mode != "auto":
        return mode == "yes", {"rule": "flag", "mode": mode}
    bg, noise = background(a), noise_level(a)
    item = a[np.abs(median3(a) - bg) > max(0.1, 4 * noise)]  # pixels clearly not background
    if item.size == 0:  # a blank image: light means a light background
        return bg > 0.5, {"rule": "blank", "background": round(bg, 2)}
    lighter = bg > float(np.median(item))
    return lighter, {"rule": "lighter" if lighter else "darker", "background": round(bg, 2),
                     "item": round(float(np.median(item)), 2)}


def reason_text(why: dict, translate=lambda message: message) -> str:
    """`why` from decide_inversion in words: English, or through `translate` (i18n's `_`)."""
    values = {k: f"{v:.2f}" if isinstance(v, float) else v for k, v in why.items() if k != "rule"}
    return translate(REASONS[why["rule"]]).format(**values)


def levels(a: np.ndarray) -> tuple[np.ndarray, dict]:
    """Map the background to 0 and the item's brightest part to 1 (the dataset's images span 0-255)."""
    bg, noise = background(a), noise_level(a)
    white = float((a if noise < 0.01 else median3(a)).max())  # with noise: the brightest region, not one pixel
    if white - bg < 0.05:  # no item lighter than the background: nothing to stretch
        return a, {"applied": False, "background": round(bg, 3), "why": "no item lighter than the background"}
    out = np.clip((a - bg) / (white - bg), 0, 1)
    return out, {"applied": True, "background": round(bg, 3), "white": round(white, 3),
                 "noise": round(noise / (white - bg), 3)}


def denoise(a: np.ndarray, noise: float, wanted: bool) -> tuple[np.ndarray, dict]:
    """A 3 x 3 median filter where the noise is above 3% of the item's contrast: grain the clean dataset
    never had (the fast 91 recipe's model gained 2 and 17 points at noise sigma 0.1 and 0.16, and nothing
    changed on clean, blurred or JPEG images, which have no such grain)."""
    if not wanted:
        return a, {"applied": False, "why": "--no-denoise"}
    if noise <= 0.03:
        return a, {"applied": False, "noise": round(noise, 3)}
    return median3(a).astype(np.float64), {"applied": True, "noise": round(noise, 3), "filter": "median 3x3"}


def item_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the pixels that stand out from the background (item lighter), in
    units of the item's contrast; None when none do. Call it before levels clip the background's noise."""
    bg, noise = background(a), noise_level(a)
    smooth = median3(a)
    span = float(smooth.max()) - bg  # the item's contrast, read where noise cannot fake it
    if span < 0.05:
        return None
    if noise < 0.01:  # a clean background: pixels 5% of the contrast above it (JPEG rings fainter)
        mask = a - bg > 0.05 * span  # the 5% Zalando trimmed by
    else:  # noise, grain or JPEG blocks: judge smoothed pixels against the noise level
        mask = smooth - bg > max(0.05 * span, 3 * noise)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def frame(item: np.ndarray, size: int, style: str, fill: float) -> np.ndarray:
    """Place an item crop [h, w] on a size x size canvas as the dataset did (see FRAMINGS)."""
    h, w = item.shape
    box = size if style == "fill" else round(size * 20 / 28)
    scale = box / max(h, w)
    small = np.clip(resized(item, round(w * scale), round(h * scale)), 0, 1)
    canvas = np.full((size, size), fill)
    sh, sw = small.shape
    if style == "mass" and (small - fill).clip(0).sum() > 0:
        weight = (small - fill).clip(0)
        cy = (weight.sum(1) * np.arange(sh)).sum() / weight.sum()
        cx = (weight.sum(0) * np.arange(sw)).sum() / weight.sum()
        top, left = round(size / 2 - cy), round(size / 2 - cx)  # MNIST has its mass at (14, 14), 0-based
        top, left = min(max(top, 0), size - sh), min(max(left, 0), size - sw)
    else:
        top, left = (size - sh + 1) // 2, (size - sw + 1) // 2  # an odd margin's extra pixel on top and left
    canvas[top : top + sh, left : left + sw] = small
    return canvas


def pad_square(a: np.ndarray, size: int, fill: float) -> np.ndarray:
    """The photo as it is, padded to a square with the background and resized to size x size."""
    h, w = a.shape
    side = max(h, w)
    canvas = np.full((side, side), fill)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = a
    return np.clip(resized(canvas, size, size), 0, 1)


def prepare_gray(img: Image.Image, size: int, style: str = "fill",
                 options: PhotoOptions = PhotoOptions()) -> tuple[np.ndarray, dict]:
    """A photo -> (float32 [size, size] in [0, 1], light item on dark; the steps taken, JSON-ready)."""
    img = ImageOps.exif_transpose(img) if img.format == "JPEG" else img
    a = to_grayscale(img)
    steps: dict = {"grayscale": img.mode, "size": [img.width, img.height]}
    side = WORK_SIDE * size
    if max(a.shape) > side:  # shrink first (antialiased): the statistics need no more pixels
        scale = side / max(a.shape)
        a = np.clip(resized(a, round(a.shape[1] * scale), round(a.shape[0] * scale)), 0, 1)
    work = a.shape[1], a.shape[0]
    invert, why = decide_inversion(a, options.invert)
    a = 1 - a if invert else a
    steps["inverted"], steps["inversion"], steps["inversion_rule"] = invert, reason_text(why), why
    box = item_box(a) if options.frame else None  # before levels clip half of the background's noise away
    noise = noise_level(a)  # before levels clip half of it away
    if options.levels:
        a, steps["levels"] = levels(a)
        noise = steps["levels"].get("noise", noise)
    else:
        steps["levels"] = {"applied": False, "why": "--no-levels"}
    a, steps["denoise"] = denoise(a, noise, options.denoise)
    fill = background(a)
    if box is None:
        steps["frame"] = {"applied": False, "why": "--no-frame" if not options.frame else "no item found",
                          "padded_to_square": True}
        return pad_square(a, size, fill).astype(np.float32), steps
    left, top, right, bottom = box
    out = frame(a[top:bottom, left:right], size, style, fill)
    to_photo = img.width / work[0]  # report the box in the photo's own pixels
    steps["frame"] = {"applied": True, "style": style,
                      "item_box": [round(v * to_photo) for v in box]}
    return out.astype(np.float32), steps
