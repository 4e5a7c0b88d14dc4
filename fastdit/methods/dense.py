"""Dense: every block attends every block. The exactness baseline and the layout of warm-up steps/layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdit.layout.order import ORDERS, TokenOrder
from fastdit.methods.base import Method


@dataclass(frozen=True)
class DenseOptions:
    """Dense attention has no knobs."""


def dense_mask(order: TokenOrder, options: DenseOptions) -> torch.Tensor:
    nv = order.video_blocks
    return torch.ones(1, nv, nv, dtype=torch.bool)


# raster first: the identity permutation, so a dense layout moves no token
DENSE = Method("dense", DenseOptions, dense_mask, orders=tuple(ORDERS), summary="full attention (baseline)")
