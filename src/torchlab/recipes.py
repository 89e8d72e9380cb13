"""Named presets of the image-classification settings: each task's own defaults, and the `--recipe` tables.

config.py applies them in `resolve`: the dataclass defaults, then TASK_DEFAULTS for the task, then the
recipe's values (`recipe_values`), then the TOML file and the flags.
"""

from __future__ import annotations

from typing import Any


# Where a dataset needs other settings than the notes' Fashion-MNIST ones.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # A few hundred photos: a batch-norm CNN, strong augmentation and many short epochs.
    "image-folder": {
        "model": "vgg-small",
        "epochs": 40,
        "batch_size": 32,
        "eval_batch_size": 256,
        "optimizer": "sgd",
        "lr": 0.05,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "augment": True,  # random resized crops + flips
    },
}

RECIPES: dict[str, dict[str, Any]] = {
    # The notes' settings: their network, Adam at 1e-3, batch 64, no augmentation.
    "notes": {},
    # Reaches >= 93% test accuracy on Fashion-MNIST: 7 minutes of training on a 2-core EPYC Zen 4 (bf16),
    # 24 on a Zen 3 (fp32, 93.73%).
    "strong": {
        "model": "vgg-small",  # BN + 3x3 convs: accurate per multiply-add
        "epochs": 12,  # 10 epochs reach ~93.4-93.6% (Zen 4), 12 leave a margin
        "batch_size": 128,  # large enough to keep both cores busy, small enough to converge fast
        "optimizer": "sgd",  # Nesterov SGD + one-cycle converges quickly with BN
        "lr": 0.1,
        "weight_decay": 5e-4,
        "schedule": "onecycle",  # warm up then anneal to ~0: best accuracy for a fixed budget
        "label_smoothing": 0.1,  # softer targets generalise a little better
        "augment": True,  # shifts + flips: the main defence against overfitting
        "tta": True,  # flipped copy at test time: +0.2-0.3% for one extra forward pass
        # precision, layout, compile and threads stay "auto": measured on the machine (runtime.py)
    },
    "fast": {},  # depends on the device: see FAST below
}

# `--recipe fast`: the least training time to reach `--target` test accuracy on Fashion-MNIST, tuned with
# benchmarks/time_to_accuracy.py. FAST holds what every device shares; the device's precision, layout,
# compile and threads are measured on it (runtime.py). FAST_TARGETS gives the network and budget for each
# target per kind of device (`device_kind`): what pays with native bf16 differs from what pays in fp32.
FAST: dict[str, Any] = {
    "optimizer": "sgd",  # Nesterov SGD + one-cycle: the fastest to converge with batch norm
    "weight_decay": 5e-4,
    "schedule": "onecycle",  # short warm-up, then annealing to ~0: the best final accuracy per epoch
    "label_smoothing": 0.1,  # softer targets generalise a little better
}
# Test-time augmentation pays only after training on the same changes: a model that never saw a mirrored
# or shifted image scores worse on them (vgg-small, 4 clean epochs: 92.96% plain, 92.65% with mirrors).
CLEAN = {"augment": False, "erase": 0.0, "tta": False, "tta_shift": 0}
FAST_TARGETS: dict[str, dict[int, dict[str, Any]]] = {
    "cpu-bf16": {  # CPUs with native bf16 (AVX512-BF16 or AMX), tuned on an AMD EPYC Zen 4
        # Full-resolution convolutions are the slow ones on the CPU (memory-bound): one stage-1 conv at 16
        # channels trains at ~1.4x vgg-tiny's rate, and 2 epochs are too few to need augmentation.
        91: {"model": "vgg-tiny-lean", "epochs": 2, "batch_size": 128, "lr": 0.2, **CLEAN},
        # vgg-lean (one full-resolution conv): 6 clean epochs of it take about as long as 5 of vgg-small.
        93: {"model": "vgg-lean", "epochs": 6, "batch_size": 256, "lr": 0.2, **CLEAN},
        # Longer: shifts, flips and random erasing keep the extra epochs from overfitting, and then scoring
        # mirrored and 1-pixel-shifted copies too adds ~0.2%.
        94: {"model": "vgg-small", "epochs": 15, "batch_size": 256, "lr": 0.2, "augment": True, "erase": 0.25,
             "tta": True, "tta_shift": 1},
    },
    "cpu": {  # CPUs that compute in fp32 (bf16 emulated), tuned on an AMD EPYC Zen 3 (AVX2)
        # In fp32 the small convolutions cost relatively more: narrower last stages, same epochs. vgg-mini
        # trains ~20% faster than vgg-tiny-lean and ended at 91.06-91.19% (seeds 0-2).
        91: {"model": "vgg-mini", "epochs": 2, "batch_size": 128, "lr": 0.2, **CLEAN},
        # Narrower or shallower variants of vgg-lean (3/5 or 2/3 of its multiply-adds) or fewer epochs ended
        # at 92.6-93.06% (README, Benchmarks): 93% needs vgg-lean's 6 epochs in fp32 too.
        93: {"model": "vgg-lean", "epochs": 6, "batch_size": 256, "lr": 0.2, **CLEAN},
        # Not yet tuned in fp32: the bf16 table's recipe.
        94: {"model": "vgg-small", "epochs": 15, "batch_size": 256, "lr": 0.2, "augment": True, "erase": 0.25,
             "tta": True, "tta_shift": 1},
    },
    "gpu": {  # large batches keep a GPU busy; the rate grows with them (not yet measured on a GPU)
        91: {"model": "vgg-tiny", "epochs": 3, "batch_size": 512, "lr": 0.4, **CLEAN},
        93: {"model": "vgg-small", "epochs": 6, "batch_size": 512, "lr": 0.4, **CLEAN},
        94: {"model": "vgg-small", "epochs": 16, "batch_size": 512, "lr": 0.4, "augment": True, "erase": 0.25,
             "tta": True, "tta_shift": 1},
    },
}


def device_kind(device: str) -> str:
    """Which FAST_TARGETS table suits `device` (a --device value): "gpu" for CUDA and MPS; for the CPU,
    "cpu-bf16" where bf16 measured faster than fp32 here (hardware.py), else "cpu"."""
    import torch

    from torchlab import hardware
    from torchlab.runtime import pick_device

    picked = pick_device(device)
    if picked.type != "cpu":
        return "gpu"
    return "cpu-bf16" if hardware.bf16_speedup(torch.device("cpu")) > 1 else "cpu"


def recipe_values(recipe: str, device: str, target: int = 94) -> dict[str, Any]:
    """The settings of a recipe; `fast` depends on the kind of device and on the accuracy target."""
    if recipe != "fast":
        return RECIPES[recipe]
    return {**FAST, **FAST_TARGETS[device_kind(device)][target]}
