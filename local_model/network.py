"""The classifier network and the image preprocessing that training and serving share.

This module travels inside model.tar.gz as code/network.py next to code/inference.py, so it
must import nothing from the scones package: only torch, torchvision, numpy and Pillow.

The network is torchvision's ResNet (BasicBlock) adapted to 32x32 CIFAR images: a 3x3 stride-1
stem, no max-pool, and configurable narrow widths so it trains in minutes on two CPU cores.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

CLASSES = ("bicycle", "motorcycle")
IMAGE_SIZE = 32
# CIFAR-100 channel statistics: the images are CIFAR-100 crops, so these fit them well.
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)

DEFAULT_ARCHITECTURE = {"widths": [32, 64, 128], "blocks": [1, 1, 1]}


class CifarResNet(ResNet):
    """torchvision ResNet with a CIFAR stem and free stage widths.

    ResNet.__init__ hard-codes a 7x7 stride-2 stem, a max-pool and widths 64..512, all of which
    throw away most of a 32x32 image; so we set up the same attributes ourselves and reuse
    ResNet._make_layer and ResNet.forward unchanged.
    """

    def __init__(self, widths: list[int], blocks: list[int], num_classes: int = len(CLASSES)):
        if len(widths) != len(blocks) or not 1 <= len(widths) <= 4:
            raise ValueError(f"widths {widths} and blocks {blocks} must be lists of equal length 1..4")
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        stages = [
            self._make_layer(BasicBlock, width, count, stride=1 if index == 0 else 2)
            for index, (width, count) in enumerate(zip(widths, blocks))
        ]
        # ResNet.forward walks layer1..layer4; unused stages are identities.
        for index in range(4):
            setattr(self, f"layer{index + 1}", stages[index] if index < len(stages) else nn.Identity())
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero the last BN of each residual branch so every block starts as the identity:
        # trains faster and more stably from scratch (Goyal et al., torchvision's zero_init_residual).
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)


class SmallCNN(nn.Sequential):
    """A plain small CNN (the kind the original project's from-scratch runs used): the benchmark's baseline."""

    def __init__(self, widths: list[int], num_classes: int = len(CLASSES)):
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        layers += [nn.Flatten(), nn.Dropout(0.5),
                   nn.Linear(channels * (IMAGE_SIZE // 2 ** len(widths)) ** 2, 128), nn.ReLU(inplace=True),
                   nn.Linear(128, num_classes)]
        super().__init__(*layers)


ARCHITECTURES = ("resnet", "small-cnn")


def build_model(architecture: dict | None = None) -> nn.Module:
    """architecture: {"name": "resnet" (default) or "small-cnn", "widths": [...], "blocks": [...]}."""
    architecture = {**DEFAULT_ARCHITECTURE, **(architecture or {})}
    name = architecture.get("name", "resnet")
    if name == "resnet":
        return CifarResNet(list(architecture["widths"]), list(architecture["blocks"]))
    if name == "small-cnn":
        return SmallCNN(list(architecture["widths"]))
    raise ValueError(f"unknown architecture {name!r}: expected one of {', '.join(ARCHITECTURES)}")


class InvalidImageError(ValueError):
    """The request body is not an image this model can read."""


def _fit_to_square(image: Image.Image) -> Image.Image:
    """Scale the shorter side to IMAGE_SIZE and centre-crop, as CIFAR framed its objects."""
    if image.size == (IMAGE_SIZE, IMAGE_SIZE):
        return image
    return ImageOps.fit(image, (IMAGE_SIZE, IMAGE_SIZE), method=Image.Resampling.BICUBIC)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white (matplotlib's PNGs, which the training set is, are opaque).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_to_array(image: Image.Image) -> np.ndarray:
    """Any PIL image -> uint8 array (IMAGE_SIZE, IMAGE_SIZE, 3), the form training sees."""
    image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    return np.asarray(_fit_to_square(_to_rgb(image)), dtype=np.uint8)


def load_image_file(path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return image_to_array(image)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    pixels = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy
    # contiguous(): a channels-last input crashes torch 2.14's CPU conv backward on odd batch sizes.
    tensor = pixels.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (tensor - mean) / std


def predict_probabilities(model: nn.Module, batch: torch.Tensor, flip_tta: bool = True,
                          temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities (N, 2) of softmax(logits / temperature); with flip_tta, averaged over the image and its mirror."""
    if not flip_tta:
        return probabilities_from_logits(model(batch)[None], temperature)
    # One forward pass over image and mirror together: half the per-call overhead for single images.
    logits = model(torch.cat([batch, torch.flip(batch, dims=[3])]))
    return probabilities_from_logits(logits.view(2, len(batch), -1), temperature)


def probabilities_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Logits (views, N, classes) -> probabilities (N, classes): the softmax at `temperature`, averaged over views.

    The temperature is calibrated in training on held-out images (train.py) and stored in the checkpoint.
    """
    return torch.softmax(logits.float() / temperature, dim=-1).mean(dim=0)
