"""Which pixels an image classifier's decision rests on: Grad-CAM and input × gradient, both computed by Captum.

- Grad-CAM (captum.attr.LayerGradCam) weighs each channel of the last convolution's output [K, h, w] by the
  mean gradient of the class score over that channel, sums the channels, keeps the positive part and is
  upsampled to the input's H x W (LayerAttribution.interpolate, bilinear). Coarse (h x w), but it says
  which region the class evidence comes from.
- Input × gradient (captum.attr.InputXGradient) is the pixel-level map: gradient of the class score times
  the pixel, summed over the channels, in absolute value. We take it rather than the plain gradient
  (captum.attr.Saliency) because it is each pixel's first-order share of the score measured from a black
  image, and black is the background of Fashion-MNIST and MNIST (predict inverts photos to that look):
  background pixels get nothing, however steep the gradient there. The plain gradient says how sensitive
  the score is to a pixel, which is large on empty background too. Both are taken with respect to the
  pixels in [0, 1] as the user sees them: the model's normalisation is part of the function explained.
  (A caution for colour models: dark pixels get little attribution whatever their importance.)

Both maps are [H, W] scaled to [0, 1] by their maximum (0 stays "no evidence"). The model runs in eval mode
with its parameters frozen while the maps are computed; each module's mode and each parameter's
requires_grad are restored afterwards. `feature_maps`, `channel_grid` and `kernel_grid` (models/inside.py)
show what the layers compute; they are named here too, so that one import serves a page.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.models.inside import FeatureMap, channel_grid, feature_maps, kernel_grid

__all__ = ["Saliency", "saliency", "grad_cam", "input_x_gradient", "last_conv", "explaining", "overlay",
           "explanation_figure", "FeatureMap", "feature_maps", "channel_grid", "kernel_grid"]


@dataclass
class Saliency:
    """The maps for a batch of N inputs [N, C, H, W]."""

    layer: str  # the module Grad-CAM was taken on ("conv2", "features.8")
    target: torch.Tensor  # [N] the class each map explains
    probs: torch.Tensor  # [N, K] the model's class probabilities
    grad_cam: torch.Tensor  # [N, H, W] in [0, 1]
    input_x_gradient: torch.Tensor  # [N, H, W] in [0, 1]


def last_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """The layer Grad-CAM looks at: the last convolution, or the conv-BN-ReLU block it opens (VGGNet), whose
    output, after batch norm and ReLU, is what the classifier head reads."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UserError(_("this model has no convolution to take Grad-CAM on"), _("use an image classifier"))
    name, conv = convs[-1]
    parent_name = name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential) and parent[0] is conv:
        return parent_name, parent
    return name, conv


@contextmanager
def explaining(model: nn.Module):
    """The model in eval mode, its parameters frozen (only the input's gradient is wanted) and autograd on,
    even inside torch.no_grad() or inference_mode(); afterwards every module's train/eval mode and every
    parameter's requires_grad are as they were."""
    modes = {m: m.training for m in model.modules()}
    wanted = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        for p in wanted:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag in wanted.items():
            p.requires_grad_(flag)


def pixel_function(model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None):
    """The model as a function of pixels [N, C, H, W] in [0, 1]: normalised as in training, then classified."""
    if mean is None:
        return model
    device = next(model.parameters()).device
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda pixels: model((pixels - m) / s)


def targets_for(target, probs: torch.Tensor) -> torch.Tensor:
    """[N] class indices: the predicted class (target None), one class for all, or one per input."""
    n, classes = probs.shape
    chosen = probs.argmax(1) if target is None else torch.as_tensor(target, dtype=torch.long).flatten().cpu()
    chosen = chosen.expand(n).clone() if chosen.numel() == 1 else chosen
    if len(chosen) != n or not ((chosen >= 0) & (chosen < classes)).all():
        raise UserError(_("target {target}: must be a class index between 0 and {last}, one per image")
                        .format(target=target if chosen.numel() < 20 else "[...]", last=classes - 1),
                        _("or leave it out to explain the predicted class"))
    return chosen


def unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """[N, H, W] >= 0, each map divided by its maximum, so it spans [0, 1]; an all-zero map stays zero."""
    top = maps.flatten(1).amax(1).clamp_min(torch.finfo(maps.dtype).tiny).view(-1, 1, 1)
    return (maps / top).clamp(0, 1)


def saliency(model: nn.Module, pixels: torch.Tensor, target=None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> Saliency:
    """Grad-CAM and input × gradient for pixels [N, C, H, W] in [0, 1] (mean and std: the normalisation the
    model was trained with; None: none), for the predicted class or `target` (an index, or one per input)."""
    from captum.attr import InputXGradient, LayerAttribution, LayerGradCam  # imported here: loads slowly

    device = next(model.parameters()).device
    layer_name, layer = last_conv(model)
    with explaining(model):
        x = pixels.detach().float().to(device).clone().requires_grad_()  # our own leaf: the gradient is taken here
        forward = pixel_function(model, mean, std)
        with torch.no_grad():
            probs = forward(x).float().softmax(1).cpu()  # [N, K]
        chosen = targets_for(target, probs)
        cam = LayerGradCam(forward, layer).attribute(x, target=chosen.to(device), relu_attributions=True)  # [N, 1, h, w]
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")  # [N, 1, H, W]
        ixg = InputXGradient(forward).attribute(x, target=chosen.to(device))  # [N, C, H, W]
    return Saliency(layer_name, chosen, probs, unit_scale(cam[:, 0].detach().float().cpu()),
                    unit_scale(ixg.sum(1).abs().detach().float().cpu()))


def one_or_many(function):
    """A map function for one input [C, H, W] -> [H, W] as well as a batch [N, C, H, W] -> [N, H, W]."""
    def wrapper(model, pixels, target=None, mean=None, std=None):
        single = pixels.dim() == 3
        maps = function(saliency(model, pixels[None] if single else pixels, target, mean, std))
        return maps[0] if single else maps
    wrapper.__name__, wrapper.__doc__ = function.__name__, function.__doc__
    return wrapper


@one_or_many
def grad_cam(maps: Saliency) -> torch.Tensor:
    """grad_cam(model, pixels, target=None, mean=None, std=None): Grad-CAM on the last convolution, upsampled
    to the input: [H, W] for one input [C, H, W], [N, H, W] for a batch; in [0, 1]."""
    return maps.grad_cam


@one_or_many
def input_x_gradient(maps: Saliency) -> torch.Tensor:
    """input_x_gradient(model, pixels, target=None, mean=None, std=None): |gradient × pixel| summed over the
    channels: [H, W] for one input [C, H, W], [N, H, W] for a batch; in [0, 1]."""
    return maps.input_x_gradient


def gray_to_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """[1 or 3, H, W] in [0, 1] -> [3, H, W] (a grey channel repeated)."""
    pixels = pixels.detach().float().cpu().clamp(0, 1)
    return pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels


def heat_colours(heat: torch.Tensor, cmap: str) -> torch.Tensor:
    """A map [H, W] in [0, 1] through a matplotlib colormap: [3, H, W] in [0, 1]."""
    import matplotlib

    rgba = matplotlib.colormaps[cmap](heat.detach().float().cpu().clamp(0, 1).numpy())  # [H, W, 4]
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()


def overlay(pixels: torch.Tensor, heat: torch.Tensor, cmap: str = "jet", alpha: float = 0.5,
            scale: int = 1) -> Image.Image:
    """A heat map [H, W] in [0, 1] laid over the image the model saw, pixels [1 or 3, H, W] in [0, 1], as an
    RGB PIL image: (1 - alpha) x image + alpha x colour. `scale` enlarges each pixel to scale x scale."""
    blend = (1 - alpha) * gray_to_rgb(pixels) + alpha * heat_colours(heat, cmap)  # [3, H, W]
    array = (blend * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # HWC, as PIL stores pixels
    image = Image.fromarray(np.ascontiguousarray(array))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def explanation_figure(result: dict):
    """The figure `predict --explain` saves, from Classifier.explain's result: the input the model saw, the
    Grad-CAM overlay and the input × gradient map, titled with the class explained and its probability.

    A matplotlib Figure without pyplot: no backend or display is involved, and a server may draw
    several at once (pyplot's global state is not thread-safe)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 3.6), dpi=100)
    axes = fig.subplots(1, 3)
    seen = gray_to_rgb(result["input"]).permute(1, 2, 0).numpy()  # CHW -> HWC for imshow
    cam = f"Grad-CAM ({result['layer']})" + ("" if result["grad_cam"].max() > 0 else "\nno positive evidence")
    panels = ((seen, "input the model saw", None), (overlay(result["input"], result["grad_cam"]), cam, None),
              (result["input_x_gradient"].numpy(), "input × gradient", "inferno"))
    for ax, (picture, title, cmap) in zip(axes, panels):
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    guess = "" if result["index"] == result["predicted"]["index"] else \
        f" (predicted: {result['predicted']['class']} {result['predicted']['prob']:.1%})"
    fig.suptitle(f"{Path(result['image']).name}: {result['class']} {result['prob']:.1%}{guess}", fontsize=11)
    return fig
