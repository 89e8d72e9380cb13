"""torchlab.explain and models/inside.py: feature maps with the notes' shape arithmetic, kernel and channel grids,
Grad-CAM and input × gradient (Captum), overlays, and a model left exactly as it was found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torchlab.errors import UserError
from torchlab.explain import (channel_grid, explaining, feature_maps, grad_cam, input_x_gradient, kernel_grid,
                              last_conv, overlay, saliency)
from torchlab.models.registry import MODELS, build_model, model_config

pytestmark = pytest.mark.usefixtures("one_thread")

# The registry's models at the input sizes their tasks give them: grey 28x28 (Fashion-MNIST, MNIST) and
# colour 32x32 (CIFAR-10).
SIZES = [(1, 28), (3, 32)]
MEAN, STD = 0.286, 0.353  # Fashion-MNIST's normalisation
ROWS, COLS = slice(3, 11), slice(15, 25)  # an off-centre 8 x 10 box: a transposed or flipped map misses it


def model_at(name: str, channels: int = 1, size: int = 28, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, model_config(name, in_channels=channels, image_size=size))


def boxed(n: int = 2, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    """[n, C, size, size] pixels in [0, 1]: zero (black, the datasets' background) outside the box, textured in it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, channels, size, size)
    x[:, :, ROWS, COLS] = 0.2 + 0.8 * torch.rand(n, channels, 8, 10, generator=g)
    return x


# --- feature maps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,size", SIZES)
@pytest.mark.parametrize("name", list(MODELS))
def test_feature_maps_follow_the_notes_formula_in_every_model(name, channels, size):
    model = model_at(name, channels, size)
    x = torch.randn(channels, size, size)
    maps = feature_maps(model, x)
    assert maps[0].kind == "input" and torch.equal(maps[0].output, x)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [m.kind for m in maps[1:]].count("conv") == len(convs) and [m.kind for m in maps[1:]].count("pool") == len(pools)
    conv_maps = iter(convs)
    for before, layer in zip(maps, maps[1:]):
        h, w = before.output.shape[1:]
        assert layer.arithmetic.startswith(f"{h}×{w} → ")  # each layer reads what the one before gave
        assert tuple(layer.output.shape[1:]) == layer.size  # the formula, worked out alone, gives the real size
        assert layer.arithmetic.endswith(f"→ {layer.size[0]}×{layer.size[1]}")
        assert layer.formula.startswith(f"H_out = floor(({h} + 2·") and layer.formula.endswith(f") + 1 = {layer.size[0]}")
        if layer.kind == "conv":
            conv = next(conv_maps)
            assert torch.equal(layer.kernels, conv.weight.detach())
            assert layer.kernels.shape == (conv.out_channels, conv.in_channels, *conv.kernel_size)
            assert layer.output.shape[0] == layer.kernels.shape[0]  # one output channel per kernel
        else:
            assert layer.kernels is None and layer.output.shape[0] == before.output.shape[0]
    last = maps[-1].output
    head = model.fc1 if name == "notes-cnn" else model.head  # what the classifier reads of the last map
    assert head.in_features == (last.numel() if name == "notes-cnn" else last.shape[0])


def test_the_notes_network_shapes_read_as_in_the_notes():
    maps = feature_maps(model_at("notes-cnn"), torch.randn(1, 28, 28))
    assert [(m.name, m.kind, tuple(m.output.shape)) for m in maps] == [
        ("input", "input", (1, 28, 28)), ("conv1", "conv", (32, 26, 26)), ("conv2", "conv", (64, 26, 26)),
        ("max_pool", "pool", (64, 13, 13))]
    assert maps[1].arithmetic == "28×28 → conv 5×5 stride 1 pad 1 → 26×26"
    assert maps[1].formula == "H_out = floor((28 + 2·1 − 5)/1) + 1 = 26"
    assert maps[3].arithmetic == "26×26 → max-pool 2×2 stride 2 pad 0 → 13×13"
    assert maps[3].formula == "H_out = floor((26 + 2·0 − 2)/2) + 1 = 13"


def test_the_formula_covers_stride_padding_dilation_rectangles_and_ceil_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, (3, 5), dilation=2, padding=(0, 1)),
                          nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1))
    maps = feature_maps(model, torch.randn(2, 41, 30))
    assert [tuple(m.output.shape[1:]) for m in maps[1:]] == [m.size for m in maps[1:]]
    assert [m.size for m in maps[1:]] == [(21, 15), (17, 9), (8, 4), (4, 2), (1, 1)]
    assert maps[1].formula == "H_out = floor((41 + 2·1 − 3)/2) + 1 = 21; W_out = floor((30 + 2·1 − 3)/2) + 1 = 15"
    assert "dilation 2" in maps[2].arithmetic and "H_out = floor((21 + 2·0 − 2·(3 − 1) − 1)/1) + 1 = 17" in maps[2].formula
    assert maps[3].formula.startswith("H_out = ceil((17 + 2·0 − 3)/2) + 1 = 8")
    assert maps[5].arithmetic == "4×2 → adaptive average-pool → 1×1"


def test_feature_maps_leave_the_mode_as_it_was_and_take_one_input():
    model = model_at("vgg-tiny").train()
    feature_maps(model, torch.randn(1, 28, 28))
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="one input"):
        feature_maps(model, torch.randn(2, 1, 28, 28))


def test_grids_lay_channels_and_kernels_out_in_tiles():
    maps = feature_maps(model_at("notes-cnn"), torch.randn(1, 28, 28))
    conv1 = maps[1]
    grid = channel_grid(conv1.output, columns=8)  # 32 channels of 26x26: 8 across, 4 down, 1-pixel borders
    assert grid.mode == "L" and grid.size == (8 * 27 + 1, 4 * 27 + 1)
    tile = np.asarray(grid)[1:27, 1:27]  # the first channel, scaled to its own range
    assert tile.min() == 0 and tile.max() == 255
    assert channel_grid(conv1.output, columns=8, scale=3).size == (3 * 217, 3 * 109)
    kernels = torch.zeros(2, 3, 3, 3)
    kernels[1, 2, 0, 0], kernels[0, 0, 1, 1] = 0.5, -0.25
    picture = np.asarray(kernel_grid(kernels))  # a row per output channel, a column per input channel
    assert picture.shape == (2 * 4 + 1, 3 * 4 + 1)
    assert picture[5 + 0, 9 + 0] == 255 and picture[1 + 1, 1 + 1] == 64  # 0.5 (the largest) white; -0.25 a quarter
    assert picture[1, 5] in (127, 128)  # zero is mid-grey on the shared scale
    assert kernel_grid(maps[2].kernels).size == (32 * 4 + 1, 64 * 4 + 1)


# --- saliency ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,size", SIZES)
@pytest.mark.parametrize("name", list(MODELS))
def test_maps_have_the_inputs_size_and_lie_in_0_1(name, channels, size):
    model = model_at(name, channels, size)
    x = boxed(2, channels, size)
    maps = saliency(model, x, mean=[MEAN] * channels, std=[STD] * channels)
    for m in (maps.grad_cam, maps.input_x_gradient):
        assert m.shape == (2, size, size) and m.min() >= 0 and m.max() <= 1
    # Each map is scaled by its own maximum. Grad-CAM keeps only positive evidence, and an untrained model may
    # have none for its class: then the map is all zero.
    assert torch.allclose(maps.input_x_gradient.flatten(1).amax(1), torch.ones(2))
    assert all(top in (0.0, 1.0) for top in maps.grad_cam.flatten(1).amax(1).tolist())
    assert maps.probs.shape == (2, 10) and torch.equal(maps.target, maps.probs.argmax(1))
    one = grad_cam(model, x[0], mean=[MEAN] * channels, std=[STD] * channels)  # one input [C, H, W] -> [H, W]
    assert one.shape == (size, size) and torch.allclose(one, maps.grad_cam[0], atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_an_input_zero_outside_a_box_gets_its_input_gradients_inside_the_box(name):
    model = model_at(name)
    x = boxed(3)
    heat = input_x_gradient(model, x, mean=[MEAN], std=[STD])  # [3, 28, 28]
    inside = heat[:, ROWS, COLS].sum((1, 2)) / heat.sum((1, 2))
    assert (inside > 0.99).all(), inside
    peak = heat.flatten(1).argmax(1)
    assert all(3 <= p // 28 < 11 and 15 <= p % 28 < 25 for p in peak.tolist())
    # The check can fail: the same product taken on the normalised input, where the black background is
    # -0.81 and not 0, spreads most of the map outside the box.
    normalised = input_x_gradient(model, (x - MEAN) / STD)
    assert (normalised[:, ROWS, COLS].sum((1, 2)) / normalised.sum((1, 2)) < 0.5).all()


@pytest.mark.parametrize("name", ["notes-cnn", "vgg-tiny"])
def test_grad_cam_is_the_gradient_weighted_last_convolution(name):
    """Captum's numbers against Grad-CAM's definition, worked out with autograd on the layer last_conv picks."""
    model = model_at(name)
    x = boxed(2)
    layer_name, layer = last_conv(model)
    assert layer_name == ("conv2" if name == "notes-cnn" else "features.7")  # VGG: the conv-BN-ReLU block
    kept = []
    handle = layer.register_forward_hook(lambda m, i, out: kept.append(out))
    logits = model.eval()((x - MEAN) / STD)
    handle.remove()
    target = torch.tensor([3, 7])
    grads, = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), kept[0])  # [2, K, h, w]
    cam = (grads.mean((2, 3), keepdim=True) * kept[0]).sum(1, keepdim=True).relu()  # [2, 1, h, w]
    cam = nn.functional.interpolate(cam, size=(28, 28), mode="bilinear")[:, 0]
    cam = cam / cam.flatten(1).amax(1).view(-1, 1, 1)
    assert torch.allclose(grad_cam(model, x, target, mean=[MEAN], std=[STD]), cam.detach(), atol=1e-5)


def test_target_chooses_the_class_explained():
    model = model_at("notes-cnn")
    x = boxed(2)
    predicted = saliency(model, x, mean=[MEAN], std=[STD])
    other = (predicted.target + 1) % 10
    given = saliency(model, x, other, mean=[MEAN], std=[STD])
    assert torch.equal(given.target, other)
    assert not torch.allclose(given.input_x_gradient, predicted.input_x_gradient)
    assert torch.equal(saliency(model, x, 4).target, torch.tensor([4, 4]))  # one class for every input
    for bad in (10, -1, [1, 2, 3]):
        with pytest.raises(UserError, match="must be a class index between 0 and 9"):
            saliency(model, x, bad)


def test_the_model_is_left_as_it_was_found():
    model = model_at("vgg-tiny")
    model.train()
    model.features[0][1].eval()  # a mixed state: one batch norm frozen, as when fine-tuning
    model.head.weight.requires_grad_(False)
    weights = {k: v.clone() for k, v in model.state_dict().items()}  # BN running statistics included
    modes = [m.training for m in model.modules()]
    wanted = [p.requires_grad for p in model.parameters()]
    with torch.inference_mode():  # a caller without autograd still gets gradient maps
        maps = saliency(model, boxed(2), mean=[MEAN], std=[STD])
    assert maps.input_x_gradient.max() == 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == wanted
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated in the weights


def test_explaining_restores_the_model_even_when_the_work_fails():
    model = model_at("notes-cnn").train()
    with pytest.raises(RuntimeError, match="boom"):
        with explaining(model):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            assert torch.is_grad_enabled()
            raise RuntimeError("boom")
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_overlay_blends_the_colour_map_over_the_image():
    pixels = torch.zeros(1, 4, 6)
    pixels[0, :, 3:] = 1.0  # left half black, right half white
    heat = torch.zeros(4, 6)
    heat[0, 0] = 1.0
    picture = overlay(pixels, heat, cmap="gray", alpha=0.5)
    assert picture.mode == "RGB" and picture.size == (6, 4)
    rgb = np.asarray(picture)
    assert tuple(rgb[0, 0]) == (128, 128, 128)  # black under full heat (white in "gray"): halfway
    assert tuple(rgb[0, 1]) == (0, 0, 0) and tuple(rgb[0, 5]) == (128, 128, 128)  # no heat: black and half white
    assert overlay(torch.rand(3, 4, 6), heat, scale=5).size == (30, 20)
    coloured = np.asarray(overlay(pixels, heat), dtype=int)  # "jet": blue where cold, red where hot
    assert coloured[1, 1, 2] > coloured[1, 1, 0] and coloured[0, 0, 0] > coloured[0, 0, 2]
