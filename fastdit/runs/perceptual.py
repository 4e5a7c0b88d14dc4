"""LPIPS vs a reference video, through torchmetrics, where it can run without a download.

LPIPS (Zhang, Isola, Efros, Shechtman and Wang 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric") is the distance between two images' normalised AlexNet features, weighted by linear layers
fitted to human judgements: 0 for identical images, higher for images that look more different. It sees what
PSNR and SSIM miss (a texture shifted by a pixel) and forgives what they punish.

It is optional: ``pip install 'fastdit[lpips]'`` brings torchmetrics (its LPIPS ships the linear layers) and
torchvision, and the AlexNet backbone's ImageNet weights must already be in torch's hub cache
(``torch.hub.get_dir()``). fastdit never downloads them, so a comparison never waits on a network nor fails for
want of one; where LPIPS can't run, :func:`lpips_metric` says why in one line and the comparison reports every
other number. To fetch the weights once, on a machine with a network::

    python -c "import torchvision; torchvision.models.alexnet(weights='DEFAULT')"
"""

from __future__ import annotations

import functools
import importlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["LpipsUnavailable", "lpips_metric", "lpips", "MIN_SIDE"]

MIN_SIDE = 32  # px: AlexNet's strides and poolings leave nothing of a smaller frame
_BATCH = 8  # frames per forward pass: bounds the memory of long videos
_LOCK = threading.Lock()  # the metric accumulates between update() and compute(): one video at a time


class LpipsUnavailable(RuntimeError):
    """LPIPS can't be computed here; ``str()`` is one line saying why (a missing package or weights file)."""


def _alexnet_weights() -> Path:
    """Where torchvision keeps the AlexNet weights LPIPS starts from (the file need not exist)."""
    import torchvision

    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=1)
def _build_metric() -> Any:
    """torchmetrics' LPIPS on AlexNet, scoring [0, 1] images, on the GPU when there is one (built once)."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="mean", normalize=True)
    return metric.to("cuda" if torch.cuda.is_available() else "cpu")


def lpips_metric() -> Any:
    """The LPIPS metric, built once per process; checks first that nothing would be downloaded.

    Returns:
        A torchmetrics-style metric: ``update(x, y)`` with ``[N, 3, H, W]`` float images in [0, 1], then
        ``compute()`` (the mean over every image pair given) and ``reset()``.

    Raises:
        LpipsUnavailable: torchmetrics or torchvision is not installed or fails to import, or the AlexNet
            weights are not in torch's hub cache.
    """
    for package in ("torchmetrics", "torchvision"):
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise LpipsUnavailable(f"LPIPS unavailable: {err.name or package} is not installed "
                                   "(pip install 'fastdit[lpips]')") from None
        except Exception as err:  # a broken install: a torchvision built for another torch fails on import
            reason = str(err).splitlines()[0] if str(err) else ""
            raise LpipsUnavailable(f"LPIPS unavailable: {package} can't be imported ({type(err).__name__}: "
                                   f"{reason})") from None
    weights = _alexnet_weights()
    if not weights.is_file():
        # torchvision would download it now; fastdit never does (see the module docstring)
        raise LpipsUnavailable(f"LPIPS unavailable: torchvision's AlexNet weights are not in {weights.parent} "
                               "(fastdit downloads nothing; see fastdit/runs/perceptual.py)")
    return _build_metric()


def _images(frames: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` frames as float ``[F, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0


def lpips(a: np.ndarray, b: np.ndarray, metric: Any) -> float:
    """Mean LPIPS between the frames of two videos (one image pair per frame; all frames weigh the same).

    Args:
        a, b: uint8 videos ``[frames, height, width, 3]`` of the same shape, at least :data:`MIN_SIDE` pixels
            on each side.
        metric: what :func:`lpips_metric` returns.

    Returns:
        The mean distance: 0 for identical videos, higher for videos that look more different.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"LPIPS needs two uint8 videos [frames, height, width, 3] of the same shape, got "
                         f"{a.dtype}{list(a.shape)} and {b.dtype}{list(b.shape)}")
    if min(a.shape[1:3]) < MIN_SIDE:
        raise ValueError(f"LPIPS needs frames of at least {MIN_SIDE}x{MIN_SIDE} pixels, got "
                         f"{a.shape[2]}x{a.shape[1]}")
    device = getattr(metric, "device", "cpu")
    with _LOCK, torch.inference_mode():
        metric.reset()
        for start in range(0, len(a), _BATCH):
            metric.update(_images(a[start:start + _BATCH], device), _images(b[start:start + _BATCH], device))
        value = float(metric.compute())
        metric.reset()
    return value
