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

from torchlab.data import catalog
from torchlab.data.photo import FRAMINGS, PhotoOptions, prepare_gray
from torchlab.data.vision import eval_loader
from torchlab.engine import evaluate, per_class_accuracy
from torchlab.runtime import for_scoring, pick_device
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
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an image file", "pass the image files inside it") from None
    except Image.DecompressionBombError as e:
        raise UserError(f"{path}: refused, too many pixels ({e})", "downscale the image first") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read", "pass a PNG, JPEG, BMP or GIF file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: damaged image ({e})", "re-export or re-download the file") from None
    return img


def prepare_rgb(img: Image.Image, size: int, task: str) -> np.ndarray:
    """A photo for a colour model, as its evaluation saw images: [3, size, size] in [0, 1].

    Image-folder models were scored on the central crop of images resized to
    8/7 of `size`; CIFAR-10 images are whole objects, so only resize and crop.
    """
    from torchlab.data.folder import square, stored_size

    rgb = square(ImageOps.exif_transpose(img).convert("RGB"), stored_size(size) if task == "image-folder" else size)
    rgb = rgb.crop(centre_box(rgb.width, size))
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


def centre_box(side: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the central size x size window, placed as vision.centre_crop places it."""
    start = (side - size) // 2
    return start, start, start + size, start + size


def prepare_images(ckpt: dict, images: list[Image.Image], options: PhotoOptions) -> tuple[torch.Tensor, list[dict]]:
    """Photos -> the model's input [N, C, size, size] in [0, 1], made to look like the dataset's images,
    and the steps taken for each (see data/photo.py)."""
    size = ckpt["model_config"].get("image_size", 28)
    if len(ckpt["mean"]) == 3:  # colour models: resized and cropped as their evaluation saw images
        arrays = np.stack([prepare_rgb(img, size, ckpt["task"]) for img in images])
        return torch.from_numpy(arrays), [{"resized_and_cropped": size} for _ in images]
    style = FRAMINGS.get(ckpt.get("task"), "fill")
    prepared = [prepare_gray(img, size, style, options) for img in images]
    return torch.from_numpy(np.stack([a for a, _ in prepared]))[:, None], [steps for _, steps in prepared]


def probabilities(model: torch.nn.Module, ckpt: dict, x: torch.Tensor, device: torch.device,
                  chunk: int = 256) -> torch.Tensor:
    """Class probabilities [N, classes] for model inputs x [N, C, S, S] in [0, 1], in fixed chunks."""
    mean = torch.tensor(ckpt["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ckpt["std"]).view(1, -1, 1, 1)
    with torch.inference_mode():
        return torch.cat([model(((x[i : i + chunk] - mean) / std).to(device)).float().softmax(1).cpu()
                          for i in range(0, len(x), chunk)])


def save_inputs(x: torch.Tensor, path: str) -> None:
    """--show: the model-sized inputs [N, C, S, S] side by side in one PNG, exactly the model's pixels."""
    strip = torch.cat(list(x), dim=2)  # [C, S, N * S]
    array = (strip.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).squeeze(2).numpy()
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    except (OSError, ValueError) as e:
        raise UserError(f"--show {path}: cannot write ({getattr(e, 'strerror', None) or e})",
                        "pass --show with a writable .png path") from None


def steps_text(steps: dict) -> str:
    """One short note of what preprocessing changed, for the text output (the JSON has every detail)."""
    done = []
    if steps.get("inverted"):
        done.append("inverted")
    if steps.get("levels", {}).get("applied"):
        done.append(f"background {steps['levels']['background']:.2f} -> 0")
    if steps.get("frame", {}).get("applied"):
        left, top, right, bottom = steps["frame"]["item_box"]
        done.append(f"item {right - left}x{bottom - top} px framed")
    return f"  ({'; '.join(done)})" if done else ""


def predict_paths(ckpt: dict, paths: list[str], device: torch.device, top_k: int,
                  options: PhotoOptions = PhotoOptions(), show: str | None = None) -> list[dict]:
    model = model_from_checkpoint(ckpt, device)
    images = [open_image(Path(p)) for p in paths]  # all validated before any work
    x, steps = prepare_images(ckpt, images, options)
    if show:
        save_inputs(x, show)
    probs = probabilities(model, ckpt, x, device)
    k = min(top_k, probs.shape[1])
    results = []
    for path, p, done in zip(paths, probs, steps):
        values, indices = p.topk(k)
        results.append({"image": path, "top": [{"class": ckpt["classes"][i], "index": int(i), "prob": float(v)}
                                              for v, i in zip(values, indices)], "preprocessing": done})
    return results


def scoring_setup(ckpt: dict, data_dir: str | None, device_name: str):
    """What scoring a checkpoint needs: (model, runtime, split name, split, source), checked against each other.

    Image folders without test/ are scored on val/ (or the same seeded held-out share as in training).
    """
    device = pick_device(device_name)
    cfg = ckpt.get("train_config", {})
    if ckpt["task"] not in catalog.NAMES:
        raise UserError(f"{ckpt['path']}: checkpoint is for task {ckpt['task']!r}, which `eval` cannot score",
                        "tasks: " + ", ".join(catalog.NAMES))
    channels = ckpt["model_config"].get("in_channels")
    if channels != catalog.CHANNELS[ckpt["task"]]:
        raise UserError(f"{ckpt['path']}: a model for {channels}-channel images cannot score {ckpt['task']} "
                        f"({catalog.CHANNELS[ckpt['task']]}-channel)", "the checkpoint's task and weights disagree")
    info = catalog.load(ckpt["task"], data_dir or cfg.get("data_dir") or None,
                        size=ckpt["model_config"].get("image_size", 96), val_fraction=cfg.get("val_fraction", 0.2),
                        seed=cfg.get("seed", 0))
    split, test = ("test", info.test) if info.test is not None else ("val", info.val)
    model = model_from_checkpoint(ckpt, device)
    rt = for_scoring(device, cfg)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, rt, split, test, info.source


def score_checkpoint(ckpt: dict, data_dir: str | None, device_name: str, batch_size: int, keep: bool = False):
    """Score a checkpoint on the whole test split of its task, with the test-time augmentation it was trained
    for; returns (engine.evaluate's result, split name, split, source)."""
    model, rt, split, test, source = scoring_setup(ckpt, data_dir, device_name)
    cfg = ckpt.get("train_config", {})
    loader = eval_loader(test, ckpt["mean"], ckpt["std"], rt.device, batch_size)
    result = evaluate(model, loader.epoch(), rt, len(ckpt["classes"]), cfg.get("tta", False), cfg.get("tta_shift", 0),
                      keep)
    return result, split, test, source


def evaluate_checkpoint(ckpt: dict, data_dir: str | None, device_name: str, batch_size: int, out: str | None) -> dict:
    """Score a checkpoint on the whole test split of its task and write the confusion-matrix PNG."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1", "e.g. --batch-size 1000")
    result, split, _, source = score_checkpoint(ckpt, data_dir, device_name, batch_size)
    path = Path(ckpt["path"])
    png = Path(out) if out else path.with_name(f"{path.stem}-confusion.png")
    try:
        save_figure(confusion_figure(result["confusion"], ckpt["classes"], f"{ckpt['task']} {split}: {path.name}"), png)
    except OSError as e:
        raise UserError(f"--out {png}: cannot write ({e.strerror})", "pass --out with a writable path") from None
    per_class = dict(zip(ckpt["classes"], per_class_accuracy(result["confusion"])))
    return {"checkpoint": str(path), "task": ckpt["task"], "model": ckpt["model_name"], "source": source, "split": split,
            f"{split}_acc": result["acc"], f"{split}_loss": result["loss"], "count": result["count"],
            "per_class_acc": per_class, "confusion": result["confusion"], "confusion_png": str(png)}


def eval_text(r: dict) -> str:
    split = r["split"]
    lines = [f"{r['checkpoint']} ({r['task']}, {r['model']}): {split} accuracy {r[split + '_acc']:.2%} "
             f"on {r['count']} images, loss {r[split + '_loss']:.4f}", "per-class accuracy:"]
    lines += [f"  {name:<12} {acc:.2%}" for name, acc in r["per_class_acc"].items()]
    lines += ["confusion matrix (rows: true class, columns: predicted):", format_confusion(r["confusion"], list(r["per_class_acc"])),
              f"confusion matrix image: {r['confusion_png']}"]
    return "\n".join(lines)
