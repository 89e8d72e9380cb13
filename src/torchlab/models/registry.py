"""Model names -> (config dataclass, module class), and size figures for `torchlab models`."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from torchlab.errors import UserError
from torchlab.models.cnn import NotesCNN, NotesCNNConfig, VGGConfig, VGGNet

@dataclasses.dataclass(frozen=True)
class ModelEntry:
    config_class: type
    model_class: type
    defaults: dict  # config values that differ from the dataclass defaults
    description: str


MODELS: dict[str, ModelEntry] = {
    "notes-cnn": ModelEntry(NotesCNNConfig, NotesCNN, {}, "the notes' network: conv5x5, conv3x3, ReLU, pool, linear"),
    "vgg-small": ModelEntry(VGGConfig, VGGNet, {}, "3 stages of 2x conv3x3-BN-ReLU (32/64/128), global pool"),
    "vgg-tiny": ModelEntry(VGGConfig, VGGNet, {"widths": (16, 32, 64)}, "vgg-small at half the width (16/32/64)"),
    "vgg-tiny-lean": ModelEntry(VGGConfig, VGGNet, {"widths": (16, 32, 64), "convs_per_stage": (1, 2, 2), "dropout": 0.0},
                                "vgg-tiny with one conv at full resolution, no dropout: for 2-epoch runs"),
    "vgg-mini": ModelEntry(VGGConfig, VGGNet, {"widths": (16, 32, 48), "convs_per_stage": (1, 2, 2), "dropout": 0.0},
                           "vgg-tiny-lean with a 48-wide last stage: for 2-epoch fp32 runs"),
    "vgg-lean": ModelEntry(VGGConfig, VGGNet, {"convs_per_stage": (1, 2, 2)},
                           "vgg-small with one conv at full resolution: 3/4 of its multiply-adds"),
}


def model_config(name: str, **overrides: Any):
    """The config dataclass for `name`, with `overrides` (e.g. in_channels) applied where it has the field."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}", "choose one of: " + ", ".join(MODELS))
    entry = MODELS[name]
    known = {f.name for f in dataclasses.fields(entry.config_class)}
    values = {**entry.defaults, **{k: v for k, v in overrides.items() if k in known}}
    return entry.config_class(**values)


def build_model(name: str, config: dict | Any) -> nn.Module:
    """Rebuild a model from its name and config (a dataclass or the dict stored in a checkpoint)."""
    if isinstance(config, dict):
        config = model_config(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    elif name not in MODELS:
        model_config(name)  # raises the UserError listing the known models
    return MODELS[name].model_class(config)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds for one image, counted on convolutions and linear layers with forward hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total
