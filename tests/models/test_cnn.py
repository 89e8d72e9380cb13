from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchlab.errors import UserError
from torchlab.models.cnn import NotesCNN, NotesCNNConfig, VGGConfig, VGGNet, conv_out
from torchlab.models.registry import MODELS, build_model, count_macs, count_params, model_config



pytestmark = pytest.mark.usefixtures("one_thread")
SIZES = [1, 2, 3, 5, 7, 8, 13, 14, 27, 28, 31, 32]


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_conv_out_matches_conv2d(kernel, stride, padding):
    conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding)
    checked = 0
    with torch.no_grad():
        for size in SIZES:
            if size + 2 * padding < kernel:
                continue
            out = conv(torch.zeros(1, 1, size, size + 1))
            assert out.shape[2] == conv_out(size, kernel, stride, padding), size
            assert out.shape[3] == conv_out(size + 1, kernel, stride, padding), size + 1
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_out_matches_max_pool(kernel, stride):
    for padding in range(kernel // 2 + 1):  # MaxPool2d allows padding up to half the kernel
        pool = nn.MaxPool2d(kernel, stride=stride, padding=padding)
        for size in SIZES:
            if size + 2 * padding < kernel:
                continue
            out = pool(torch.zeros(1, 1, size, size))
            assert out.shape[2] == conv_out(size, kernel, stride, padding), (size, padding)


def test_conv_out_defaults_and_known_values():
    assert conv_out(28, 5) == 24
    assert conv_out(28, 5, 1, 1) == 26
    assert conv_out(26, 3, 1, 1) == 26
    assert conv_out(26, 2, 2) == 13
    assert conv_out(27, 2, 2) == 13


def notes_cnn(seed: int = 0) -> NotesCNN:
    torch.manual_seed(seed)
    return NotesCNN(NotesCNNConfig())


def test_notes_cnn_layers_are_the_notes():
    model = notes_cnn()
    assert [name for name, _ in model.named_children()] == ["conv1", "conv2", "relu", "max_pool", "fc1"]
    c1, c2 = model.conv1, model.conv2
    assert isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d)
    assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.stride, c1.padding) == (1, 32, (5, 5), (1, 1), (1, 1))
    assert (c2.in_channels, c2.out_channels, c2.kernel_size, c2.stride, c2.padding) == (32, 64, (3, 3), (1, 1), (1, 1))
    assert c1.bias is not None and c2.bias is not None
    assert isinstance(model.relu, nn.ReLU)
    assert isinstance(model.max_pool, nn.MaxPool2d)
    assert model.max_pool.kernel_size == 2 and model.max_pool.stride == 2 and model.max_pool.padding == 0
    assert isinstance(model.fc1, nn.Linear)
    assert (model.fc1.in_features, model.fc1.out_features) == (13 * 13 * 64, 10)


def test_notes_cnn_parameter_count():
    model = notes_cnn()
    assert count_params(model) == 127_498
    assert count_params(model) == (32 * 25 + 32) + (64 * 32 * 9 + 64) + (10816 * 10 + 10)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 127_498


@pytest.mark.parametrize("n", [1, 3])
def test_notes_cnn_output_shape(n):
    out = notes_cnn()(torch.randn(n, 1, 28, 28))
    assert out.shape == (n, 10)
    assert out.dtype == torch.float32


def test_notes_cnn_forward_equals_functional_composition():
    model = notes_cnn(seed=3)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    h = F.conv2d(x, model.conv1.weight, model.conv1.bias, stride=1, padding=1)
    assert h.shape == (4, 32, 26, 26)
    h = F.conv2d(h, model.conv2.weight, model.conv2.bias, stride=1, padding=1)
    assert h.shape == (4, 64, 26, 26)
    h = F.max_pool2d(F.relu(h), kernel_size=2, stride=2)
    assert h.shape == (4, 64, 13, 13)
    expected = F.linear(h.reshape(4, -1), model.fc1.weight, model.fc1.bias)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-5, atol=1e-5)


def test_notes_cnn_gradients_equal_the_notes_order():
    # forward pools before the ReLU; the notes apply the ReLU first. Same outputs, same gradients.
    model = notes_cnn(seed=4)
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    y = torch.arange(6) % 10
    F.cross_entropy(model(x), y).backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    h = F.max_pool2d(F.relu(model.conv2(model.conv1(x))), 2)
    notes_out = model.fc1(h.flatten(1))
    F.cross_entropy(notes_out, y).backward()
    assert torch.equal(model(x), notes_out)
    for a, p in zip(ours, model.parameters()):
        assert torch.equal(a, p.grad)


def test_notes_cnn_has_no_activation_between_convolutions():
    model = notes_cnn(seed=3)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    relu_between = F.conv2d(F.relu(model.conv1(x)), model.conv2.weight, model.conv2.bias, padding=1)
    expected = model.fc1(F.max_pool2d(F.relu(relu_between), 2).flatten(1))
    with torch.no_grad():
        assert not torch.allclose(model(x), expected.detach(), atol=1e-4)


@pytest.mark.parametrize("image_size,classes", [(32, 10), (20, 4)])
def test_notes_cnn_other_sizes(image_size, classes):
    model = NotesCNN(NotesCNNConfig(in_channels=3, num_classes=classes, image_size=image_size))
    side = conv_out(conv_out(conv_out(image_size, 5, 1, 1), 3, 1, 1), 2, 2)
    assert model.fc1.in_features == side * side * 64
    assert model(torch.zeros(2, 3, image_size, image_size)).shape == (2, classes)


def test_count_macs_notes_cnn_matches_hand_count():
    hand = 26 * 26 * 32 * 25 + 26 * 26 * 64 * 32 * 9 + 10816 * 10
    assert hand == 13_108_992
    assert count_macs(notes_cnn(), (1, 28, 28)) == hand


def test_count_macs_keeps_mode_and_removes_hooks():
    model = notes_cnn()
    model.train()
    first = count_macs(model, (1, 28, 28))
    assert model.training
    assert count_macs(model, (1, 28, 28)) == first
    assert not model.conv1._forward_hooks and not model.fc1._forward_hooks
    model.eval()
    count_macs(model, (1, 28, 28))
    assert not model.training


def test_count_macs_vgg_tiny_matches_hand_count():
    model = build_model("vgg-tiny", model_config("vgg-tiny"))
    hand = 28 * 28 * 9 * (16 * 1 + 16 * 16) + 14 * 14 * 9 * (32 * 16 + 32 * 32) + 7 * 7 * 9 * (64 * 32 + 64 * 64) + 64 * 10
    assert count_macs(model, (1, 28, 28)) == hand


@pytest.mark.parametrize("name,widths", [("vgg-small", (32, 64, 128)), ("vgg-tiny", (16, 32, 64))])
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (1, 1, 28, 28), (3, 1, 32, 20)])
def test_vgg_forward_shapes(name, widths, shape):
    torch.manual_seed(0)
    model = build_model(name, model_config(name)).eval()
    assert isinstance(model, VGGNet)
    assert model.config.widths == widths
    assert model.head.in_features == widths[-1]
    with torch.no_grad():
        assert model(torch.randn(*shape)).shape == (shape[0], 10)


def test_vgg_feature_shapes_per_stage():
    model = VGGNet(VGGConfig()).eval()
    x = torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        assert model.features(x).shape == (2, 128, 7, 7)
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(pools) == 2 and len(convs) == 6
    assert all(c.bias is None and c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)


def test_model_config_overrides_and_ignores_unknown_fields():
    cfg = model_config("vgg-tiny", in_channels=3, num_classes=4, not_a_field=1)
    assert cfg == VGGConfig(in_channels=3, num_classes=4, widths=(16, 32, 64))
    assert model_config("notes-cnn", num_classes=7, widths=(1,)) == NotesCNNConfig(num_classes=7)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("as_lists", [False, True], ids=["asdict", "json-like"])
def test_build_model_rebuilds_from_config_dict(name, as_lists):
    torch.manual_seed(0)
    model = build_model(name, model_config(name, num_classes=7))
    config = dataclasses.asdict(model.config)
    if as_lists:  # what a checkpoint stored as JSON gives back
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    rebuilt = build_model(name, config)
    assert type(rebuilt) is type(model)
    assert rebuilt.config == model.config
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    rebuilt.load_state_dict(a)
    model.eval(), rebuilt.eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


@pytest.mark.parametrize("name", ["nope", "", "VGG-small", "notes_cnn"])
def test_unknown_model_name_raises_user_error(name):
    with pytest.raises(UserError) as info:
        model_config(name)
    assert repr(name) in info.value.message
    assert all(known in info.value.hint for known in MODELS)
    with pytest.raises(UserError):
        build_model(name, {})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_takes_a_training_step(name):
    torch.manual_seed(0)
    model = build_model(name, model_config(name))
    model.train()
    x = torch.randn(8, 1, 28, 28)
    y = torch.arange(8) % 10
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = F.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    assert abs(loss.item() - math.log(10)) < 2.0
    opt.zero_grad()
    loss.backward()
    opt.step()
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p.detach(), before[k])]
    assert unchanged == []
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(F.cross_entropy(model(x), y))
