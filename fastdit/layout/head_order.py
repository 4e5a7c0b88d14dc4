"""Token orders that depend on q and k: a permutation per head, for queries and keys separately.

A :class:`~fastdit.layout.order.TokenOrder` is a function of the grid, shared by every head. Sparse VideoGen 2
instead clusters each head's queries and keys (k-means) and sorts them by cluster, so that a cluster's tokens
are contiguous; queries and keys get different permutations, computed at the call. A :class:`HeadOrder` is such
a pair of permutations on top of a base order: it reorders only the real video tokens of the base order among
themselves (the video's padding and the text keep their places), so the base order's blocks, validity and text
blocks stay what they are and one :class:`~fastdit.layout.block.BlockLayout` over the base order's blocks
describes the pattern. Kernels never see the permutation: the engine moves queries, keys and values in before
the kernel and the output back after it (:meth:`queries`, :meth:`keys`, :meth:`restore`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdit.layout.order import TokenOrder

__all__ = ["HeadOrder"]


@dataclass(frozen=True, eq=False)
class HeadOrder:
    """Per-head permutations of the real video tokens of ``base``.

    Args:
        base: the order the permutations act in (its video tokens must be its first positions, as in the
            raster order).
        query_source: ``[B, H, n]`` int64, ``n = base.grid.video_tokens``: the base-order position of the
            query at each of the first ``n`` positions of this order, per batch element and head.
        key_source: ``[B, H, n]`` int64, the same for keys and values.
    """

    base: TokenOrder
    query_source: torch.Tensor
    key_source: torch.Tensor

    def __post_init__(self) -> None:
        n = self.base.grid.video_tokens
        if not bool((self.base.video_destination == torch.arange(n)).all()):
            raise ValueError(f"a per-head order permutes the leading video tokens of its base order; the "
                             f"{self.base.kind} order does not keep them there")
        for name in ("query_source", "key_source"):
            src = getattr(self, name)
            if src.ndim != 3 or src.shape[-1] != n:
                raise ValueError(f"{name} must be [B, H, {n}], got {tuple(src.shape)}")
        if self.query_source.shape[:2] != self.key_source.shape[:2]:
            raise ValueError("query_source and key_source must have the same batch and head sizes")

    @property
    def batch(self) -> int:
        return self.query_source.shape[0]

    @property
    def heads(self) -> int:
        return self.query_source.shape[1]

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, H, S, ...]`` in the base order → in this order's query permutation (a new tensor)."""
        return _gather(x, self.query_source)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, H, S, ...]`` (keys or values) in the base order → in this order's key permutation."""
        return _gather(x, self.key_source)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`queries`: ``x [B, H, S, ...]`` (an output or its log-sum-exp) back to the base order."""
        src = self.query_source.to(x.device)
        n = src.shape[-1]
        index = src.view(*src.shape, *(1,) * (x.ndim - 3)).expand(*src.shape, *x.shape[3:])
        out = x.clone()
        out[:, :, :n] = torch.empty_like(x[:, :, :n]).scatter_(2, index, x[:, :, :n])
        return out

    def select(self, batch: int) -> "HeadOrder":
        """The permutations of batch element ``batch`` alone (``B = 1``)."""
        return HeadOrder(self.base, self.query_source[batch:batch + 1], self.key_source[batch:batch + 1])

    def to(self, device: torch.device | str) -> "HeadOrder":
        """A copy whose permutations live on ``device``."""
        return HeadOrder(self.base, self.query_source.to(device), self.key_source.to(device))


def _gather(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``x`` with its first ``n`` positions along dim 2 taken from ``source [B, H, n]`` (per batch and head)."""
    if x.shape[:2] != source.shape[:2]:
        raise ValueError(f"a per-head order of {source.shape[0]} x {source.shape[1]} (batch x heads) can't move "
                         f"a tensor of {x.shape[0]} x {x.shape[1]}")
    src = source.to(x.device)
    n = src.shape[-1]
    index = src.view(*src.shape, *(1,) * (x.ndim - 3)).expand(*src.shape, *x.shape[3:])
    out = x.clone()
    out[:, :, :n] = torch.gather(x[:, :, :n], 2, index)
    return out
