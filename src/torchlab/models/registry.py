"""Model names -> (config dataclass, module class), rebuilding a model from a checkpoint, and size figures.

Two kinds of model: the image classifiers of MODELS (what `torchlab train IMAGE-TASK --model` takes) and the
language models of LANGUAGE_MODELS, named "lm-<cell>" as `torchlab train lm` stores them in its checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from torchlab.errors import UserError
from torchlab.i18n import N_, _
from torchlab.models.cnn import NotesCNN, NotesCNNConfig, VGGConfig, VGGNet
from torchlab.models.rnn import LanguageModel, LMConfig, Recurrent

CLASSIFIER, LANGUAGE_MODEL = "image classifier", "language model"
DEFAULT_VOCAB = 100  # the vocabulary the language models are sized for when no checkpoint says otherwise


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    config_class: type
    model_class: type
    defaults: dict  # config values that differ from the dataclass defaults
    description: str  # English, marked for translation: shown as _(description)


MODELS: dict[str, ModelEntry] = {
    "notes-cnn": ModelEntry(NotesCNNConfig, NotesCNN, {}, N_("the notes' network: conv5x5, conv3x3, ReLU, pool, linear")),
    "vgg-small": ModelEntry(VGGConfig, VGGNet, {}, N_("3 stages of 2x conv3x3-BN-ReLU (32/64/128), global pool")),
    "vgg-tiny": ModelEntry(VGGConfig, VGGNet, {"widths": (16, 32, 64)}, N_("vgg-small at half the width (16/32/64)")),
    "vgg-tiny-lean": ModelEntry(VGGConfig, VGGNet, {"widths": (16, 32, 64), "convs_per_stage": (1, 2, 2), "dropout": 0.0},
                                N_("vgg-tiny with one conv at full resolution, no dropout: for 2-epoch runs")),
    "vgg-mini": ModelEntry(VGGConfig, VGGNet, {"widths": (16, 32, 48), "convs_per_stage": (1, 2, 2), "dropout": 0.0},
                           N_("vgg-tiny-lean with a 48-wide last stage: for 2-epoch fp32 runs")),
    "vgg-lean": ModelEntry(VGGConfig, VGGNet, {"convs_per_stage": (1, 2, 2)},
                           N_("vgg-small with one conv at full resolution: 3/4 of its multiply-adds")),
}

LANGUAGE_MODELS: dict[str, ModelEntry] = {
    f"lm-{cell}": ModelEntry(LMConfig, LanguageModel, {"vocab_size": DEFAULT_VOCAB, "cell": cell}, description)
    for cell, description in (("rnn", N_("embedding (256), 2 tanh RNN layers (512), linear decoder")),
                              ("lstm", N_("embedding (256), 2 LSTM layers (512), linear decoder: `train lm`'s default")),
                              ("gru", N_("embedding (256), 2 GRU layers (512), linear decoder")))
}

ENTRIES = {**MODELS, **LANGUAGE_MODELS}


def config_of(name: str, entries: dict[str, ModelEntry], overrides: dict) -> Any:
    """entries[name]'s config dataclass with `overrides` applied where it has the field (lists read as tuples,
    as JSON-like configs give them)."""
    if name not in entries:
        raise UserError(_("unknown model {name}").format(name=repr(name)), _("choose one of: {names}").format(names=", ".join(entries)))
    entry = entries[name]
    known = {f.name for f in dataclasses.fields(entry.config_class)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if k in known}
    return entry.config_class(**{**entry.defaults, **given})


def model_config(name: str, **overrides: Any):
    """The config dataclass of the image classifier `name`, with `overrides` (e.g. in_channels) applied where it
    has the field. Language models are refused: image training is what passes names here."""
    if name in LANGUAGE_MODELS:
        raise UserError(_("model {name} is a language model, not an image classifier").format(name=repr(name)),
                        _("train it with `torchlab train lm --cell {cell}`; image classifiers: {models}")
                        .format(cell=name[3:], models=", ".join(MODELS)))
    return config_of(name, MODELS, overrides)


def build_model(name: str, config: dict | Any) -> nn.Module:
    """Rebuild any model from its name and config (a dataclass or the dict stored in a checkpoint)."""
    if isinstance(config, dict):
        config = config_of(name, ENTRIES, config)
    elif name not in ENTRIES:
        config_of(name, ENTRIES, {})  # raises the UserError listing the known models
    return ENTRIES[name].model_class(config)


def kind_of(ckpt: dict) -> str:
    return LANGUAGE_MODEL if ckpt.get("task") == "lm" or ckpt["model_name"] in LANGUAGE_MODELS else CLASSIFIER


def require_kind(ckpt: dict, wanted: str, command: str) -> None:
    """A one-line error when a checkpoint holds the other kind of model than `torchlab COMMAND` works with."""
    found = kind_of(ckpt)
    if found == wanted:
        return
    path = ckpt["path"]
    task = f"task {ckpt.get('task')!r}" + (", not 'lm'" if wanted == LANGUAGE_MODEL else "")
    use = f"torchlab predict {path} IMAGE" if found == CLASSIFIER else f"torchlab generate {path} --prompt TEXT"
    train = "torchlab train lm" if wanted == LANGUAGE_MODEL else "torchlab train IMAGE-TASK"
    raise UserError(_("{path}: checkpoint is for {task}: {found} ({model}), and `torchlab {command}` needs {wanted}")
                    .format(path=path, task=task, found=article(found), model=ckpt['model_name'], command=command,
                            wanted=article(wanted)),
                    _("use this one with `{use}`, or pass {wanted} from `{train}`")
                    .format(use=use, wanted=article(wanted), train=train))


def article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def from_checkpoint(ckpt: dict, device: torch.device) -> nn.Module:
    """The checkpoint's model, any kind, with its weights, on `device`, in eval mode; weights that do not fit
    the stored name and config are a one-line UserError, not a traceback."""
    noun = kind_of(ckpt).replace(" ", "-")
    try:
        model = build_model(ckpt["model_name"], ckpt["model_config"])
        model.load_state_dict(ckpt["model_state"])
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise UserError(_("{path}: not a usable {noun} checkpoint: the weights do not fit model {model} ({error})")
                        .format(path=ckpt['path'], noun=noun, model=repr(ckpt['model_name']),
                                error=str(e).splitlines()[0][:120]),
                        _("the checkpoint is damaged or from an incompatible version")) from None
    return model.to(device).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> int:
    """Multiply-adds for one input of `input_shape` (an image [C, H, W], or token ids [T] with dtype=torch.long),
    counted on convolutions, linear and recurrent layers with forward hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        else:  # recurrent layers, batch first: every weight_ih / weight_hh entry is used once per token
            tokens = output[0].shape[0] * output[0].shape[1]
            total += tokens * sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight_"))

    counted = (nn.Conv2d, nn.Linear, nn.RNNBase, Recurrent)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        model(torch.zeros(1, *input_shape, dtype=dtype))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total
