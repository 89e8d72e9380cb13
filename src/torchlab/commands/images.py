"""`torchlab image`: one picture as Pillow, NumPy and torch each see it.

Three libraries, three conventions. Pillow's `img.size` is (W, H);
`np.asarray(img)` is (H, W, C), rows first and channels last ((H, W) for a
single band); `transforms.ToTensor()` gives (C, H, W), channels first, as
torch layers expect. ToTensor also changes values, depending on the mode:
rather than trusting the documentation, every report compares the tensor with
the array and says what happened.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import ToTensor

from torchlab import runinfo
from torchlab.data.images import open_image
from torchlab.errors import UserError
from torchlab.i18n import N_, _
from torchlab.logger import open_writer, say

BATCH_SIDE = 128  # every image is padded and resized to this square for the one batch grid
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits per value
LAYOUT = N_("size is Pillow's (W, H); np.asarray(img) is (H, W, C): rows, columns, channels last, "
          "or (H, W) for one band;\nToTensor()(img) is (C, H, W): channels first, as torch layers expect.")


def add_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help=_("image files: PNG, JPEG, GIF, TIFF, BMP..."))
    p.add_argument("--logdir", metavar="DIR", help=_("also log them to TensorBoard in DIR (added to what is there)"))
    p.add_argument("--reader", choices=["pil", "cv2"], default="pil",
                   help="pil: Pillow, as torchvision reads images; cv2: also read each file with OpenCV's "
                        "cv2.imread, as the notes do, and show its HWC array in BGR order")
    p.add_argument("--json", action="store_true", help=_("print a list of dicts instead of text"))


def run(args) -> int:
    images = [open_image(Path(p)) for p in args.paths]  # every file opened and decoded before any output
    reports = [describe(p, img) for p, img in zip(args.paths, images)]
    if args.reader == "cv2":
        for report, path, img in zip(reports, args.paths, images):
            report["cv2"] = describe_cv2(path, img)
    if args.logdir:
        log_images(Path(args.logdir), images, tag_names(args.paths))
    print(json.dumps(reports, indent=2) if args.json else "\n".join(map(report_text, reports)) + "\n" + _(LAYOUT))
    if args.logdir:
        say(_("logged {count} image(s) to {logdir} (tags image/<name>/array, image/<name>/tensor, images/batch); "
              "view them with: torchlab tensorboard {logdir}").format(count=len(images), logdir=args.logdir))
    return 0


def describe(path: str, img: Image.Image) -> dict:
    array = np.asarray(img)  # [H, W, C], or [H, W] for single-band modes (1, L, P, I;16, I, F)
    tensor = ToTensor()(img)  # [C, H, W]
    values = how_converted(array, tensor)
    return {"file": path, "format": img.format, "mode": img.mode, "bands": list(img.getbands()),
            "size": list(img.size),
            "array": {"shape": list(array.shape), "dtype": str(array.dtype)},
            "tensor": {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                       "min": float(tensor.min()), "max": float(tensor.max()), "values": values},
            "notes": value_notes(img, array, tensor, values) + mode_notes(img)}


def describe_cv2(path: str, img: Image.Image) -> dict:
    """What cv2.imread gives for the file, next to Pillow's RGB: the same HWC layout, the channels reversed."""
    from torchlab.data.images import read_cv2

    bgr = read_cv2(path)  # [H, W, 3] uint8, blue first
    rgb = np.array(ImageOps.exif_transpose(img).convert("RGB"))  # cv2 applies EXIF orientation; Pillow does not
    as_bgr = ToTensor()(bgr)  # [3, H, W] in [0, 1]: channel 0 is blue
    as_rgb = ToTensor()(rgb)  # channel 0 is red
    fixed = ToTensor()(np.ascontiguousarray(bgr[..., ::-1]))  # cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) does this
    y, x = bgr.shape[0] // 2, bgr.shape[1] // 2
    return {"array": {"shape": list(bgr.shape), "dtype": str(bgr.dtype), "order": "BGR"},
            "tensor_shape": list(as_bgr.shape), "centre_pixel_bgr": bgr[y, x].tolist(),
            "centre_pixel_pil_rgb": rgb[y, x].tolist(),
            "channel_means_as_read": [round(float(m), 4) for m in as_bgr.mean((1, 2))],
            "channel_means_rgb": [round(float(m), 4) for m in as_rgb.mean((1, 2))],
            "max_difference_bgr_vs_rgb": float((as_bgr - as_rgb).abs().max()),
            "max_difference_after_bgr2rgb": float((fixed - as_rgb).abs().max())}


def cv2_text(c: dict) -> list[str]:
    a = c["array"]
    return [f"  cv2.imread(path)  shape {tuple(a['shape'])}  {a['dtype']}  channels in {a['order']} order "
            f"(centre pixel {c['centre_pixel_bgr']}; Pillow's RGB: {c['centre_pixel_pil_rgb']})",
            f"  ToTensor()(that)  shape {tuple(c['tensor_shape'])}: channel 0 is blue, not red; channel means "
            f"{c['channel_means_as_read']} against RGB's {c['channel_means_rgb']}",
            f"  fed to a model trained on RGB, red and blue are swapped: up to {c['max_difference_bgr_vs_rgb']:.3f} "
            "per value away from what it learned on; Normalize's per-channel mean and std land on the wrong "
            "channels",
            f"  cv2.cvtColor(array, cv2.COLOR_BGR2RGB) first: difference {c['max_difference_after_bgr2rgb']:g}"]


def how_converted(array: np.ndarray, tensor: torch.Tensor) -> str:
    """Measure what ToTensor did to the values, by comparing the tensor with the array."""
    c, h, w = tensor.shape
    raw = torch.from_numpy(array.astype(np.float64)).reshape(h, w, c).permute(2, 0, 1)  # [C, H, W]
    t = tensor.double()
    if array.dtype == np.uint8 and torch.allclose(t, raw / 255, rtol=0, atol=1e-6):
        return "array / 255"
    if torch.equal(t, raw):
        return "unchanged"
    if tensor.dtype == torch.int16 and torch.equal(t, (raw + 32768) % 65536 - 32768):
        return "wrapped to int16"  # 16-bit values read as signed: 40000 becomes -25536
    if tensor.is_floating_point() and torch.allclose(t, (raw % 256) / 255, rtol=0, atol=1e-6):
        return "low byte / 255"  # wider values cast to uint8, keeping only their low 8 bits
    return "changed"


def value_notes(img: Image.Image, array: np.ndarray, tensor: torch.Tensor, values: str) -> list[str]:
    if values == "unchanged" and array.dtype == bool:
        return ["1-bit: the array is bool, the tensor 0.0 or 1.0"]
    if values == "unchanged":
        scale = "/ 65535" if img.mode.startswith("I;16") else "by their range"
        return [f"mode {img.mode}: ToTensor kept the raw values as {str(tensor.dtype)[6:]}; it scales only 8-bit "
                f"images to [0, 1], so scale these yourself ({scale})"]
    if values == "array / 255":
        return []
    why = {"wrapped to int16": "it reads 16-bit images as int16, so values above 32767 wrap to negative",
           "low byte / 255": "it cast them to 8 bits, keeping only the low byte, then divided by 255"}
    return [f"ToTensor changed the values ({why.get(values, 'unexpectedly')}): array {array.min()}..{array.max()}, "
            f"tensor {tensor.min().item():g}..{tensor.max().item():g}; "
            "use torch.from_numpy(np.asarray(img).astype(np.float32)) instead"]


def mode_notes(img: Image.Image) -> list[str]:
    notes = []
    if img.mode in ("P", "PA"):
        keep = " ('RGBA' to keep its transparency)" if "transparency" in img.info or img.mode == "PA" else ""
        notes.append(f"palette image: the values are palette indices, not colours; use img.convert('RGB'){keep} first")
    if img.mode == "CMYK":
        notes.append("CMYK: the 4 channels are ink amounts (cyan, magenta, yellow, black), not RGB + alpha; "
                     "use img.convert('RGB') first")
    if img.mode in ("YCbCr", "LAB", "HSV"):
        notes.append(f"{img.mode}: 3 channels that are not R, G, B; use img.convert('RGB') first")
    if img.mode in ("LA", "PA", "RGBA"):
        notes.append("the last channel is alpha (opacity); img.convert('RGB' or 'L') drops it")
    orientation = img.getexif().get(0x0112, 1)  # the EXIF Orientation tag
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation}: viewers rotate or flip it, but Pillow and ToTensor give the "
                     "stored pixels; use ImageOps.exif_transpose(img) first")
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"{img.n_frames} frames: only the first is read (img.seek(i) for the others)")
    return notes


def report_text(r: dict) -> str:
    t = r["tensor"]
    lines = [_("{file}: {format}, mode {mode} (bands {bands}), size {w} x {h} (W x H)").format(
                 file=r["file"], format=r["format"], mode=r["mode"], bands=", ".join(r["bands"]), w=r["size"][0],
                 h=r["size"][1]),
             f"  np.asarray(img)  shape {tuple(r['array']['shape'])}  {r['array']['dtype']}",
             f"  ToTensor()(img)  shape {tuple(t['shape'])}  {t['dtype']}  min {number(t['min'], t['dtype'])}  "
             f"max {number(t['max'], t['dtype'])}  (values: {t['values']})"]
    lines += cv2_text(r["cv2"]) if "cv2" in r else []
    return "\n".join(lines + ["  " + _("note: {note}").format(note=n) for n in r["notes"]])


def number(value: float, dtype: str) -> str:
    return repr(round(value, 6)) if dtype.startswith(("float", "bfloat")) else str(int(value))


def tag_names(paths: list[str]) -> list[str]:
    """File stems, made unique (a.png and a.jpg, or two folders' 1.png, would share a tag)."""
    names = []
    for p in paths:
        stem, name, n = Path(p).stem, Path(p).stem, 1
        while name in names:
            n += 1
            name = f"{stem}-{n}"
        names.append(name)
    return names


def for_display(img: Image.Image) -> Image.Image:
    """An 8-bit L, RGB or RGBA version: TensorBoard shows only 1, 3 or 4 channels of 0..255."""
    if img.mode in ("L", "RGB", "RGBA"):
        return img
    if img.mode in WIDE_MODES:  # stretch the range actually used onto 0..255
        a = np.asarray(img, dtype=np.float64)
        lo, span = a.min(), (a.max() - a.min()) or 1.0
        return Image.fromarray(np.round((a - lo) / span * 255).astype(np.uint8))
    if img.mode in ("LA", "PA") or "transparency" in img.info:
        return img.convert("RGBA")
    return img.convert("L" if img.mode == "1" else "RGB")  # P, CMYK, YCbCr, LAB, HSV...


def log_images(logdir: Path, images: list[Image.Image], names: list[str]) -> None:
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(_("--logdir {logdir}: cannot create ({error})").format(logdir=logdir, error=e.strerror),
                        _("choose a writable folder")) from None
    if not runinfo.is_run(logdir):  # `torchlab runs`: a demo's logs, not a run (a run's folder stays a run)
        runinfo.write_demo(logdir, "image")
    writer = open_writer(logdir)  # a new event file: an existing logdir keeps its old runs
    batch = []
    for name, img in zip(names, images):
        shown = for_display(img)
        array = np.asarray(shown)  # [H, W, C] uint8, or [H, W] for L
        writer.add_image(f"image/{name}/array", array, 0, dataformats="HWC" if array.ndim == 3 else "HW")
        writer.add_image(f"image/{name}/tensor", ToTensor()(shown), 0, dataformats="CHW")  # [C, H, W] in [0, 1]
        square = ImageOps.pad(shown.convert("RGB"), (BATCH_SIDE, BATCH_SIDE))  # keeps the aspect ratio
        batch.append(ToTensor()(square))  # [3, BATCH_SIDE, BATCH_SIDE]
    writer.add_images("images/batch", torch.stack(batch), 0, dataformats="NCHW")  # [N, 3, side, side]: one grid
    writer.close()
