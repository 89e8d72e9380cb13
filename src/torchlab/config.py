"""The training configuration: one dataclass, its command-line flags and TOML files.

Values are resolved in this order, later winning: the dataclass defaults, the
task's own defaults (TASK_DEFAULTS), the chosen `--recipe`, the
`--config FILE.toml`, then flags given on the command line.
"""

from __future__ import annotations

import argparse
import json
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchlab.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    try:
        import tomli as tomllib
    except ModuleNotFoundError:  # a bare machine (benchmarks/gpu.sh): only --config needs it
        tomllib = None


def opt(default, help: str, choices=None, flag: bool = True):
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag})


@dataclass
class TrainConfig:
    task: str = opt("fashion-mnist", "dataset to train on", flag=False)
    recipe: str = opt("notes", "named preset of the settings below")
    target: int = opt(94, "--recipe fast: the Fashion-MNIST test accuracy (%%) to reach in the least time",
                      [91, 93, 94])
    model: str = opt("notes-cnn", "network (see `torchlab models`)")
    epochs: int = opt(3, "passes over the training split")
    batch_size: int = opt(64, "training images per step (lm: parallel text streams)")
    # 256: on a 2-core EPYC Zen 3, chunks of 128-256 score 1.3-2x faster than chunks of 1000, whose
    # activations (1000 x 32 x 26 x 26 floats = 87 MB) no longer fit in the caches.
    eval_batch_size: int = opt(256, "images per step when evaluating (does not change results)")
    optimizer: str = opt("adam", "update rule", ["sgd", "adam", "adamw"])
    lr: float = opt(1e-3, "learning rate (the peak rate for one-cycle)")
    momentum: float = opt(0.9, "momentum for sgd (Nesterov)")
    weight_decay: float = opt(0.0, "L2 penalty (decoupled for adamw)")
    schedule: str = opt("constant", "learning-rate schedule over all steps", ["constant", "cosine", "onecycle"])
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing")
    augment: bool = opt(False, "random 2-pixel shifts (and flips where labels allow) while training")
    erase: float = opt(0.0, "with --augment: chance of blanking a random rectangle of each training image "
                            "(random erasing)")
    photo: float = opt(0.0, "train on photo-like changes at this strength, what predict's preprocessing cannot "
                            "fully undo (1: a turn of up to 15 degrees refitted to the frame, a zoom-in of up to 25%%, "
                            "blur up to sigma 1 and noise up to sigma 0.08 on half the images each; 0: off; not for "
                            "image-folder)")
    ema: float = opt(0.0, "validate, keep and test an exponential moving average of the weights with this "
                          "decay per step, e.g. 0.999 (0: off)")
    tta: bool = opt(False, "average predictions over the image and its mirror when evaluating")
    tta_shift: int = opt(0, "when evaluating, also score each image moved this many pixels diagonally, both "
                            "ways (a quarter of the vote each; 0: off); pays when training shifted the images")
    precision: str = opt("auto", "arithmetic for forward passes (bf16 autocast changes numbers; auto: whichever "
                                 "trains faster here, measured; bf16 is never tried where it is emulated)",
                         ["fp32", "bf16", "auto"])
    channels_last: str = opt("auto", "NHWC memory layout for convolutions (auto: whichever trains faster here, "
                                     "measured)", ["auto", "on", "off"])
    compile: str = opt("auto", "torch.compile the model (auto: on where it measured faster, compile time "
                               "included, for runs long enough to win it back)", ["auto", "on", "off"])
    threads: int = opt(0, "CPU threads (0: auto, the fastest measured here)")
    patience: int = opt(0, "stop after this many epochs without a better val accuracy (0: never)")
    val_size: int = opt(5000, "training images held out for validation (0: none; image-folder: see --val-fraction)")
    val_fraction: float = opt(0.2, "image-folder without a val/ sub-folder: share of each class held out (0: none)")
    image_size: int = opt(96, "image-folder: side in pixels of the square crops the model sees")
    test_every_epoch: bool = opt(False, "also score the test set after every epoch (for time-to-accuracy)")
    seed: int = opt(0, "seed for the split, initial weights, batch order and augmentation")
    device: str = opt("auto", "auto picks cuda, then mps, then cpu", ["auto", "cpu", "cuda", "mps"])
    max_steps: int = opt(0, "stop after this many training steps (0: no limit); for quick dry runs")
    log_every: int = opt(50, "steps between loss readings (each one syncs with the device)")
    data_dir: str = opt("", "folder holding the dataset files (see `torchlab data`)")
    run_dir: str = opt("", "where logs and checkpoints go (default: runs/TASK-MODEL-TIME)")


@dataclass
class LMTrainConfig:
    """`torchlab train lm`: a recurrent language model trained with truncated back-propagation through time."""

    task: str = opt("lm", "always lm", flag=False)
    corpus: str = opt("timemachine", "timemachine, tang, or the path of a text file")
    level: str = opt("char", "tokens: characters, or words with punctuation split off (Chinese: always characters)",
                     ["char", "word"])
    script: str = opt("simplified", "tang: convert to simplified characters with OpenCC, or keep the traditional ones",
                      ["simplified", "traditional"])
    encoding: str = opt("utf-8", "encoding of a corpus file (e.g. gb18030, latin-1)")
    cell: str = opt("lstm", "recurrent cell", ["rnn", "lstm", "gru"])
    impl: str = opt("torch", "torch: PyTorch's fused layers; scratch: torchlab's cells written from the equations",
                    ["torch", "scratch"])
    embed_size: int = opt(256, "size of the token embeddings")
    hidden_size: int = opt(512, "size of the hidden state of each layer")
    layers: int = opt(2, "stacked recurrent layers")
    dropout: float = opt(0.5, "dropout between layers and before the output layer")
    embed_dropout: float = opt(0.2, "dropout on the token embeddings")
    weight_drop: float = opt(0.3, "drop this fraction of the hidden-to-hidden weights in each training window "
                                  "(DropConnect, as in AWD-LSTM)")
    tie: bool = opt(False, "share the output layer's weights with the embedding (needs embed size = hidden size)")
    bptt: int = opt(64, "tokens per window of truncated back-propagation through time")
    clip: float = opt(1.0, "clip the gradient norm to this (0: no clipping)")
    ema: float = opt(0.0, "validate, keep and test an exponential moving average of the weights with this "
                          "decay per step, e.g. 0.99 (0: off)")
    epochs: int = opt(25, "passes over the training text")  # timemachine: val flat after epoch ~21 of 30
    batch_size: int = opt(32, "parallel text streams per step")
    eval_batch_size: int = opt(16, "parallel streams when evaluating (every token is scored once; each stream "
                                   "starts from a zero state, so this shifts perplexity slightly)")
    optimizer: str = opt("adamw", "update rule", ["sgd", "adam", "adamw"])
    lr: float = opt(3e-3, "learning rate (the peak rate for one-cycle)")
    momentum: float = opt(0.9, "momentum for sgd (Nesterov)")
    weight_decay: float = opt(0.1, "L2 penalty (decoupled for adamw)")
    schedule: str = opt("cosine", "learning-rate schedule over all steps", ["constant", "cosine", "onecycle"])
    precision: str = opt("auto", "arithmetic for forward passes (auto: whichever trains faster here, measured; "
                                 "bf16 is never tried where it is emulated)", ["fp32", "bf16", "auto"])
    threads: int = opt(0, "CPU threads (0: auto, the fastest measured here)")
    patience: int = opt(0, "stop after this many epochs without a better val perplexity (0: never)")
    seed: int = opt(0, "seed for the split of multi-document corpora, initial weights, window offsets, dropout")
    device: str = opt("auto", "auto picks cuda, then mps, then cpu", ["auto", "cpu", "cuda", "mps"])
    max_steps: int = opt(0, "stop after this many training steps (0: no limit); for quick dry runs")
    log_every: int = opt(50, "steps between loss readings (each one syncs with the device)")
    data_dir: str = opt("", "folder holding the corpus (see `torchlab train --help`)")
    run_dir: str = opt("", "where logs and checkpoints go (default: runs/lm-CORPUS-CELL-TIME)")


CONFIGS = (TrainConfig, LMTrainConfig)


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


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of TrainConfig and LMTrainConfig (shared names once); unset flags stay absent,
    so they override neither TOML files nor recipes."""
    seen = set()
    lm_group = parser.add_argument_group("language models (train lm)")
    lm_defaults = {f.name: f.default for f in dataclasses.fields(LMTrainConfig)}
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            if not f.metadata["flag"] or f.name in seen:
                continue
            seen.add(f.name)
            target = lm_group if cls is LMTrainConfig else parser
            name = "--" + f.name.replace("_", "-")
            lm_default = lm_defaults.get(f.name, f.default) if cls is TrainConfig else f.default
            also = f"; lm: {lm_default}" if lm_default != f.default else ""
            helptext = f.metadata["help"] + f" (default: {f.default}{also})"
            if isinstance(f.default, bool):
                target.add_argument(name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                    help=helptext)
                continue
            choices = list(RECIPES) if f.name == "recipe" else f.metadata["choices"]
            target.add_argument(name, type=type(f.default), choices=choices, default=argparse.SUPPRESS,
                                metavar=f.name.upper() if not choices else None, help=helptext)


def load_toml(path: str) -> dict[str, Any]:
    if tomllib is None:  # pragma: no cover
        raise UserError(f"--config {path}: reading TOML needs Python 3.11 or the tomli package", "pip install tomli")
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except OSError as e:
        raise UserError(f"--config {path}: cannot read ({e.strerror})", "check the path") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"--config {path}: not valid TOML ({e})", "fix the file") from None
    return {k.replace("-", "_"): v for k, v in values.items()}


def check_values(values: dict[str, Any], origin: str, cls: type = TrainConfig) -> None:
    """Reject unknown keys, wrong types and values outside their choices."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            other = next((c for c in CONFIGS if c is not cls and key in {f.name for f in dataclasses.fields(c)}), None)
            which = "language models (train lm)" if cls is LMTrainConfig else "image classification"
            raise UserError(f"{origin}: {key!r} is not a setting for {which}" if other else
                            f"{origin}: unknown setting {key!r}", "see `torchlab train --help` for the keys")
        f = fields[key]
        kind = type(f.default)
        if not isinstance(value, kind) and not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
            raise UserError(f"{origin}: {key} must be {kind.__name__}, got {value!r}", "fix the value")
        choices = list(RECIPES) if key == "recipe" else f.metadata["choices"]
        if choices and value not in choices:
            raise UserError(f"{origin}: {key} must be one of {', '.join(choices)}, got {value!r}", "fix the value")
    for key in ("epochs", "batch_size", "eval_batch_size", "log_every", "embed_size", "hidden_size", "layers", "bptt"):
        if key in values and values[key] < 1:
            raise UserError(f"{origin}: {key} must be at least 1, got {values[key]}", "fix the value")
    if "val_fraction" in values and not 0 <= values["val_fraction"] < 1:
        raise UserError(f"{origin}: val_fraction must be in [0, 1), got {values['val_fraction']}", "e.g. 0.2")
    if "image_size" in values and not 8 <= values["image_size"] <= 1024:
        raise UserError(f"{origin}: image_size must be between 8 and 1024, got {values['image_size']}", "e.g. 64")
    if "photo" in values and not 0 <= values["photo"] <= 2:
        raise UserError(f"{origin}: photo must be between 0 and 2, got {values['photo']}", "e.g. 1, or 0 for none")
    if "tta_shift" in values and values["tta_shift"] > 8:
        raise UserError(f"{origin}: tta_shift must be at most 8 pixels, got {values['tta_shift']}", "e.g. 1")
    if "ema" in values and not 0 <= values["ema"] < 1:
        raise UserError(f"{origin}: ema must be in [0, 1), got {values['ema']}", "e.g. 0.99, or 0 for no average")
    for key in ("dropout", "embed_dropout", "weight_drop", "erase"):
        if key in values and not 0 <= values[key] < 1:
            raise UserError(f"{origin}: {key} must be in [0, 1), got {values[key]}", "e.g. 0.3")
    for key in ("lr", "weight_decay", "label_smoothing", "val_size", "max_steps", "patience", "clip", "tta_shift"):
        if key in values and values[key] < 0:
            raise UserError(f"{origin}: {key} must not be negative, got {values[key]}", "fix the value")


def resolve(cli: dict[str, Any], toml_path: str | None = None):
    """Defaults < task defaults < recipe < TOML file < command-line flags; returns TrainConfig or LMTrainConfig."""
    file_values = load_toml(toml_path) if toml_path else {}
    task = cli.get("task", file_values.get("task", TrainConfig.task))
    cls = LMTrainConfig if task == "lm" else TrainConfig
    check_values(file_values, f"--config {toml_path}", cls)
    check_values(cli, "command line", cls)
    if cls is LMTrainConfig:
        return LMTrainConfig(**{**file_values, **cli})
    recipe = cli.get("recipe", file_values.get("recipe", "notes"))
    device = cli.get("device", file_values.get("device", "auto"))
    target = cli.get("target", file_values.get("target", TrainConfig.target))
    values = {**TASK_DEFAULTS.get(task, {}), **recipe_values(recipe, device, target), **file_values, **cli,
              "recipe": recipe}
    return TrainConfig(**values)


def save_toml(cfg, path: Path) -> None:
    """Write the resolved config so `--config` can replay the run."""
    lines = []
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value!r}")
    path.write_text("\n".join(lines) + "\n")
