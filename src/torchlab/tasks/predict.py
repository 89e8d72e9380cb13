"""`torchlab eval` and `torchlab predict`: use a trained checkpoint on its own.

A checkpoint carries the model name and config, the class names and the
normalisation, so nothing but the checkpoint (and, for `eval`, the test
split) is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from torchlab.data.vision import DATASETS, eval_loader, load_idx_dataset
from torchlab.engine import Runtime, evaluate, per_class_accuracy, pick_device
from torchlab.errors import UserError
from torchlab.logger import confusion_figure, format_confusion, save_figure
from torchlab.models.registry import build_model


def model_from_checkpoint(ckpt: dict, device: torch.device) -> torch.nn.Module:
    try:
        model = build_model(ckpt["model_name"], ckpt["model_config"])
        model.load_state_dict(ckpt["model_state"])
    except (RuntimeError, TypeError, KeyError) as e:
        raise UserError(f"{ckpt['path']}: weights do not fit model {ckpt['model_name']!r} ({str(e).splitlines()[0][:120]})",
                        "the checkpoint is damaged or from an incompatible version") from None
    return model.to(device).eval()


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning Pillow's errors into one-line messages."""
    try:
        img = Image.open(path)
        img.load()  # decode now, so a truncated file fails here
    except FileNotFoundError:
        raise UserError(f"{path}: no such file", "check the path") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read", "pass a PNG, JPEG, BMP or GIF file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: damaged image ({e})", "re-export or re-download the file") from None
    return img


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


def prepare(img: Image.Image, size: int, invert: str = "auto") -> np.ndarray:
    """Make a photo look like a dataset image: grayscale, light object on dark, square, `size` pixels.

    Fashion-MNIST items are light on a black background; a product photo is
    usually dark on white, so a light border means the image gets inverted.
    """
    gray = to_grayscale(ImageOps.exif_transpose(img) if img.format == "JPEG" else img)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if invert == "yes" or (invert == "auto" and border.mean() > 0.5):
        gray = 1.0 - gray
    h, w = gray.shape
    side = max(h, w)  # pad to a square with the background (now dark), keeping the aspect ratio
    canvas = np.zeros((side, side))
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = gray
    square = Image.fromarray((canvas * 255).round().astype(np.uint8))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0


def predict_paths(ckpt: dict, paths: list[str], device: torch.device, top_k: int, invert: str) -> list[dict]:
    model = model_from_checkpoint(ckpt, device)
    size = ckpt["model_config"].get("image_size", 28)
    mean = torch.tensor(ckpt["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ckpt["std"]).view(1, -1, 1, 1)
    arrays = [prepare(open_image(Path(p)), size, invert) for p in paths]  # all validated before any work
    x = (torch.from_numpy(np.stack(arrays))[:, None] - mean) / std  # [N, 1, size, size]
    with torch.inference_mode():
        probs = model(x.to(device)).float().softmax(1).cpu()
    k = min(top_k, probs.shape[1])
    results = []
    for path, p in zip(paths, probs):
        values, indices = p.topk(k)
        results.append({"image": path, "top": [{"class": ckpt["classes"][i], "index": int(i), "prob": float(v)}
                                              for v, i in zip(values, indices)]})
    return results


def evaluate_checkpoint(ckpt: dict, data_dir: str | None, device_name: str, batch_size: int, out: str | None) -> dict:
    """Score a checkpoint on the whole test split of its task and write the confusion-matrix PNG."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1", "e.g. --batch-size 1000")
    device = pick_device(device_name)
    cfg = ckpt.get("train_config", {})
    if ckpt["task"] not in DATASETS:
        raise UserError(f"{ckpt['path']}: checkpoint is for task {ckpt['task']!r}, which `eval` cannot score",
                        "tasks: " + ", ".join(DATASETS))
    spec = DATASETS[ckpt["task"]]
    _, test, source = load_idx_dataset(spec, data_dir or cfg.get("data_dir") or None)
    model = model_from_checkpoint(ckpt, device)
    rt = Runtime.choose(device, cfg.get("precision", "fp32"), cfg.get("channels_last", "auto"))
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = eval_loader(test, ckpt["mean"], ckpt["std"], device, batch_size)
    result = evaluate(model, loader.epoch(), rt, len(ckpt["classes"]), cfg.get("tta", False))
    path = Path(ckpt["path"])
    png = Path(out) if out else path.with_name(f"{path.stem}-confusion.png")
    try:
        save_figure(confusion_figure(result["confusion"], ckpt["classes"], f"{ckpt['task']} test: {path.name}"), png)
    except OSError as e:
        raise UserError(f"--out {png}: cannot write ({e.strerror})", "pass --out with a writable path") from None
    per_class = dict(zip(ckpt["classes"], per_class_accuracy(result["confusion"])))
    return {"checkpoint": str(path), "task": ckpt["task"], "model": ckpt["model_name"], "source": source,
            "test_acc": result["acc"], "test_loss": result["loss"], "count": result["count"],
            "per_class_acc": per_class, "confusion": result["confusion"], "confusion_png": str(png)}


def eval_text(r: dict) -> str:
    lines = [f"{r['checkpoint']} ({r['task']}, {r['model']}): test accuracy {r['test_acc']:.2%} "
             f"on {r['count']} images, loss {r['test_loss']:.4f}", "per-class accuracy:"]
    lines += [f"  {name:<12} {acc:.2%}" for name, acc in r["per_class_acc"].items()]
    lines += ["confusion matrix (rows: true class, columns: predicted):", format_confusion(r["confusion"], list(r["per_class_acc"])),
              f"confusion matrix image: {r['confusion_png']}"]
    return "\n".join(lines)
