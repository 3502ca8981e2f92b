"""DCGAN-style networks for 1x8x8 images. The generator outputs tanh values in [-1, 1].

The generator upsamples with nearest-neighbour + 3x3 convolutions (no transposed-convolution
checkerboards at this tiny size). The discriminator sees the batch's feature spread
(minibatch standard deviation, Karras et al. 2018), which lets it spot a collapsed generator;
without it, small GANs on digits collapse to one blob within a few epochs.
"""
from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, *, latent: int = 32, width: int = 64):
        super().__init__()
        self.latent, self.width = latent, width
        self.fc = nn.Sequential(nn.Linear(latent, 2 * width * 2 * 2), nn.BatchNorm1d(2 * width * 4), nn.ReLU())
        self.net = nn.Sequential(
            nn.Upsample(scale_factor=2.0), nn.Conv2d(2 * width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Upsample(scale_factor=2.0), nn.Conv2d(width, width // 2, 3, 1, 1), nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            nn.Conv2d(width // 2, 1, 3, 1, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 2 * self.width, 2, 2))


class MinibatchStd(nn.Module):
    """Appends one channel: the mean over features of the batch's standard deviation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.float().std(dim=0, unbiased=False).mean().to(x.dtype)
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


class Discriminator(nn.Module):
    def __init__(self, *, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, width, 4, 2, 1), nn.LeakyReLU(0.2),  # 8 -> 4
            MinibatchStd(),
            nn.Conv2d(width + 1, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),  # 4 -> 2
            nn.Flatten(), nn.Linear(2 * width * 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B,) that x is real; x in [-1, 1]."""
        return self.net(x).view(-1)


class MLPGenerator(nn.Module):
    """z -> 64 pixels through two batch-normalised hidden layers (arch: mlp)."""

    def __init__(self, *, latent: int = 32, width: int = 256):
        super().__init__()
        self.latent = latent
        self.net = nn.Sequential(
            nn.Linear(latent, width), nn.BatchNorm1d(width), nn.LeakyReLU(0.2),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.LeakyReLU(0.2),
            nn.Linear(width, 64), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 8, 8)


class MLPDiscriminator(nn.Module):
    """64 pixels -> logit, with the minibatch-spread feature before the last layers (arch: mlp)."""

    def __init__(self, *, width: int = 256):
        super().__init__()
        self.a = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.LeakyReLU(0.2))
        self.b = nn.Sequential(nn.Linear(width + 1, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        spread = h.float().std(dim=0, unbiased=False).mean().to(h.dtype).expand(h.shape[0], 1)
        return self.b(torch.cat([h, spread], dim=1)).view(-1)
