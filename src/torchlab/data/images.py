"""Image files: opening them with one-line errors, and turning photos into a model's input.

`prepare_images` makes photos look like a dataset's images before a model sees them: colour models get
the resize and central crop their evaluation used, grayscale ones the steps of data/photo.py (inversion,
levels, denoising, framing), which the photo flags of `predict` and `eval --corruptions` switch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from torchlab.data.photo import FRAMINGS, PhotoOptions, prepare_gray, to_grayscale
from torchlab.errors import UserError
from torchlab.i18n import N_, _, both

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"}


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning Pillow's errors into one-line messages."""
    try:
        img = Image.open(path)
        img.load()  # decode now, so a truncated file fails here
    except FileNotFoundError:
        raise UserError(_("{path}: no such file").format(path=path), _("check the path")) from None
    except IsADirectoryError:
        raise UserError(_("{path}: is a folder, not an image file").format(path=path), _("pass the image files inside it")) from None
    except Image.DecompressionBombError as e:
        raise UserError(_("{path}: refused, too many pixels ({error})").format(path=path, error=e), _("downscale the image first")) from None
    except UnidentifiedImageError:
        raise UserError(_("{path}: not an image Pillow can read").format(path=path), _("pass a PNG, JPEG, BMP or GIF file")) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(_("{path}: damaged image ({error})").format(path=path, error=e), _("re-export or re-download the file")) from None
    return img


# --- photos as a model's input ----------------------------------------------------------------


def add_photo_flags(p) -> None:
    """How predict (and eval --corruptions) make a photo look like the dataset's images (data/photo.py)."""
    p.add_argument("--invert", default="auto", choices=["auto", "yes", "no"],
                   help=_("make the item light on dark (auto: when the background is lighter than the item)"))
    p.add_argument("--no-levels", action="store_true",
                   help=_("keep the photo's levels (default: background to black, the item's brightest part to white)"))
    p.add_argument("--no-denoise", action="store_true",
                   help=_("keep the photo's grain (default: a 3x3 median filter where the background is noisy)"))
    p.add_argument("--no-frame", action="store_true",
                   help=_("keep the photo's framing (default: trim to the item and frame it as the dataset did)"))


def photo_options(args) -> PhotoOptions:
    """The PhotoOptions the flags of add_photo_flags ask for."""
    return PhotoOptions(invert=args.invert, levels=not args.no_levels, denoise=not args.no_denoise,
                        frame=not args.no_frame)


def prepare_rgb(img: Image.Image, size: int, task: str | None) -> np.ndarray:
    """A photo for a colour model, as its evaluation saw images: [3, size, size] in [0, 1].

    Image-folder models were scored on the central crop of images resized to
    8/7 of `size`; CIFAR-10 images are whole objects, so only resize and crop.
    """
    from torchlab.data.folder import square, stored_size  # imported here: it loads torchvision, which is slow

    rgb = square(ImageOps.exif_transpose(img).convert("RGB"), stored_size(size) if task == "image-folder" else size)
    rgb = rgb.crop(centre_box(rgb.width, size))
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


def centre_box(side: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the central size x size window, placed as vision.centre_crop places it."""
    start = (side - size) // 2
    return start, start, start + size, start + size


def prepare_images(images: list[Image.Image], size: int, channels: int, task: str | None,
                   options: PhotoOptions = PhotoOptions()) -> tuple[torch.Tensor, list[dict]]:
    """Photos -> a model's input [N, channels, size, size] in [0, 1], made to look like the images of `task`,
    and the steps taken for each (see data/photo.py)."""
    if channels == 3:  # colour models: resized and cropped as their evaluation saw images
        arrays = np.stack([prepare_rgb(img, size, task) for img in images])
        return torch.from_numpy(arrays), [{"resized_and_cropped": size} for _ in images]
    style = FRAMINGS.get(task, "fill")
    prepared = [prepare_gray(img, size, style, options) for img in images]
    return torch.from_numpy(np.stack([a for a, _ in prepared]))[:, None], [steps for _, steps in prepared]


def save_inputs(x: torch.Tensor, path: str) -> None:
    """--show: the model-sized inputs [N, C, S, S] side by side in one PNG, exactly the model's pixels."""
    strip = torch.cat(list(x), dim=2)  # [C, S, N * S]
    array = (strip.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).squeeze(2).numpy()
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    except (OSError, ValueError) as e:
        raise UserError(_("--show {path}: cannot write ({error})").format(path=path, error=getattr(e, 'strerror', None) or e),
                        _("pass --show with a writable .png path")) from None


# --- a folder of images, as conv-viz shows them ------------------------------------------------


def list_images(folder: Path) -> tuple[list[Path], int]:
    """Image files in `folder`, sorted by name, and how many other files were skipped."""
    if not folder.is_dir():
        raise UserError(_("--images {folder}: not a folder").format(folder=folder), _("pass a folder of PNG, JPEG, BMP or GIF files"))
    found, skipped = [], 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            with Image.open(path):  # reads the header only: cheap for a whole folder
                found.append(path)
        except (UnidentifiedImageError, OSError):
            skipped += 1
    if not found:
        raise UserError((_("--images {folder}: no image files ({skipped} other files)") if skipped
                         else _("--images {folder}: no image files")).format(folder=folder, skipped=skipped),
                        _("pass a folder of PNG, JPEG, BMP or GIF files"))
    return found, skipped


def to_tensor(img: Image.Image, size: int, gray: bool) -> torch.Tensor:
    """One image -> float [C, size, size] in [0, 1]: shorter side resized to size, then centre-cropped."""
    from torchvision.transforms import functional as TF  # imported here: slow, and only conv-viz needs it

    if gray:  # to_grayscale also handles 16-bit and transparent images
        img = Image.fromarray((to_grayscale(img) * 255).round().astype(np.uint8))
    else:
        if "transparency" in img.info or img.mode in ("RGBA", "LA", "PA"):
            img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
        img = img.convert("RGB")
    img = TF.center_crop(TF.resize(img, size), [size, size])  # as transforms.Resize + CenterCrop
    return TF.to_tensor(img)


def load_folder(folder: str, size: int, count: int) -> tuple[torch.Tensor, tuple[str, str]]:
    """The first `count` images of a folder as [N, 1 or 3, size, size] in [0, 1], and a note of what was read
    (in English, and in the user's language: i18n.both)."""
    paths, skipped = list_images(Path(folder))
    images = [ImageOps.exif_transpose(open_image(p)) for p in paths[:count]]
    gray = all(img.mode in GRAY_MODES for img in images)  # L only when no image has colour
    x = torch.stack([to_tensor(img, size, gray) for img in images])  # [N, 1 or 3, size, size]
    note = N_("{count} of {total} images in {folder}, {mode}, {size}x{size}") if not skipped else \
        N_("{count} of {total} images in {folder}, {mode}, {size}x{size}; skipped {skipped} non-image file(s)")
    return x, both(note, count=len(images), total=len(paths), folder=folder, mode="L" if gray else "RGB", size=size,
                   skipped=skipped)


def tensor_image(t: torch.Tensor, name: str) -> Image.Image:
    """A tensor as ToTensor makes them ([C, H, W] floats in [0, 1], or uint8 0-255; C is 1 or 3; [H, W] is
    one grey channel) back as a PIL image, so that tensors and photos are read the same way."""
    t = t.detach().cpu()
    t = t[None] if t.dim() == 2 else t
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise UserError(_("{name}: a tensor of shape {shape}, not an image [C, H, W] with C = 1 or 3")
                        .format(name=name, shape=tuple(t.shape)), _("pass [C, H, W] (as ToTensor gives) or [H, W]"))
    if t.is_floating_point() and not (t.isfinite().all() and t.min() >= 0 and t.max() <= 1):
        raise UserError(_("{name}: float values must lie in [0, 1] (as ToTensor gives)").format(name=name),
                        _("divide uint8 values by 255"))
    array = (t.float() * 255).round().byte() if t.is_floating_point() else t.to(torch.uint8)
    array = array.permute(1, 2, 0).numpy()  # CHW -> HWC, as PIL stores pixels
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def read_cv2(path: str) -> np.ndarray:
    """The file as OpenCV reads it (`cv2.imread`): [H, W, 3] uint8 in BGR order, with a one-line error where
    OpenCV is missing or cannot read it (imread itself returns None without saying why)."""
    try:
        import cv2
    except ImportError:
        raise UserError(_("--reader cv2 needs OpenCV"), _("pip install opencv-python-headless")) from None
    array = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if array is None:
        raise UserError(_("{path}: OpenCV cannot read this file").format(path=path),
                        _("use --reader pil, or convert it to PNG or JPEG"))
    return array
