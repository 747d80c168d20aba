"""Small CNN families for the trained populations, built from 3x3 convolutions.

``depth`` is always the number of 3x3 conv layers; ``width`` the channels of the first
stage. Classifiers take ``(n, 1, 28, 28)`` and end in average pooling to a 3x3 grid and one
linear layer; dense nets (denoising, super-resolution) keep the resolution and predict a
residual added to their input.

- ``plain``: conv-ReLU layers, widths w, 2w, 4w, 4w, ...; 2x2 max-pooling after the first
  two (classifier). No normalisation.
- ``vgg``: three stages of 3x3 conv-BN-ReLU stacks (widths w, 2w, 4w), max-pooling between
  stages; ``depth`` convs shared out over the stages, earlier stages first.
- ``resnet``: a 3x3 stem, then three stages of basic blocks (two 3x3 conv-BN, identity or
  1x1-projection skip), widths w, 2w, 4w, stride 2 entering stages 2 and 3;
  ``depth = 1 + 2 * blocks``, blocks shared out over the stages.
Dense variants keep width w everywhere and add a last 3x3 conv to one channel.
"""
from __future__ import annotations

import torch
from torch import nn

FAMILIES = ("plain", "vgg", "resnet")
ARCHITECTURE_NAMES = {"plain": "plain CNN", "vgg": "VGG-style", "resnet": "ResNet-style"}
# depth levels per family and kind, the middle one is the base
DEPTHS = {
    ("plain", "classify"): (2, 4, 6),
    ("vgg", "classify"): (3, 6, 9),
    ("resnet", "classify"): (7, 13, 19),
    ("plain", "dense"): (3, 5, 7),
    ("vgg", "dense"): (3, 5, 7),
    ("resnet", "dense"): (4, 6, 8),
}
WIDTHS = (4, 8, 16)  # the middle one is the base


def share(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal counts, earlier parts first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a skip connection (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Classifier(nn.Module):
    """Features, average-pooled to a 3x3 grid, then one linear layer."""

    def __init__(self, features: nn.Module, channels: int, n_classes: int, grid: int = 3):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.head = nn.Linear(channels * grid * grid, n_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


class Residual(nn.Module):
    """Dense prediction: ``x + body(x)``."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def _check(family: str, kind: str, depth: int, width: int):
    if family not in FAMILIES:
        raise ValueError(f"unknown architecture family {family!r}; known: {FAMILIES}")
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    if family == "resnet":
        lo = 3 if kind == "classify" else 4
        if depth < lo or (depth - (1 if kind == "classify" else 2)) % 2:
            raise ValueError(f"resnet {kind} depth must be {'1' if kind == 'classify' else '2'}"
                             f" + 2 * blocks (>= {lo}), got {depth}")
    elif depth < (3 if family == "vgg" and kind == "classify" else 2):
        raise ValueError(f"{family} {kind} depth too small: {depth}")


def classifier(family: str, width: int, depth: int, n_classes: int) -> nn.Module:
    """A 1-channel-input classifier of ``depth`` 3x3 conv layers."""
    _check(family, "classify", depth, width)
    w = width
    layers: list[nn.Module] = []
    if family == "plain":
        c = 1
        for i in range(depth):
            c_out = w * 2 ** min(i, 2)
            layers += [conv3x3(c, c_out), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            c = c_out
    elif family == "vgg":
        c = 1
        for s, k in enumerate(share(depth, 3)):
            for _ in range(k):
                layers += [conv3x3(c, w * 2 ** s, bias=False), nn.BatchNorm2d(w * 2 ** s),
                           nn.ReLU()]
                c = w * 2 ** s
            if s < 2:
                layers.append(nn.MaxPool2d(2))
    else:  # resnet
        layers += [conv3x3(1, w, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
        for s, b in enumerate(share((depth - 1) // 2, 3)):
            for j in range(b):
                c_out = w * 2 ** s
                layers.append(BasicBlock(c, c_out, 2 if (j == 0 and s > 0) else 1))
                c = c_out
    return Classifier(nn.Sequential(*layers), c, n_classes)


def dense(family: str, width: int, depth: int) -> nn.Module:
    """A 1-channel image-to-image net of ``depth`` 3x3 conv layers predicting a residual."""
    _check(family, "dense", depth, width)
    w = width
    if family in ("plain", "vgg"):
        bn = family == "vgg"
        layers: list[nn.Module] = []
        c = 1
        for _ in range(depth - 1):
            layers.append(conv3x3(c, w, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU())
            c = w
        layers.append(conv3x3(w, 1))
        return Residual(nn.Sequential(*layers))
    blocks = [BasicBlock(w, w) for _ in range((depth - 2) // 2)]
    return Residual(nn.Sequential(conv3x3(1, w), nn.ReLU(), *blocks, conv3x3(w, 1)))


def build(family: str, width: int, depth: int, kind: str, n_classes: int | None = None):
    """``kind`` "classify" (needs ``n_classes``) or "dense"."""
    if kind == "classify":
        return classifier(family, width, depth, int(n_classes))
    if kind == "dense":
        return dense(family, width, depth)
    raise ValueError(f"unknown net kind {kind!r}")
