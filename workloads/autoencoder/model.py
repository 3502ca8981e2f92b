"""An MLP VAE for 1x8x8 images in [0, 1] with a Bernoulli decoder."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class VAE(nn.Module):
    def __init__(self, *, latent: int = 8, hidden: int = 256):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 64))

    def encode(self, x: torch.Tensor):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits (B, 1, 8, 8)."""
        return self.decoder(z).view(-1, 1, 8, 8)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """-> (logits, mu, logvar). `eps` makes the reparameterised sample reproducible."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def neg_elbo(logits, x, mu, logvar, *, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image negative ELBO in nats (mean over the batch), and its two terms.

    The likelihood is a continuous Bernoulli-free plain Bernoulli on pixel intensities in
    [0, 1] (the usual binarisation-free choice for digits); the prior is N(0, I).
    """
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    return (recon + beta * kl).mean(), recon.mean(), kl.mean()


LOG2 = math.log(2.0)
