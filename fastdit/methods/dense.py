"""Dense: every block attends every block. The exactness baseline and the layout of warm-up steps/layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import Tiling
from . import Method, register


@dataclass(frozen=True)
class DenseOptions:
    """Dense attention has no knobs."""


def dense_mask(tiling: Tiling, options: DenseOptions) -> torch.Tensor:
    nv = tiling.video_blocks
    return torch.ones(1, nv, nv, dtype=torch.bool)


register(Method("dense", DenseOptions, dense_mask, summary="full attention (baseline)"))
