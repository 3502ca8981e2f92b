"""A small U-Net that predicts the noise in a 1x8x8 image at a diffusion timestep, and the
DDPM schedule/sampler around it."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """8x8 -> 4x4 -> 2x2 and back, with skip connections; predicts eps."""

    def __init__(self, *, channels: int = 32, tdim: int = 64):
        super().__init__()
        c = channels
        self.tdim = tdim
        self.tmlp = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(1, c, 3, padding=1)
        self.down1 = ResBlock(c, c, tdim)            # 8x8
        self.down2 = ResBlock(c, 2 * c, tdim)        # 4x4
        self.mid = ResBlock(2 * c, 2 * c, tdim)      # 2x2
        self.up2 = ResBlock(4 * c, 2 * c, tdim)      # 4x4 (+ skip)
        self.up1 = ResBlock(3 * c, c, tdim)          # 8x8 (+ skip)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.tmlp(timestep_embedding(t, self.tdim).to(x.dtype))
        h0 = self.inp(x)
        h1 = self.down1(h0, temb)                                   # c, 8x8
        h2 = self.down2(F.avg_pool2d(h1, 2), temb)                  # 2c, 4x4
        m = self.mid(F.avg_pool2d(h2, 2), temb)                     # 2c, 2x2
        u2 = self.up2(torch.cat([F.interpolate(m, scale_factor=2.0), h2], 1), temb)
        u1 = self.up1(torch.cat([F.interpolate(u2, scale_factor=2.0), h1], 1), temb)
        return self.out(u1)


def alpha_bars(schedule: str, T: int) -> torch.Tensor:
    """Cumulative products alpha_bar_t, t = 1..T (float64)."""
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02 * 1000 / T, T, dtype=torch.float64).clamp(max=0.999)
        return torch.cumprod(1.0 - betas, 0)
    s = 0.008  # Nichol & Dhariwal 2021
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    betas = (1 - ab[1:] / ab[:-1]).clamp(max=0.999)
    return torch.cumprod(1.0 - betas, 0)


def q_sample(x0, t, noise, abar):
    """x_t from x_0; t in [0, T) indexes abar."""
    a = abar[t].to(x0.dtype)[:, None, None, None]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


@torch.no_grad()
def sample(model, n: int, *, abar: torch.Tensor, steps: int, eta: float = 1.0, generator=None,
           device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Ancestral sampling on an evenly strided subset of `steps` timesteps (DDIM form;
    eta=1 is DDPM on the respaced schedule, eta=0 deterministic DDIM). Returns x_0 in [-1, 1]."""
    T = abar.shape[0]
    steps = max(1, min(int(steps), T))
    ts = torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long().unique_consecutive()
    x = torch.randn(n, 1, 8, 8, generator=generator, dtype=torch.float32)
    for i, t in enumerate(ts.tolist()):
        a_t = float(abar[t])
        a_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        tt = torch.full((n,), t, dtype=torch.long, device=device)
        eps = model(x.to(device, dtype), tt).float().cpu()
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)  # consistent with the clipped x0
        sigma = eta * math.sqrt(max((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev), 0.0))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0 and i + 1 < len(ts):
            x = x + sigma * torch.randn(x.shape, generator=generator)
    return x.clamp(-1, 1)
