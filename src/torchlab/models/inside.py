"""Inside an image classifier: what every convolution and pooling layer makes of one input.

`feature_maps(model, x)` runs the model once with forward hooks and returns, layer by layer in the order
the layers ran, each output [C, H, W] with the shape arithmetic of the notes filled in:

    H_out = floor((H + 2p - k) / s) + 1        e.g. 28x28 -> conv 5x5 stride 1 pad 1 -> 26x26

and, for a convolution, its kernels [out, in, kh, kw]. `channel_grid` and `kernel_grid` lay channels and
kernels out as one grayscale picture each (PIL images, for a page or a PNG).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

POOLS = (nn.MaxPool2d, nn.AvgPool2d)
ADAPTIVE_POOLS = (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


@dataclass
class FeatureMap:
    """One layer's output for one input, and how its size follows from the layer's settings."""

    name: str  # the module's name in the model ("conv1", "features.0.0"); "input" for the input itself
    kind: str  # "input", "conv" or "pool"
    output: torch.Tensor  # [C, H, W] as the layer gave it, on the CPU
    arithmetic: str  # "28×28 → conv 5×5 stride 1 pad 1 → 26×26"
    formula: str  # "H_out = floor((28 + 2·1 − 5)/1) + 1 = 26" (and W_out when it differs)
    size: tuple[int, int]  # (H_out, W_out) as the formula gives it, computed without the output
    kernels: torch.Tensor | None = None  # a convolution's weights [out, in / groups, kh, kw]; None otherwise


def pair(value) -> tuple[int, int]:
    """A layer setting given as one int or an (h, w) pair, as an (h, w) pair."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def side_formula(axis: str, size: int, k: int, s: int, p: int, d: int, ceil: bool) -> tuple[int, str]:
    """One side's output length and the formula with the numbers in. A dilation d spreads the kernel over
    d(k - 1) + 1 pixels; the notes' layers have d = 1, and then the formula is the notes' one."""
    span = f"{d}·({k} − 1) − 1" if d != 1 else f"{k}"
    reach = d * (k - 1) + 1
    rounding, top = ("ceil", -(-(size + 2 * p - reach) // s)) if ceil else ("floor", (size + 2 * p - reach) // s)
    out = top + 1
    return out, f"{axis}_out = {rounding}(({size} + 2·{p} − {span})/{s}) + 1 = {out}"


def arithmetic_of(module: nn.Module, kind: str, in_hw: tuple[int, int]) -> tuple[str, str, tuple[int, int]]:
    """(arithmetic, formula, (H_out, W_out)) of a convolution or pooling layer on an H x W input."""
    if isinstance(module, ADAPTIVE_POOLS):  # sized by its target, not by a kernel
        out = tuple(o if o is not None else i for o, i in zip(pair(module.output_size), in_hw))
        name = "adaptive max-pool" if isinstance(module, nn.AdaptiveMaxPool2d) else "adaptive average-pool"
        return f"{in_hw[0]}×{in_hw[1]} → {name} → {out[0]}×{out[1]}", "H_out, W_out: the pool's output_size", out
    k, s, p = pair(module.kernel_size), pair(module.stride or module.kernel_size), pair(module.padding)
    d = pair(getattr(module, "dilation", 1))
    ceil = getattr(module, "ceil_mode", False)
    (h, fh), (w, fw) = (side_formula(axis, in_hw[i], k[i], s[i], p[i], d[i], ceil) for i, axis in enumerate("HW"))
    name = {"conv": "conv", "pool": "max-pool" if isinstance(module, nn.MaxPool2d) else "average-pool"}[kind]
    settings = f"{name} {k[0]}×{k[1]} stride {sides(s)} pad {sides(p)}" + (f" dilation {sides(d)}" if d != (1, 1) else "")
    same = in_hw[0] == in_hw[1] and k[0] == k[1] and s[0] == s[1] and p[0] == p[1] and d[0] == d[1]
    return f"{in_hw[0]}×{in_hw[1]} → {settings} → {h}×{w}", fh if same else f"{fh}; {fw}", (h, w)


def sides(value: tuple[int, int]) -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]}×{value[1]}"


def layer_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, POOLS + ADAPTIVE_POOLS):
        return "pool"
    return None


def feature_maps(model: nn.Module, x: torch.Tensor) -> list[FeatureMap]:
    """The input and every convolution's and pooling layer's output for ONE input x [C, H, W] (normalised as
    the model expects), in the order the layers ran, each with its shape arithmetic.

    The model runs once in eval mode without gradients; its mode is restored afterwards."""
    if x.dim() != 3:
        raise ValueError(f"feature_maps takes one input [C, H, W], not a tensor of shape {tuple(x.shape)}")
    found = [FeatureMap("input", "input", x.detach().cpu().clone(), f"{x.shape[1]}×{x.shape[2]} input", "",
                        (x.shape[1], x.shape[2]))]
    names = {module: name for name, module in model.named_modules()}

    def record(module, inputs, output):
        kind = layer_kind(module)
        arithmetic, formula, size = arithmetic_of(module, kind, tuple(inputs[0].shape[-2:]))
        kernels = module.weight.detach().cpu().clone() if kind == "conv" else None
        # clone: a later in-place ReLU must not change what this layer gave
        found.append(FeatureMap(names[module], kind, output[0].detach().cpu().clone(), arithmetic, formula, size,
                                kernels))

    handles = [m.register_forward_hook(record) for m in model.modules() if layer_kind(m)]
    modes = {m: m.training for m in model.modules()}
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(x[None].to(device))  # a batch of one: [1, C, H, W]
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return found


def to_picture(grid: torch.Tensor, scale: int) -> Image.Image:
    """A make_grid result [3, H, W] in [0, 1] (its channels equal) as a grayscale PIL image, each pixel
    enlarged to scale x scale so that small maps and 3x3 kernels can be seen."""
    array = (grid[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    array = np.kron(array, np.ones((scale, scale), dtype=np.uint8)) if scale > 1 else array
    return Image.fromarray(array)  # uint8 [H, W]: mode L


def channel_grid(maps: torch.Tensor, columns: int = 8, scale: int = 1, padding: int = 1) -> Image.Image:
    """Channels [C, H, W] as tiles of a grid, `columns` a row, each scaled to its own range (black: its
    lowest value, white: its highest), so that a channel of small values still shows its pattern."""
    from torchvision.utils import make_grid  # imported here: torchvision is slow to load

    tiles = maps.detach().float().cpu()[:, None]  # [C, 1, H, W]: one grayscale picture per channel
    grid = make_grid(tiles, nrow=columns, padding=padding, normalize=True, scale_each=True, pad_value=1.0)
    return to_picture(grid, scale)


def kernel_grid(kernels: torch.Tensor, scale: int = 1, padding: int = 1) -> Image.Image:
    """Convolution kernels [out, in, kh, kw] as a grid: one row per output channel, one column per input
    channel. All share one scale centred on zero (mid-grey: 0, white: the largest positive weight, black:
    its negative), so that strong and weak kernels can be compared."""
    from torchvision.utils import make_grid

    out_channels, in_channels, kh, kw = kernels.shape
    w = kernels.detach().float().cpu()
    m = float(w.abs().max()) or 1.0  # an all-zero layer: everything mid-grey
    tiles = w.reshape(out_channels * in_channels, 1, kh, kw)  # row-major: output channel by output channel
    grid = make_grid(tiles, nrow=in_channels, padding=padding, normalize=True, value_range=(-m, m), pad_value=1.0)
    return to_picture(grid, scale)
