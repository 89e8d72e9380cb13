"""`torchlab eval CKPT --corruptions`: accuracy on corrupted test images, read the way `predict` reads photos.

A seeded sample of the test split is corrupted with every corruption of data/corrupt.py at every severity,
each image goes through `predict`'s own preprocessing (data/photo.py), and the table gives the accuracy per
corruption and severity, the same sample clean, and their mean: the "corruption accuracy" of MNIST-C.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from torchlab.data import catalog
from torchlab.data.corrupt import CORRUPTIONS, SEVERITIES, corrupt, gray_image
from torchlab.data.photo import PhotoOptions
from torchlab.errors import UserError
from torchlab.tasks.predict import prepare_images, probabilities, score_checkpoint, scoring_setup

MIDDLE = 2  # the severity whose worst drop the table names


def sample(count: int, total: int, seed: int) -> torch.Tensor:
    """`count` test rows drawn without replacement by a seeded permutation, in ascending order."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def check(ckpt: dict, count: int) -> None:
    if ckpt["task"] not in catalog.NAMES or catalog.CHANNELS[ckpt["task"]] != 1:
        raise UserError(f"{ckpt['path']}: --corruptions needs a grayscale image classifier, not {ckpt['task']!r}",
                        "train one on fashion-mnist or mnist")
    if count < 1:
        raise UserError(f"--images {count}: must be at least 1", "e.g. --images 1000")


def model_inputs(ckpt: dict, x, seed: int, options: PhotoOptions, names) -> dict:
    """The model's inputs for the clean sample x (uint8 [N, H, W]) and every corruption and severity:
    {("clean", 0) or (name, severity): [N, 1, S, S] in [0, 1]}, each read as `predict` reads a photo."""
    inputs = {("clean", 0): prepare_images(ckpt, [gray_image(image / 255.0) for image in x], options)[0]}
    for name in names:
        for s in SEVERITIES:
            inputs[name, s] = prepare_images(ckpt, corrupt(x, name, s, seed), options)[0]
    return inputs


def corruption_table(ckpt: dict, data_dir: str | None, device_name: str, count: int = 1000, seed: int = 0,
                     options: PhotoOptions = PhotoOptions(), names=None, cache: dict | None = None) -> dict:
    """Clean and corrupted accuracy of a checkpoint on `count` test images; see the module's docstring.

    `cache` (a dict) keeps the prepared inputs for the next checkpoint of the same task and input size,
    which then skips the corrupting and the preprocessing, the slow part."""
    check(ckpt, count)
    started = time.perf_counter()
    names = list(names or CORRUPTIONS)
    model, rt, split, test, source = scoring_setup(ckpt, data_dir, device_name)
    rows = sample(count, len(test), seed)
    labels = test.labels[rows]
    key = (ckpt["task"], ckpt["model_config"].get("image_size", 28), source, count, seed, options, tuple(names))
    cache = {} if cache is None else cache
    if cache.get("key") != key:
        cache.update(key=key, inputs=model_inputs(ckpt, test.images[rows, 0].numpy(), seed, options, names))
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


def full_test_accuracy(ckpt: dict, data_dir: str | None, device_name: str) -> float:
    """The checkpoint's accuracy on its whole test split, scored as `torchlab eval` scores it."""
    result, *_ = score_checkpoint(ckpt, data_dir, device_name, 256)
    return result["acc"]


def table_text(r: dict) -> str:
    head = f"{'corruption':<12}" + "".join(f"{'severity ' + str(s):>12}" for s in SEVERITIES) + f"{'mean':>8}"
    lines = [f"{r['checkpoint']} ({r['task']}, {r['model']}): {r['images']} {r['split']} images, seed {r['seed']}, "
             "each read as `torchlab predict` reads a photo", head, f"{'clean':<12}{r['clean_acc']:>12.2%}"]
    for name, accs in r["corruptions"].items():
        lines.append(f"{name:<12}" + "".join(f"{a:>12.2%}" for a in accs) + f"{np.mean(accs):>8.2%}")
    below = f"{abs(r['gap']) * 100:.2f} points {'below' if r['gap'] >= 0 else 'above'} clean"
    lines.append(f"corruption accuracy {r['corruption_acc']:.2%} (mean of all), {below}; the worst at severity "
                 f"{MIDDLE} is {r['worst_middle']}, {r['worst_middle_drop'] * 100:.2f} points below clean "
                 f"({r['seconds']:.0f} s)")
    if "test_acc" in r:
        lines.append(f"whole {r['split']} split, clean, as `torchlab eval` scores it: {r['test_acc']:.2%}")
    return "\n".join(lines)
