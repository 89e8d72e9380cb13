"""Using a trained checkpoint on its own: score it on its test split, classify photos with it, measure it on
corrupted photos, or load a language model with its vocabulary.

A checkpoint carries the model name and config, the class names and the normalisation (or the vocabulary),
so nothing but the checkpoint (and, for scoring, the test split) is needed.

The corruption table (`torchlab eval CKPT --corruptions`): a seeded sample of the test split is corrupted
with every corruption of data/corrupt.py at every severity, each image goes through `predict`'s own
preprocessing (data/photo.py), and the table gives the accuracy per corruption and severity, the same
sample clean, and their mean: the "corruption accuracy" of MNIST-C.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from torchlab.data import catalog
from torchlab.data.corrupt import CORRUPTIONS, SEVERITIES, corrupt, gray_image
from torchlab.data.images import open_image, prepare_images, save_inputs
from torchlab.data.photo import PhotoOptions
from torchlab.data.text import Vocab
from torchlab.data.vision import eval_loader
from torchlab.engine import evaluate, per_class_accuracy
from torchlab.errors import UserError
from torchlab.i18n import _, pad
from torchlab.logger import confusion_figure, save_figure
from torchlab.models.registry import CLASSIFIER, LANGUAGE_MODEL, from_checkpoint, require_kind
from torchlab.runtime import for_scoring, pick_device

MIDDLE = 2  # the severity whose worst drop the corruption table names


def model_inputs(ckpt: dict, images: list[Image.Image], options: PhotoOptions) -> tuple[torch.Tensor, list[dict]]:
    """Photos -> the checkpoint's model input [N, C, S, S] in [0, 1], and the steps taken for each."""
    return prepare_images(images, ckpt["model_config"].get("image_size", 28), len(ckpt["mean"]), ckpt.get("task"),
                          options)


def probabilities(model: torch.nn.Module, ckpt: dict, x: torch.Tensor, device: torch.device,
                  chunk: int = 256) -> torch.Tensor:
    """Class probabilities [N, classes] for model inputs x [N, C, S, S] in [0, 1], in fixed chunks."""
    mean = torch.tensor(ckpt["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ckpt["std"]).view(1, -1, 1, 1)
    with torch.inference_mode():
        return torch.cat([model(((x[i : i + chunk] - mean) / std).to(device)).float().softmax(1).cpu()
                          for i in range(0, len(x), chunk)])


def predict_paths(ckpt: dict, paths: list[str], device: torch.device, top_k: int,
                  options: PhotoOptions = PhotoOptions(), show: str | None = None) -> list[dict]:
    """The top_k classes of each image file, with the preprocessing steps; `show` saves the model's inputs."""
    require_kind(ckpt, CLASSIFIER, "predict")
    model = from_checkpoint(ckpt, device)
    images = [open_image(Path(p)) for p in paths]  # all validated before any work
    return predict_images(model, ckpt, images, [str(p) for p in paths], device, top_k, options, show)


def predict_images(model: torch.nn.Module, ckpt: dict, images: list[Image.Image], names: list[str],
                   device: torch.device, top_k: int, options: PhotoOptions = PhotoOptions(),
                   show: str | None = None) -> list[dict]:
    """The top_k classes of each opened image (named in the results by `names`), read as the dataset was made."""
    x, steps = model_inputs(ckpt, images, options)
    if show:
        save_inputs(x, show)
    probs = probabilities(model, ckpt, x, device)
    k = min(top_k, probs.shape[1])
    results = []
    for name, p, done in zip(names, probs, steps):
        values, indices = p.topk(k)
        results.append({"image": name, "top": [{"class": ckpt["classes"][i], "index": int(i), "prob": float(v)}
                                              for v, i in zip(values, indices)], "preprocessing": done})
    return results


def language_model(ckpt: dict, device: torch.device, command: str = "generate") -> tuple[torch.nn.Module, Vocab]:
    """A language-model checkpoint's model (eval mode, on `device`) and vocabulary."""
    require_kind(ckpt, LANGUAGE_MODEL, command)
    model = from_checkpoint(ckpt, device)
    try:
        vocab = Vocab.from_dict(ckpt["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(_("{path}: not a usable language-model checkpoint ({error})")
                        .format(path=ckpt['path'], error=str(e).splitlines()[0][:120]),
                        _("use a checkpoint written by `torchlab train lm`")) from None
    return model, vocab


# --- the whole test split -----------------------------------------------------------------------


def scoring_setup(ckpt: dict, data_dir: str | None, device_name: str):
    """What scoring a checkpoint needs: (model, runtime, split name, split, source), checked against each other.

    Image folders without test/ are scored on val/ (or the same seeded held-out share as in training).
    """
    require_kind(ckpt, CLASSIFIER, "eval")
    device = pick_device(device_name)
    cfg = ckpt.get("train_config", {})
    if ckpt["task"] not in catalog.NAMES:
        raise UserError(_("{path}: checkpoint is for task {task}, which `eval` cannot score")
                        .format(path=ckpt['path'], task=repr(ckpt['task'])),
                        _("tasks: {tasks}").format(tasks=", ".join(catalog.NAMES)))
    channels = ckpt["model_config"].get("in_channels")
    if channels != catalog.CHANNELS[ckpt["task"]]:
        raise UserError(_("{path}: a model for {channels}-channel images cannot score {task} ({needed}-channel)")
                        .format(path=ckpt['path'], channels=channels, task=ckpt['task'],
                                needed=catalog.CHANNELS[ckpt['task']]),
                        _("the checkpoint's task and weights disagree"))
    info = catalog.load(ckpt["task"], data_dir or cfg.get("data_dir") or None,
                        size=ckpt["model_config"].get("image_size", 96), val_fraction=cfg.get("val_fraction", 0.2),
                        seed=cfg.get("seed", 0))
    split, test = ("test", info.test) if info.test is not None else ("val", info.val)
    model = from_checkpoint(ckpt, device)
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
        raise UserError(_("--batch-size {size}: must be at least 1").format(size=batch_size), _("e.g. --batch-size 1000"))
    result, split, _count, source = score_checkpoint(ckpt, data_dir, device_name, batch_size)
    path = Path(ckpt["path"])
    png = Path(out) if out else path.with_name(f"{path.stem}-confusion.png")
    try:
        save_figure(confusion_figure(result["confusion"], ckpt["classes"], f"{ckpt['task']} {split}: {path.name}"), png)
    except OSError as e:
        raise UserError(_("--out {path}: cannot write ({error})").format(path=png, error=e.strerror),
                        _("pass --out with a writable path")) from None
    per_class = dict(zip(ckpt["classes"], per_class_accuracy(result["confusion"])))
    return {"checkpoint": str(path), "task": ckpt["task"], "model": ckpt["model_name"], "source": source, "split": split,
            f"{split}_acc": result["acc"], f"{split}_loss": result["loss"], "count": result["count"],
            "per_class_acc": per_class, "confusion": result["confusion"], "confusion_png": str(png)}


def full_test_accuracy(ckpt: dict, data_dir: str | None, device_name: str) -> float:
    """The checkpoint's accuracy on its whole test split, scored as `torchlab eval` scores it."""
    result, *_rest = score_checkpoint(ckpt, data_dir, device_name, 256)
    return result["acc"]


# --- corrupted photos -----------------------------------------------------------------------------


def sample(count: int, total: int, seed: int) -> torch.Tensor:
    """`count` test rows drawn without replacement by a seeded permutation, in ascending order."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def check_corruptions(ckpt: dict, count: int) -> None:
    if ckpt["task"] not in catalog.NAMES or catalog.CHANNELS[ckpt["task"]] != 1:
        raise UserError(_("{path}: --corruptions needs a grayscale image classifier, not {task}")
                        .format(path=ckpt['path'], task=repr(ckpt['task'])), _("train one on fashion-mnist or mnist"))
    if count < 1:
        raise UserError(_("--images {count}: must be at least 1").format(count=count), _("e.g. --images 1000"))


def corrupted_inputs(ckpt: dict, x, seed: int, options: PhotoOptions, names) -> dict:
    """The model's inputs for the clean sample x (uint8 [N, H, W]) and every corruption and severity:
    {("clean", 0) or (name, severity): [N, 1, S, S] in [0, 1]}, each read as `predict` reads a photo."""
    inputs = {("clean", 0): model_inputs(ckpt, [gray_image(image / 255.0) for image in x], options)[0]}
    for name in names:
        for s in SEVERITIES:
            inputs[name, s] = model_inputs(ckpt, corrupt(x, name, s, seed), options)[0]
    return inputs


def corruption_table(ckpt: dict, data_dir: str | None, device_name: str, count: int = 1000, seed: int = 0,
                     options: PhotoOptions = PhotoOptions(), names=None, cache: dict | None = None) -> dict:
    """Clean and corrupted accuracy of a checkpoint on `count` test images; see the module's docstring.

    `cache` (a dict) keeps the prepared inputs for the next checkpoint of the same task and input size,
    which then skips the corrupting and the preprocessing, the slow part."""
    check_corruptions(ckpt, count)
    started = time.perf_counter()
    names = list(names or CORRUPTIONS)
    model, rt, split, test, source = scoring_setup(ckpt, data_dir, device_name)
    rows = sample(count, len(test), seed)
    labels = test.labels[rows]
    key = (ckpt["task"], ckpt["model_config"].get("image_size", 28), source, count, seed, options, tuple(names))
    cache = {} if cache is None else cache
    if cache.get("key") != key:
        cache.update(key=key, inputs=corrupted_inputs(ckpt, test.images[rows, 0].numpy(), seed, options, names))
    accuracy = {k: float((probabilities(model, ckpt, x, rt.device).argmax(1) == labels).float().mean())
                for k, x in cache["inputs"].items()}
    clean = accuracy["clean", 0]
    table = {name: [accuracy[name, s] for s in SEVERITIES] for name in names}
    mean = float(np.mean([a for accs in table.values() for a in accs]))
    worst = max(table, key=lambda name: clean - table[name][MIDDLE - 1])
    return {"checkpoint": ckpt["path"], "task": ckpt["task"], "model": ckpt["model_name"], "source": source,
            "split": split, "images": len(rows), "seed": seed, "clean_acc": clean, "corruptions": table,
            "corruption_acc": mean, "gap": clean - mean, "worst_middle": worst,
            "worst_middle_drop": clean - table[worst][MIDDLE - 1], "seconds": time.perf_counter() - started}


def table_text(r: dict) -> str:
    """The corruption table as `torchlab eval --corruptions` and benchmarks/robustness.py print it."""
    corruption, severity, mean, clean = _("corruption"), _("severity {s}"), _("mean"), _("clean")
    head = pad(corruption, 12) + "".join(pad(severity.format(s=s), 12, True) for s in SEVERITIES) + pad(mean, 8, True)
    lines = [_("{checkpoint} ({task}, {model}): {images} {split} images, seed {seed}, each read as `torchlab predict` "
               "reads a photo").format(checkpoint=r['checkpoint'], task=r['task'], model=r['model'], images=r['images'],
                                       split=r['split'], seed=r['seed']),
             head, f"{clean:<12}{r['clean_acc']:>12.2%}"]
    for name, accs in r["corruptions"].items():
        lines.append(f"{name:<12}" + "".join(f"{a:>12.2%}" for a in accs) + f"{np.mean(accs):>8.2%}")
    below = (_("{points} points below clean") if r['gap'] >= 0 else _("{points} points above clean")) \
        .format(points=f"{abs(r['gap']) * 100:.2f}")
    lines.append(_("corruption accuracy {acc} (mean of all), {below}; the worst at severity {middle} is {worst}, "
                   "{drop} points below clean ({seconds} s)")
                 .format(acc=f"{r['corruption_acc']:.2%}", below=below, middle=MIDDLE, worst=r['worst_middle'],
                         drop=f"{r['worst_middle_drop'] * 100:.2f}", seconds=f"{r['seconds']:.0f}"))
    if "test_acc" in r:
        lines.append(_("whole {split} split, clean, as `torchlab eval` scores it: {acc}")
                     .format(split=r['split'], acc=f"{r['test_acc']:.2%}"))
    return "\n".join(lines)
