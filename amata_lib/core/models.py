"""Models of the paper's experiments, all taking inputs in [0, 1] and returning logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..infra.errors import UserError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class LeNet(nn.Module):
    """LeNet of PyTorch's 2019 MNIST example (the model of the paper's Table 1).

    conv 1->20 5x5, max-pool 2, conv 20->50 5x5, max-pool 2, fc 800->500, fc 500->10,
    ReLU activations. The 2019 example ended in ``log_softmax``; this returns raw
    logits, which gives the same cross-entropy and the CW margin needs logits. The
    first ReLU is the module ``relu1`` so that YOPO can take ``conv1 + relu1`` as its
    first layer (as YOPO's own MNIST network does).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.relu1(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class DigitsCNN(nn.Module):
    """Two-conv CNN sized for scikit-learn's 8x8 ``digits``: conv 1->16, conv 16->32, pool, fc 512->64->10.

    The first ReLU is the module ``relu1`` (YOPO's first layer is ``conv1 + relu1``).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class SmallMNIST(nn.Module):
    """Wong et al.'s small MNIST CNN (``mnist_net`` of locuslab/fast_adversarial): about 4x cheaper than LeNet.

    conv 1->16 4x4 stride 2 pad 1, conv 16->32 4x4 stride 2 pad 1, fc 1568->100, fc 100->10,
    ReLU activations, logits out. The first ReLU is the module ``relu1`` (YOPO's first
    layer is ``conv1 + relu1``). One forward+backward pass of 64 MNIST images took
    8.6 ms against LeNet's 36.6 ms on one thread of this project's 2-core AMD EPYC.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 4, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 100)
        self.fc2 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(self.relu1(self.conv1(x))))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so attacks work in pixel units."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): BN-ReLU-conv twice, identity or 1x1 shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct-ResNet-18 for 32x32 RGB inputs in [0, 1], CIFAR-10 normalisation inside."""

    def __init__(self, num_classes: int = 10, mean: tuple[float, ...] = CIFAR10_MEAN,
                 std: tuple[float, ...] = CIFAR10_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(self.normalize(x)))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.linear(out.flatten(1))


MODELS = {"lenet": LeNet, "mnist_small": SmallMNIST, "digits_cnn": DigitsCNN, "preact_resnet18": PreActResNet18}
DEFAULT_MODEL = {"digits": "digits_cnn", "mnist": "lenet", "cifar10": "preact_resnet18"}


def build(name: str, num_classes: int = 10) -> nn.Module:
    """Model by name: ``lenet``, ``mnist_small``, ``digits_cnn`` or ``preact_resnet18``."""
    if name not in MODELS:
        raise UserError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](num_classes)
