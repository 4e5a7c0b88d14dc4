"""Structured synthetic q, k, v that attend like a video DiT self-attention layer.

Gaussian random q and k attend almost uniformly, and on them every sparse method looks equally bad. Real video
DiT attention is local (its energy decays with temporal and spatial distance, the observation Radial
attention is built on), differs from head to head in reach, and depends on content, which is what the dynamic
methods exploit. The generator reproduces those three properties:

* **content**: per head, a smooth random field over ``(t, y, x)`` — white noise low-pass filtered with a
  Gaussian of head-specific correlation lengths — so neighbouring tokens carry similar features;
* **projection**: q, k and v are linear maps of the field; k's map is a perturbation of q's, so a query
  matches its own key and its neighbours' best, plus a shared bias direction (a content-free component);
* **position**: Wan's 3D RoPE (head dim split into t, h, w frequency bands), which makes q · k fall off with
  relative position on top of the content.

Heads cycle through four reach profiles (local, temporal, spatial, broad), each jittered by the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastdit.layout.grid import TokenGrid

__all__ = ["HeadProfile", "HEAD_PROFILES", "smooth_field", "rope_3d", "video_qkv"]


@dataclass(frozen=True)
class HeadProfile:
    """Correlation lengths of a head's field (in frames and in tokens) and its logit sharpness."""

    name: str
    temporal: float
    spatial: float
    sharpness: float


HEAD_PROFILES = (
    HeadProfile("local", temporal=1.0, spatial=1.5, sharpness=1.0),
    HeadProfile("temporal", temporal=4.0, spatial=1.0, sharpness=1.0),
    HeadProfile("spatial", temporal=0.7, spatial=4.0, sharpness=1.0),
    HeadProfile("broad", temporal=3.0, spatial=5.0, sharpness=0.8),
)


def smooth_field(shape: tuple[int, int, int], channels: int, lengths: tuple[float, float, float],
                 generator: torch.Generator) -> torch.Tensor:
    """``[t, h, w, channels]`` Gaussian random field with correlation ``lengths`` per axis, unit variance.

    Filtered in the Fourier domain on a grid padded by three lengths per axis and then cropped, so the FFT's
    wrap-around never correlates the first frame with the last.
    """
    pads = [n + 2 * math.ceil(3 * s) for n, s in zip(shape, lengths)]
    noise = torch.randn(channels, *pads, generator=generator, dtype=torch.float64)
    spectrum = torch.fft.fftn(noise, dim=(1, 2, 3))
    for axis, (n, s) in enumerate(zip(pads, lengths)):
        f = torch.fft.fftfreq(n, dtype=torch.float64)
        view = [1, 1, 1, 1]
        view[axis + 1] = n
        spectrum = spectrum * torch.exp(-2 * (math.pi * s * f) ** 2).view(view)
    field = torch.fft.ifftn(spectrum, dim=(1, 2, 3)).real
    starts = [math.ceil(3 * s) for s in lengths]
    field = field[:, starts[0]:starts[0] + shape[0], starts[1]:starts[1] + shape[1], starts[2]:starts[2] + shape[2]]
    field = (field - field.mean(dim=(1, 2, 3), keepdim=True)) / field.std(dim=(1, 2, 3), keepdim=True)
    return field.permute(1, 2, 3, 0).float()


def rope_3d(x: torch.Tensor, grid: TokenGrid, theta: float = 10000.0) -> torch.Tensor:
    """Rotate ``x [..., t*h*w, D]`` (raster order) by Wan's 3D RoPE: ``D - 4*(D//6)`` dims for time and
    ``2*(D//6)`` each for height and width, rotating consecutive pairs at ``theta**(-2i/dims)``."""
    D = x.shape[-1]
    if D % 2:
        raise ValueError(f"3D RoPE needs an even head dim, got {D}")
    hw = 2 * (D // 6)
    angles = []
    for dims, n in ((D - 2 * hw, grid.t), (hw, grid.h), (hw, grid.w)):
        freqs = theta ** (-torch.arange(0, dims, 2, dtype=torch.float64) / dims)
        angles.append(torch.outer(torch.arange(n, dtype=torch.float64), freqs))
    t, y, w = angles
    angle = torch.cat([t[:, None, None].expand(-1, grid.h, grid.w, -1), y[None, :, None].expand(grid.t, -1, grid.w, -1),
                       w[None, None, :].expand(grid.t, grid.h, -1, -1)], dim=-1).reshape(-1, D // 2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def video_qkv(grid: TokenGrid, heads: int = 4, head_dim: int = 64, channels: int = 32, seed: int = 0,
              sharpness: float = 2.0, key_noise: float = 0.5, bias: float = 0.5,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[HeadProfile]]:
    """``q, k, v [1, heads, t*h*w, head_dim]`` (fp32, raster order) and the profile of each head.

    ``sharpness`` scales every head's logits (attention concentrates as it grows; at the default 2 most of
    the mass sits near the query over a diffuse far tail, the profile the fidelity report prints; at 1 the
    tail dominates), ``key_noise`` is how far k's projection strays from q's, ``bias`` the size of the
    content-free component relative to the field's.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (grid.t, grid.h, grid.w)
    q, k, v, profiles = [], [], [], []
    for head in range(heads):
        base = HEAD_PROFILES[head % len(HEAD_PROFILES)]
        jitter = torch.exp(0.2 * torch.randn(2, generator=g)).tolist()
        profile = HeadProfile(base.name, base.temporal * jitter[0], base.spatial * jitter[1], base.sharpness)
        profiles.append(profile)
        lengths = (profile.temporal, profile.spatial, profile.spatial)
        field = smooth_field(shape, channels, lengths, g).reshape(-1, channels)
        w_q = torch.randn(channels, head_dim, generator=g) / math.sqrt(channels)
        w_k = (w_q + key_noise * torch.randn(channels, head_dim, generator=g) / math.sqrt(channels))
        w_k = w_k / math.sqrt(1 + key_noise**2)
        w_v = torch.randn(channels, head_dim, generator=g) / math.sqrt(channels)
        offset = bias * torch.randn(head_dim, generator=g)
        gain = math.sqrt(sharpness * profile.sharpness)
        q.append(rope_3d(gain * (field @ w_q + offset), grid))
        k.append(rope_3d(gain * (field @ w_k + offset), grid))
        v.append(field @ w_v)
    return torch.stack(q)[None], torch.stack(k)[None], torch.stack(v)[None], profiles
