"""Small image classifiers written here (no torchvision): LeNet for MNIST-like data, CIFAR ResNet-20/110.

Every model has ``features(x)`` → the penultimate representation, flattened to (N, D), and ``forward(x)`` →
logits (N, num_classes). Inputs are checked: a wrong channel count or image size raises
:class:`graftkit.errors.GraftkitError` naming the expected shape.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from graftkit.errors import GraftkitError


def check_images(x: torch.Tensor, in_channels: int, input_size: int, model: str) -> None:
    """Raise a clear error unless ``x`` is a float batch (N, in_channels, input_size, input_size)."""
    expected = f"(N, {in_channels}, {input_size}, {input_size})"
    if x.dim() != 4:
        raise GraftkitError(f"{model} expects a batch of images {expected}, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise GraftkitError(f"{model} expects {in_channels} channel(s) {expected}, got {x.shape[1]} "
                            f"(shape {tuple(x.shape)})")
    if tuple(x.shape[2:]) != (input_size, input_size):
        raise GraftkitError(f"{model} expects {input_size}x{input_size} images {expected}, got "
                            f"{x.shape[2]}x{x.shape[3]}")
    if not x.is_floating_point():
        raise GraftkitError(f"{model} expects floating-point images, got {x.dtype}")


class LeNet(nn.Module):
    """LeNet-5: conv5(6) → pool → conv5(16) → pool → 120 → 84 → classes, ReLU activations.

    Both convolutions pad by 2 so that any ``input_size`` divisible by 4 works (28 for MNIST, 8 for
    scikit-learn's digits). ``features`` is the 84-dimensional output of the second fully connected layer.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise GraftkitError(f"LeNet needs in_channels >= 1 and num_classes >= 2, got {in_channels}, "
                                f"{num_classes}")
        if input_size < 4 or input_size % 4:
            raise GraftkitError(f"LeNet input_size must be a positive multiple of 4, got {input_size}")
        self.in_channels, self.num_classes, self.input_size = in_channels, num_classes, input_size
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        self.fc1 = nn.Linear(16 * (input_size // 4) ** 2, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels, self.input_size, "LeNet")
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.features(x))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, input_size={self.input_size}"


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity shortcut (1×1 conv + BN where the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n+2: conv3(16) → 3 stages of n blocks (16, 32, 64 channels,
    stride 1, 2, 2) → global average pool → linear. ``features`` is the pooled 64-dimensional vector."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise GraftkitError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        if in_channels < 1 or num_classes < 2 or input_size < 4:
            raise GraftkitError(f"ResNet needs in_channels >= 1, num_classes >= 2, input_size >= 4; got "
                                f"{in_channels}, {num_classes}, {input_size}")
        self.depth, self.in_channels = depth, in_channels
        self.num_classes, self.input_size = num_classes, input_size
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, planes_in = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(planes_in, planes, stride if i == 0 else 1))
                planes_in = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels, self.input_size, f"ResNet-{self.depth}")
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"input_size={self.input_size}")


def resnet20(in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> CifarResNet:
    """ResNet-20 for CIFAR-sized images (0.27M parameters)."""
    return CifarResNet(20, in_channels, num_classes, input_size)


def resnet110(in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> CifarResNet:
    """ResNet-110 for CIFAR-sized images (1.7M parameters), the base classifier of Cohen et al. and MACER."""
    return CifarResNet(110, in_channels, num_classes, input_size)


ARCHITECTURES = {"lenet": LeNet, "resnet20": resnet20, "resnet110": resnet110}


def build_model(arch: str, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """One of :data:`ARCHITECTURES` by name (how checkpoints record their model)."""
    if arch not in ARCHITECTURES:
        raise GraftkitError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](in_channels=in_channels, num_classes=num_classes, input_size=input_size)
