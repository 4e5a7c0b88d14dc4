"""Video quality vs a reference: PSNR and SSIM, computed over every frame.

Both take videos as ``[frames, height, width, channels]`` arrays (uint8, or floats with ``data_range``) and
pool over all frames, so a comparison reports one number per method. PSNR of identical videos is ``inf``;
callers that write JSON decide how to spell that (``fastdit.runs.compare`` writes the string ``"inf"``).

SSIM follows Wang, Bovik, Sheikh and Simoncelli (2004), "Image quality assessment: from error visibility to
structural similarity": local statistics under an 11×11 Gaussian window with σ = 1.5, ``K1 = 0.01``,
``K2 = 0.03``, population (not sample) variances, and the mean of the SSIM map over the window positions that
fit inside the image (no padding), as in the authors' reference implementation. Colour images are scored per
channel and averaged, as scikit-image does with ``channel_axis``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "gaussian_window"]

_K1, _K2 = 0.01, 0.03


def _as_video(x: np.ndarray, name: str) -> np.ndarray:
    """``[F, H, W, C]`` float64 view of a video, an image ``[H, W, C]`` or a grey image ``[H, W]``."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be [frames, height, width, channels] (or one image), got shape {x.shape}")
    return x.astype(np.float64)


def _pair(a: np.ndarray, b: np.ndarray, data_range: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Both videos as float64 ``[F, H, W, C]``, and the peak value: 255 for uint8, 1.0 for floats."""
    if data_range is None:
        kinds = {np.asarray(a).dtype, np.asarray(b).dtype}
        if kinds == {np.dtype(np.uint8)}:
            data_range = 255.0
        elif all(np.issubdtype(k, np.floating) for k in kinds):
            data_range = 1.0
        else:
            raise ValueError(f"pass data_range for videos of dtype {' and '.join(sorted(map(str, kinds)))}")
    a, b = _as_video(a, "a"), _as_video(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"videos must have the same shape, got {a.shape} and {b.shape}")
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return a, b, float(data_range)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, from the mean squared error over all frames, pixels and channels.

    ``data_range`` is the peak value; ``None`` means 255 for uint8 and 1.0 for floats in [0, 1]. Identical
    inputs give ``inf``.
    """
    a, b, data_range = _pair(a, b, data_range)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1D Gaussian of the SSIM window (the 2D window is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of ``x [N, 1, H, W]``."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None, window: int = 11,
         sigma: float = 1.5) -> float:
    """Mean structural similarity over all frames and channels (1.0 for identical inputs).

    Each frame and channel is an image; the result is the mean of every local SSIM value of every such image,
    so all frames weigh the same. Frames smaller than the window are rejected rather than silently scored on
    a smaller window, which would not be the published SSIM.
    """
    a, b, data_range = _pair(a, b, data_range)
    frames, height, width, channels = a.shape
    if height < window or width < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got {height}x{width}")
    g = torch.from_numpy(gaussian_window(window, sigma))
    # one grey image per (frame, channel)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).reshape(frames * channels, 1, height, width)
    y = torch.from_numpy(b).permute(0, 3, 1, 2).reshape(frames * channels, 1, height, width)
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    var_x = _filter(x * x, g) - mu_x**2
    var_y = _filter(y * y, g) - mu_y**2
    cov = _filter(x * y, g) - mu_x * mu_y
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())
