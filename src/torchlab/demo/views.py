"""What the demo page shows, computed without the page: plain functions from a model and an input to pictures,
tables and sentences, so that tests check them directly and `page.py` only lays them out.

An image classifier is looked at on one input `pixels` [C, S, S] in [0, 1] (the model-sized image it sees,
before its normalisation): the top-k classes, Grad-CAM and input × gradient for a class, every convolution's
and pooling's output channels with the notes' H×W arithmetic, and the kernels. A language model is looked at
on a prompt: the next-token distribution, a sampled continuation and, for an LSTM or GRU, the gates.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from torchlab.data.images import open_image
from torchlab.data.photo import PhotoOptions, reason_text
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.scoring import model_inputs

SHOWN = 224  # side of the enlarged pictures of a 28×28 (or model-sized) input
MAX_MEGAPIXELS = 50  # an upload larger than this is refused before it is decoded (a phone photo is 12 to 48)
KERNEL_ROWS = 16  # output channels whose kernels are drawn
PICKS = 8  # test images offered of each kind: confident mistakes, and right answers


@dataclass
class Look:
    """One input through an image classifier: what the page shows beside it."""
    probs: dict[str, float]  # top-k class -> probability, most likely first
    seen: Image.Image  # the input the model saw, enlarged
    grad_cam: Image.Image  # Grad-CAM of the explained class over the input
    input_x_gradient: Image.Image  # |input × gradient| over the input
    note: str  # which class is explained, and what preprocessing did (markdown)
    layers: list[tuple[Image.Image, str]] = field(default_factory=list)  # each layer's channels, captioned
    kernels: list[tuple[Image.Image, str]] = field(default_factory=list)  # each convolution's kernels


def enlarged(img: Image.Image, side: int = SHOWN) -> Image.Image:
    """Small pictures scaled up without blurring, so each pixel of a 28×28 input stays a visible square."""
    scale = max(1, side // max(img.size))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def picture(pixels: torch.Tensor) -> Image.Image:
    """[C, H, W] in [0, 1] (C = 1 or 3) -> a PIL image."""
    array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # CHW -> HWC
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def open_upload(path: str | Path) -> Image.Image:
    """An uploaded file as an image, refusing one too large before decoding it (and non-images, as predict does)."""
    path = Path(path)
    try:
        with Image.open(path) as probe:  # reads the header only
            width, height = probe.size
    except Exception:  # not an image at all: open_image says so in its words
        return open_image(path)
    if width * height > MAX_MEGAPIXELS * 1e6:
        raise UserError(_("{name}: {width}×{height} pixels is too large for the page (at most {limit} megapixels)")
                        .format(name=path.name, width=width, height=height, limit=MAX_MEGAPIXELS),
                        _("downscale the image first"))
    return open_image(path)


def drawing(layers: Image.Image) -> Image.Image:
    """A canvas drawing (RGBA, strokes on transparency) on white paper, as a photo of a drawing would be."""
    paper = Image.new("RGBA", layers.size, "white")
    return Image.alpha_composite(paper, layers.convert("RGBA")).convert("RGB")


def from_photo(ckpt: dict, img: Image.Image) -> tuple[torch.Tensor, str]:
    """A photo or drawing read as `torchlab predict` reads it: (pixels [C, S, S] in [0, 1], what was done)."""
    x, steps = model_inputs(ckpt, [img], PhotoOptions())  # [1, C, S, S]
    return x[0], preprocessing_note(steps[0], img, x.shape[-1])


def preprocessing_note(steps: dict, img: Image.Image, side: int) -> str:
    """The preprocessing in one sentence, the inversion named whichever way it went."""
    size = f"{img.width}×{img.height}"
    if "inverted" not in steps:
        return _("{size} photo, resized; colour models are not inverted").format(size=size)
    why = reason_text(steps["inversion_rule"], _)
    done = (_("inverted ({why})") if steps["inverted"] else _("not inverted ({why})")).format(why=why)
    return _("{size} photo → grayscale → {side}×{side}; {inversion}").format(
        size=size, side=side, inversion=done)


def look(clf, pixels: torch.Tensor, target: int | None, note: str, top_k: int = 5) -> Look:
    """Everything the page shows of one input [C, S, S] in [0, 1]; `target` None explains the predicted class."""
    from torchlab.explain import overlay, saliency

    ckpt = clf.checkpoint
    maps = saliency(clf.model, pixels[None], target, ckpt["mean"], ckpt["std"])  # [1, ...] each
    probs = maps.probs[0]  # [K]
    top = probs.topk(min(top_k, len(probs)))
    explained = int(maps.target[0])
    note = _("explaining **{name}** ({prob}); {note}").format(
        name=clf.classes[explained], prob=f"{float(probs[explained]):.1%}", note=note)
    layers, kernels = inside(clf, pixels)
    return Look({clf.classes[i]: float(p) for p, i in zip(top.values, top.indices)}, enlarged(picture(pixels)),
                enlarged(overlay(pixels, maps.grad_cam[0])), enlarged(overlay(pixels, maps.input_x_gradient[0])),
                note, layers, kernels)


def inside(clf, pixels: torch.Tensor) -> tuple[list, list]:
    """Every convolution's and pooling's output channels as a grid captioned with the H×W arithmetic, and each
    convolution's kernels (models/inside.py)."""
    from torchlab.models.inside import channel_grid, feature_maps

    mean = torch.tensor(clf.checkpoint["mean"]).view(-1, 1, 1)
    std = torch.tensor(clf.checkpoint["std"]).view(-1, 1, 1)
    maps = feature_maps(clf.model, (pixels - mean) / std)  # the model's own normalisation first
    layers, kernels = [], []
    for m in maps[1:]:  # maps[0] is the input itself, shown already
        c, h, w = m.output.shape
        scale = max(1, 96 // max(h, w))  # small maps enlarged so a 3×3 map is still visible
        layers.append((channel_grid(m.output, scale=scale), f"{m.name}: [{c}, {h}, {w}]  {m.arithmetic}"))
        if m.kernels is not None:
            kernels.append(kernel_picture(m.name, m.kernels))
    return layers, kernels


def kernel_picture(name: str, kernels: torch.Tensor) -> tuple[Image.Image, str]:
    """A convolution's kernels [out, in, kh, kw] as a grid (a row per output channel; single-input kernels
    eight to a row), the first KERNEL_ROWS output channels only: a wide layer has thousands of 3×3 kernels."""
    from torchlab.models.inside import kernel_grid

    o, i, kh, kw = kernels.shape
    columns = next(c for c in (8, 6, 5, 4, 3, 2, 1) if o % c == 0)  # single-input kernels: this many to a row
    shown = kernels[:KERNEL_ROWS] if i > 1 else kernels.reshape(-1, columns, kh, kw)  # [rows, columns, kh, kw]
    more = _(", the first {rows} shown").format(rows=KERNEL_ROWS) if i > 1 and o > KERNEL_ROWS else ""
    return kernel_grid(shown, scale=max(1, 24 // kh)), f"{name}: [{o}, {i}, {kh}, {kw}]{more}"


def test_picks(clf, data_dir: str | None) -> tuple[list[dict], str]:
    """Test images to pick from: the model's most confident mistakes and some right answers, each {"pixels",
    "caption", "note"}; or none, and why (no dataset on this machine)."""
    from torchlab.scoring import score_checkpoint

    try:
        result, split, data, _source = score_checkpoint(clf.checkpoint, data_dir, "cpu", 1000, keep=True)
    except UserError as e:
        return [], _("no test images to pick from: {error}").format(error=e)
    conf, pred = result["logprobs"].exp().max(1)  # [N] each
    wrong = (pred != data.labels).nonzero().flatten()
    right = (pred == data.labels).nonzero().flatten()
    chosen = torch.cat([wrong[conf[wrong].argsort(descending=True)][:PICKS], right[:PICKS]])
    picks = []
    for i in chosen.tolist():
        truth, guess = clf.classes[data.labels[i]], clf.classes[pred[i]]
        pixels = data.images[i].float() / 255 if data.images.dtype == torch.uint8 else data.images[i].float()
        mark = "✗" if truth != guess else "✓"
        picks.append({"pixels": pixels, "caption": f"{mark} {truth} → {guess} {float(conf[i]):.0%}",
                      "note": _("{split} image {index}, true class **{truth}**").format(split=split, index=i,
                                                                                       truth=truth)})
    return picks, _("{wrong} of {count} {split} images are wrong; the {shown} the model was surest of, then {right} "
                    "it got right").format(wrong=len(wrong), count=len(data), split=split,
                                           shown=min(PICKS, len(wrong)), right=min(PICKS, len(right)))


# --- language models ---------------------------------------------------------------------------------------


def next_table(tm, prompt: str, k: int) -> list[list]:
    """The k likeliest next tokens as rows [token, probability]; unknown characters are refused."""
    refuse_unknown(tm, prompt)
    return [[shown_token(t["token"]), round(t["prob"], 4)] for t in tm.next_tokens(prompt, k)["next"]]


def continuation(tm, prompt: str, tokens: int, temperature: float, top_k: int, seed: int) -> str:
    refuse_unknown(tm, prompt)
    return tm.generate(prompt, tokens, temperature, top_k, seed)["text"]


def gates_picture(tm, prompt: str) -> tuple[Image.Image | None, str]:
    """The gates' heat map over the prompt (models/gate_plot.py), or None and why (a plain RNN has none)."""
    from torchlab.models.gate_plot import gate_figure

    gates = tm.gates(prompt)  # refuses empty prompts and unknown characters
    if not gates.has_gates:
        return None, _("a plain RNN has no gates: its hidden state is all there is")
    buffer = io.BytesIO()
    gate_figure(gates).savefig(buffer, format="png", dpi=100)  # a figure without pyplot: safe in server threads
    img = Image.open(buffer).convert("RGB")
    return img, _("{cell}: each panel is one gate of one layer; rows are the {units} most active units, columns "
                  "the prompt's characters; 0 closed (dark), 1 open (light)").format(
        cell=gates.cell.upper(), units=min(16, gates.layers[0].hidden.shape[1]))


def refuse_unknown(tm, prompt: str) -> None:
    """An unknown character is read as <unk>, which would answer a different question: say so instead."""
    _tokens, _ids, unknown = tm.encode(prompt)  # refuses an empty prompt
    if unknown:
        raise UserError(_("not in the model's vocabulary: {tokens}").format(
            tokens=" ".join(repr(t) for t in unknown[:20])), _("leave them out of the prompt"))


def shown_token(token: str) -> str:
    """Tokens that would vanish in a table (spaces, line breaks) made visible."""
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(token, token)
