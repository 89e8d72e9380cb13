"""`torchlab conv-viz`: one convolution and one max-pooling over a few images, shown channel by channel.

The convolution is computed by hand, the way the notes explain it: every
k x k patch of the (padded) input is cut out and laid flat as a column
("im2col", `F.unfold`), every filter is laid flat as a row, and one matrix
product gives every output value at once. `F.conv2d` runs on the same input
to show that both agree, and the shapes the formula (H + 2p - k) // s + 1
predicts are printed beside the shapes the tensors really have.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from torchlab import checkpoint, runinfo
from torchlab.data.images import load_folder
from torchlab.checks import Bounded
from torchlab.errors import UserError
from torchlab.i18n import N_, _, both
from torchlab.logger import new_run_dir, open_writer, say
from torchlab.models.cnn import conv_out
from torchlab.models.registry import CLASSIFIER, from_checkpoint, require_kind

PNGS = ("input.png", "output.png", "pooled.png", "kernels.png")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, what Pillow's convert("L") uses


def add_arguments(p) -> None:
    src = p.add_argument_group(_("input (exactly one)"))
    src.add_argument("--dataset", metavar="NAME", help=_("training images of a built-in dataset: {names}").format(names=", ".join(dataset_names())))
    src.add_argument("--images", metavar="DIR", help=_("every image file in DIR (sorted; other files are skipped)"))
    p.add_argument("--data-dir", help=_("folder holding the dataset files (with --dataset)"))
    p.add_argument("--size", type=int, action=Bounded, lo=1, help=_("with --images: resize the shorter side to SIZE, centre-crop SIZE x SIZE (default 64)"))
    p.add_argument("--count", type=int, default=8, action=Bounded, lo=1, help=_("use the first COUNT images (default 8)"))
    conv = p.add_argument_group(_("convolution (nn.Conv2d) and pooling (nn.MaxPool2d)"))
    conv.add_argument("--out-channels", type=int, action=Bounded, lo=1, help=_("filters, i.e. output channels (default 6)"))
    conv.add_argument("--kernel-size", type=int, action=Bounded, lo=1, help=_("k: each filter is k x k (default 3)"))
    conv.add_argument("--stride", type=int, action=Bounded, lo=1, help=_("step between patches (default 1)"))
    conv.add_argument("--padding", type=int, action=Bounded, lo=0, help=_("zeros added around each side (default 0)"))
    conv.add_argument("--pool", type=int, default=2, action=Bounded, lo=1, help=_("max-pooling window, also its stride (default 2)"))
    conv.add_argument("--seed", type=int, default=0, help=_("seed for the random filters (default 0)"))
    conv.add_argument("--checkpoint", metavar="PATH", help=_("use the first conv layer of a `torchlab train` checkpoint"))
    p.add_argument("--out", metavar="DIR", help=_("new folder for the PNGs and TensorBoard logs (default runs/conv-viz-TIME)"))
    p.add_argument("--json", action="store_true", help=_("print shapes, formulas, max difference and files as JSON"))


def dataset_names() -> tuple[str, ...]:
    from torchlab.data import catalog
    from torchlab.data.vision import DATASETS

    return tuple(getattr(catalog, "NAMES", None) or DATASETS)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def output_size(height: int, width: int, kernel, stride=1, padding=0) -> tuple[int, int]:
    """(H_out, W_out) of a convolution or pooling, each side (size + 2p - k) // s + 1."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    return conv_out(height, kh, sh, ph), conv_out(width, kw, sw, pw)


def conv2d_by_hand(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   stride=1, padding=0) -> torch.Tensor:
    """What F.conv2d(x, weight, bias, stride, padding) computes, as im2col + one matrix product.

    x [N, C, H, W], weight [O, C, kH, kW], bias [O] or None -> [N, O, H_out, W_out].
    """
    n, c, h, w = x.shape
    o, c_w, kh, kw = weight.shape
    if c != c_w:
        raise ValueError(f"input has {c} channels but the filters expect {c_w}")
    h_out, w_out = output_size(h, w, (kh, kw), stride, padding)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{w} input with padding {padding}")
    # im2col: each patch (all C channels of one kH x kW window) becomes a column, channel by channel,
    # row by row: [N, C, H, W] -> [N, C*kH*kW, H_out*W_out]. Padding adds zeros, as in nn.Conv2d.
    cols = F.unfold(x, (kh, kw), padding=_pair(padding), stride=_pair(stride))
    # Each filter flattened in the same (C, kH, kW) order becomes a row: [O, C, kH, kW] -> [O, C*kH*kW].
    rows = weight.reshape(o, c * kh * kw)
    # Row . column = the sum over one window of filter x input: [O, CkK] @ [N, CkK, L] -> [N, O, L].
    out = rows @ cols
    if bias is not None:
        out = out + bias.view(1, o, 1)  # one number per filter, added at every position
    # The L = H_out*W_out positions were read left to right, top to bottom: fold them back to a grid.
    return out.view(n, o, h_out, w_out)


def formula(size: int, kernel: int, stride: int, padding: int) -> str:
    return f"({size} + 2*{padding} - {kernel}) // {stride} + 1 = {conv_out(size, kernel, stride, padding)}"


def load_dataset(name: str, data_dir: str | None, count: int) -> tuple[torch.Tensor, str]:
    from torchlab.data import catalog

    if name not in dataset_names():
        raise UserError(_("--dataset {name}: unknown dataset").format(name=name),
                        _("choose one of: {names}").format(names=", ".join(dataset_names())))
    images, source = catalog.load_train_images(name, data_dir)  # uint8 [N, C, H, W]
    return images[:count].float() / 255, both(N_("{count} images of {name} ({source})"),
                                              count=min(count, len(images)), name=name, source=source)


def match_channels(x: torch.Tensor, in_channels: int) -> tuple[torch.Tensor, tuple[str, str]]:
    """Give the images the channels the layer expects: [N, C, H, W] -> [N, in_channels, H, W]; and what was done
    (English, shown: i18n.both), or two empty strings."""
    c = x.shape[1]
    if c == in_channels:
        return x, ("", "")
    if c == 3 and in_channels == 1:
        return (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True), \
            both(N_("converted RGB -> L (1-channel layer)"))
    if c == 1 and in_channels == 3:
        return x.repeat(1, 3, 1, 1), both(N_("converted L -> RGB by repeating the channel (3-channel layer)"))
    raise UserError(_("the images have {c} channels but the layer expects {expected}").format(c=c, expected=in_channels),
                    _("use other images"))


def layer_from_checkpoint(path: str, args) -> tuple[nn.Conv2d, tuple, tuple]:
    ckpt = checkpoint.load(path)
    require_kind(ckpt, CLASSIFIER, "conv-viz --checkpoint")
    model = from_checkpoint(ckpt, torch.device("cpu"))
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.groups != 1 or conv.dilation != (1, 1) or not isinstance(conv.padding, tuple):
        raise UserError(_("{path}: model {model} has no plain first nn.Conv2d").format(path=ckpt['path'], model=repr(ckpt['model_name'])),
                        _("use another checkpoint"))
    layer = {"--out-channels": conv.out_channels, "--kernel-size": conv.kernel_size[0],
             "--stride": conv.stride[0], "--padding": conv.padding[0]}
    for flag, value in layer.items():
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is not None and given != value:
            raise UserError(_("{flag} {given}: the checkpoint's first conv layer has {value}").format(flag=flag, given=given, value=value),
                            _("drop {flag} when using --checkpoint").format(flag=flag))
    say(_("using the first nn.Conv2d of {path} ({model}): {settings} come from the layer")
        .format(path=ckpt['path'], model=ckpt['model_name'], settings=", ".join(f"{k[2:]} {v}" for k, v in layer.items())))
    return conv, tuple(ckpt["mean"]), tuple(ckpt["std"])


def random_layer(in_channels: int, args) -> nn.Conv2d:
    with torch.random.fork_rng():  # seeded without touching the caller's random state
        torch.manual_seed(args.seed)
        # The notes' nn.Conv2d(3, 6, 3), with PyTorch's default (Kaiming-uniform) random weights.
        return nn.Conv2d(in_channels, args.out_channels or 6, args.kernel_size or 3,
                         stride=args.stride or 1, padding=args.padding or 0)


def check_flags(args) -> None:
    if (args.dataset is None) == (args.images is None):
        raise UserError(_("conv-viz: pass exactly one of --dataset NAME or --images DIR"),
                        _("e.g. `torchlab conv-viz --dataset fashion-mnist`"))
    if args.dataset is not None and args.size is not None:
        raise UserError(_("--size works with --images only"), _("dataset images keep their size"))


def check_fits(h: int, w: int, conv: nn.Conv2d, pool: int, from_ckpt: bool) -> None:
    """Refuse settings whose output would be empty, naming the flag to change."""
    k, p = conv.kernel_size[0], conv.padding[0]
    if k > min(h, w) + 2 * p:
        raise UserError(_("--kernel-size {k} is larger than the padded input ({side} + 2*{p} = {padded})")
                        .format(k=k, side=min(h, w), p=p, padded=min(h, w) + 2 * p),
                        _("use larger images (--size)") if from_ckpt else _("use a smaller --kernel-size or more --padding"))
    oh, ow = output_size(h, w, conv.kernel_size, conv.stride, conv.padding)
    if pool > min(oh, ow):
        raise UserError(_("--pool {pool} is larger than the convolution's {oh}x{ow} output").format(pool=pool, oh=oh, ow=ow),
                        _("use --pool {most} or less").format(most=min(oh, ow)))


def scale01(t: torch.Tensor) -> torch.Tensor:
    """Min-max scale each [C, H, W] item of t [N, C, H, W] to [0, 1] for display (a flat item becomes 0)."""
    lo, hi = t.amin(dim=(1, 2, 3), keepdim=True), t.amax(dim=(1, 2, 3), keepdim=True)
    return (t - lo) / (hi - lo).clamp_min(1e-12)


def write_outputs(out: Path, shown: torch.Tensor, y: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor) -> list[str]:
    """Save the four grids as PNGs and log them to TensorBoard; shown [N, C, H, W] is the input in [0, 1]."""
    from torchvision.utils import make_grid, save_image  # imported here: slow, and only this command needs it

    zoom = max(1, 32 // weight.shape[-1])  # a 3x3 kernel is drawn 30x30 pixels, without smoothing
    tiles = {  # name: (tiles [T, 1 or 3, h, w], tiles per row); outputs get a row per image, a tile per channel
        "input": (shown, 8),
        "output": (scale01(y.flatten(0, 1)[:, None]), y.shape[1]),  # [N*O, 1, H_out, W_out], each tile scaled alone
        "pooled": (scale01(pooled.flatten(0, 1)[:, None]), y.shape[1]),
        "kernels": (F.interpolate(scale01(weight.detach()), scale_factor=zoom, mode="nearest"), 8),  # RGB when C is 3
    }
    grids = {name: make_grid(t, nrow=nrow, padding=2, pad_value=1.0) for name, (t, nrow) in tiles.items()}
    for name, grid in grids.items():
        save_image(grid, out / f"{name}.png")
    writer = open_writer(out)
    writer.add_images("conv/input", shown, 0, dataformats="NCHW")
    for name in ("output", "pooled", "kernels"):
        writer.add_image(f"conv/{name}", grids[name], 0)
    writer.close()
    return [str(out / name) for name in PNGS]


def run(args) -> int:
    check_flags(args)
    if args.dataset:
        x, source = load_dataset(args.dataset, args.data_dir, args.count)
    else:
        x, source = load_folder(args.images, args.size or 64, args.count)
    if args.checkpoint:
        conv, mean, std = layer_from_checkpoint(args.checkpoint, args)
    else:
        conv, mean, std = random_layer(x.shape[1], args), (0.0,), (1.0,)
    x, converted = match_channels(x, conv.in_channels)  # [N, C_in, H, W] in [0, 1]
    if converted[1]:
        say(converted[1])
    check_fits(x.shape[2], x.shape[3], conv, args.pool, bool(args.checkpoint))
    out = new_run_dir(args.out, "conv-viz", flag="--out")
    runinfo.write_demo(out, "conv-viz")  # `torchlab runs`: a demo's logs, not a run
    normed = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        y = conv2d_by_hand(normed, conv.weight, conv.bias, conv.stride, conv.padding)  # [N, O, H_out, W_out]
        reference = F.conv2d(normed, conv.weight, conv.bias, conv.stride, conv.padding)
        pooled = F.max_pool2d(y, args.pool)  # window = stride = pool: [N, O, H_out // pool, W_out // pool]
    result = summary(x, conv, y, reference, pooled, args.pool)
    weights = both(N_("checkpoint {path}"), path=args.checkpoint) if args.checkpoint \
        else both(N_("random, seed {seed}"), seed=args.seed)
    words = {"source": source, "converted": converted, "weights": weights}  # each (English, shown)
    result |= {key: english or None for key, (english, _shown) in words.items()}  # JSON stays English
    result |= {"normalised": {"mean": list(mean), "std": list(std)}, "out_dir": str(out),
               "files": write_outputs(out, x, y, pooled, conv.weight)}
    print(json.dumps(result, indent=2) if args.json else text(result | {k: shown for k, (_e, shown) in words.items()}))
    return 0


def step(x: torch.Tensor, k: int, s: int, p: int, y: torch.Tensor) -> dict:
    """The formula's output shape for input x [N, C, H, W] beside the shape of the real output y."""
    h, w = x.shape[2:]
    return {"formula_h": formula(h, k, s, p), "formula_w": formula(w, k, s, p),
            "expected_shape": [x.shape[0], y.shape[1], *output_size(h, w, k, s, p)], "shape": list(y.shape)}


def summary(x, conv: nn.Conv2d, y, reference, pooled, pool: int) -> dict:
    (k, _), (s, _), (p, _) = conv.kernel_size, conv.stride, conv.padding
    return {
        "input_shape": list(x.shape), "weight_shape": list(conv.weight.shape),
        "bias_shape": list(conv.bias.shape) if conv.bias is not None else None,
        "out_channels": conv.out_channels, "kernel_size": k, "stride": s, "padding": p, "pool": pool,
        "unfold_shape": [x.shape[0], conv.in_channels * k * k, y.shape[2] * y.shape[3]],
        "conv": step(x, k, s, p, y), "pool_step": step(y, pool, pool, 0, pooled),
        "max_abs_diff": float((y - reference).abs().max()),
    }


def text(r: dict) -> str:
    n, o, (ckk, positions) = r["input_shape"][0], r["out_channels"], r["unfold_shape"][1:]
    steps = [(f"conv {r['kernel_size']}x{r['kernel_size']}", r["conv"]), (f"pool {r['pool']}", r["pool_step"])]
    return "\n".join([
        label(_("input")) + f"{r['input_shape']}  {r['source']}" + (f"; {r['converted']}" if r["converted"] else ""),
        label(_("layer")) + f"nn.Conv2d({r['input_shape'][1]}, {o}, kernel_size={r['kernel_size']}, "
        f"stride={r['stride']}, padding={r['padding']}): "
        + _("weight {weight}, bias {bias} ({weights})").format(weight=r["weight_shape"], bias=r["bias_shape"],
                                                               weights=r["weights"]),
        "im2col    " + _("unfold -> {unfold}, weight as rows [{o}, {ckk}], matmul -> [{n}, {o}, {positions}]").format(
            unfold=r["unfold_shape"], o=o, ckk=ckk, n=n, positions=positions),
        *(f"{name:<9} H: {s['formula_h']}, W: {s['formula_w']} -> "
          + _("expected {expected}, tensor {shape}").format(expected=s["expected_shape"], shape=s["shape"])
          for name, s in steps),
        label(_("check")) + _("max |by hand - F.conv2d| = {diff}").format(diff=f"{r['max_abs_diff']:.2e}"),
        label(_("wrote")) + _("{files} and TensorBoard logs to {out_dir}").format(
            files=", ".join(Path(f).name for f in r["files"]), out_dir=r["out_dir"]),
        label(_("view")) + f"torchlab tensorboard {r['out_dir']}"])


def label(word: str, width: int = 10) -> str:
    """A line's label padded to `width` terminal columns (a Chinese character takes two)."""
    return word + " " * max(1, width - sum(2 if ord(c) > 0x2E7F else 1 for c in word))
