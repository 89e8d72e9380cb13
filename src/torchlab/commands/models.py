"""`torchlab models`: every model torchlab can build, with its size."""

from __future__ import annotations

import json

import torch

from torchlab.i18n import _, pad
from torchlab.models.registry import (DEFAULT_VOCAB, LANGUAGE_MODELS, MODELS, build_model, count_macs, count_params,
                                      model_config)


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help=_("print the table as JSON"))


def rows() -> tuple[list[dict], list[dict]]:
    """(image classifiers, language models): name, parameters, multiply-adds per image or per token, description."""
    images = []
    for name, entry in MODELS.items():
        model = build_model(name, model_config(name))  # sized for 1x28x28 inputs and 10 classes
        images.append({"name": name, "params": count_params(model), "macs": count_macs(model, (1, 28, 28)),
                       "description": entry.description})
    texts = []
    for name, entry in LANGUAGE_MODELS.items():
        model = build_model(name, {})  # the default sizes of `torchlab train lm`, for a DEFAULT_VOCAB vocabulary
        texts.append({"name": name, "params": count_params(model), "macs": count_macs(model, (1,), torch.long),
                      "description": entry.description, "macs_per": "token", "vocab_size": DEFAULT_VOCAB})
    return images, texts


def run(args) -> int:
    images, texts = rows()
    if args.json:
        print(json.dumps(images + texts, indent=2))
        return 0
    w = max(len(r["name"]) for r in images + texts)
    head = pad(_("model"), w) + " " + pad(_("params"), 9, right=True) + " "
    print(head + pad(_("MACs/image"), 12, right=True) + "  " + _("description (for 1x28x28 inputs, 10 classes)"))
    for r in images:
        print(f"{r['name']:<{w}} {r['params']:>9,} {r['macs']:>12,}  {_(r['description'])}")
    print("\n" + head + pad(_("MACs/token"), 12, right=True) + "  "
          + _("description (language models, for a {vocab}-token vocabulary)").format(vocab=DEFAULT_VOCAB))
    for r in texts:
        print(f"{r['name']:<{w}} {r['params']:>9,} {r['macs']:>12,}  {_(r['description'])}")
    return 0
