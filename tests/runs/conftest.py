"""Shared by the runs tests: a stand-in for torchmetrics' LPIPS, whose AlexNet weights can't be downloaded here."""

from __future__ import annotations

import torch


class FakeLpips:
    """The mean absolute difference of each image pair, accumulated like a torchmetrics metric (``update``,
    ``compute``, ``reset``), checking that it is given ``[N, 3, H, W]`` images in [0, 1] as LPIPS needs."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        assert x.shape[1] == 3 and 0 <= float(x.min()) and float(x.max()) <= 1
        self.total += float((x - y).abs().mean(dim=(1, 2, 3)).sum())
        self.count += len(x)

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.total / self.count)
