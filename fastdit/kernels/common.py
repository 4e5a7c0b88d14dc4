"""Math every kernel backend shares, so that they agree bit for bit: the pooled K/V of pyramid levels, and the
merge of two partial softmax results by their log-sum-exps.

An optimized backend imports this module, never the reference backend.
"""

from __future__ import annotations

import torch

from fastdit.layout.block import BlockLayout

__all__ = ["pyramid_level", "merge_partial"]


def pyramid_level(k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                  level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K and V of pyramid ``level`` and the log of how many valid tokens each pooled key stands for.

    Level ``l`` averages groups of ``2**l`` consecutive tokens of a kv block over their *valid* tokens, giving
    ``[B, H, S >> l, D]``; level 0 is ``k`` and ``v`` themselves (no copy). The log-count (``[S >> l]``,
    fp32) is the logit bias that makes a pooled key weigh like the tokens it replaces, and is ``-inf`` for a
    group of padding only. Every backend that supports levels builds them here, so they agree bit for bit.
    """
    B, H, S, D = k.shape
    nk, bk = layout.n_kv_blocks, layout.block_kv
    valid = layout.kv_valid
    valid = torch.ones(S, dtype=torch.bool, device=k.device) if valid is None else valid.to(k.device)
    if level == 0:
        return k, v, torch.log(valid.float())
    group = 1 << level
    if bk % group:
        raise ValueError(f"pyramid level {level} needs block_kv divisible by {group}, got {bk}")
    count = valid.view(nk, bk // group, group).sum(-1).flatten()  # valid tokens per pooled key
    if layout.kv_valid is not None:  # zero the padding so it drops out of the sums
        w = valid.to(k.dtype).view(1, 1, S, 1)
        k, v = k * w, v * w
    denom = count.clamp(min=1).to(k.dtype).view(1, 1, -1, 1)
    keys = k.reshape(B, H, -1, group, D).sum(3) / denom
    values = v.reshape(B, H, -1, group, D).sum(3) / denom
    return keys, values, torch.log(count.float())


def merge_partial(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
                  lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint key sets from each set's ``(out [B, H, S, D], lse [B, H, S])``.

    Computed in fp32 around the larger log-sum-exp of each row, so a row that one side leaves empty
    (``lse = -inf``, which a block layout gives a query block with no key block in a chunk) takes the other
    side's result unchanged.
    """
    top = torch.maximum(lse_a, lse_b)
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    w_a, w_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    total = w_a + w_b
    out = (out_a.float() * w_a[..., None] + out_b.float() * w_b[..., None]) / total.clamp_min(1e-30)[..., None]
    return out.to(out_a.dtype), top + torch.log(total)
