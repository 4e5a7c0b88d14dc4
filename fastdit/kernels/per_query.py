"""Torch reference for layouts with a per-query selection: exactly the token pairs it keeps, on any device.

As the official MoBA code does, each key group is attended by the queries that chose it: per (batch element,
head), the queries of a group are cut into tiles of ``TILE`` rows, each tile attends its group's keys and
returns its output with its log-sum-exp, and a query's partial results (one per chosen group) are merged by
log-sum-exp. The work is the kept pairs plus the padding of each group's last tile, never the envelope's blocks.
Tiles of groups with equally many keys run as one batched call whose gathers stay under ``CHUNK_BYTES``.
"""

from __future__ import annotations

import math

import torch

from fastdit.layout.block import BlockLayout

__all__ = ["torch_selected_attention"]

TILE = 128
CHUNK_BYTES = 96 * 2**20


def _attend_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``q [N, M, D]`` on ``k, v [N, L, D]``: fp32 output and log-sum-exp. Without autograd on the CPU, the
    fused flash kernel SDPA itself runs (it returns the log-sum-exp); otherwise an explicit fp32 softmax,
    which autograd differentiates through the log-sum-exp as well."""
    if not differentiable and q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), 0.0, False, scale=scale)[:2]
        return out.squeeze(1).float(), lse.squeeze(1)
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    lse = torch.logsumexp(s, dim=-1)
    return torch.matmul(torch.exp(s - lse.unsqueeze(-1)), v.float()), lse


def _group_keys(layout: BlockLayout, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The valid key positions sorted by group, each group's first index into them, and its size."""
    selection = layout.selection
    group = selection.key_group.to(device)
    valid = group >= 0
    if layout.kv_valid is not None:
        valid &= layout.kv_valid.to(device)
    positions = valid.nonzero().flatten()
    positions = positions[torch.argsort(group[positions], stable=True)]
    sizes = torch.bincount(group[positions], minlength=selection.n_groups)
    return positions, torch.cumsum(sizes, 0) - sizes, sizes


def _tiles(chosen: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``chosen [S, G]``: the query rows of every tile (``[n_tiles, TILE]``, ``-1`` past a group's queries)
    and each tile's group. Groups with no keys get no tile."""
    groups, queries = (chosen & (sizes > 0)).T.nonzero(as_tuple=True)  # by group, then query
    counts = torch.bincount(groups, minlength=chosen.shape[1])
    n_tiles = -(-counts // TILE)
    first_tile = torch.cumsum(n_tiles, 0) - n_tiles
    rank = torch.arange(groups.numel(), device=groups.device) - (torch.cumsum(counts, 0) - counts)[groups]
    rows = torch.full((int(n_tiles.sum()) * TILE,), -1, dtype=torch.int64, device=groups.device)
    rows[(first_tile[groups] + rank // TILE) * TILE + rank % TILE] = queries
    tile_group = torch.repeat_interleave(torch.arange(chosen.shape[1], device=groups.device), n_tiles)
    return rows.view(-1, TILE), tile_group


def _one_head(q, k, v, chosen, keys, scale, differentiable):
    """Output ``[S, D]`` (fp32) and log-sum-exp ``[S]`` of one batch element and head: ``q, k, v [S, D]``,
    ``chosen [S, G]``, ``keys`` from :func:`_group_keys`."""
    positions, starts, sizes = keys
    S, D = q.shape
    rows, tile_group = _tiles(chosen, sizes)
    outs, lses, used = [], [], []
    tile_len = sizes[tile_group]
    for length in torch.unique(tile_len).tolist():
        tiles = (tile_len == length).nonzero().flatten()
        per_call = max(1, CHUNK_BYTES // (4 * (length + TILE) * D + 4 * TILE * length))
        for c in range(0, tiles.numel(), per_call):
            part = tiles[c:c + per_call]
            key_idx = positions[starts[tile_group[part]].view(-1, 1) + torch.arange(length, device=q.device)]
            query_idx = rows[part]
            o, lse = _attend_lse(q[query_idx.clamp(min=0)], k[key_idx], v[key_idx], scale, differentiable)
            outs.append(o.reshape(-1, D))
            lses.append(lse.reshape(-1))
            used.append(query_idx.reshape(-1))
    if not outs:
        return q.new_zeros(S, D, dtype=torch.float32), torch.full((S,), -math.inf, device=q.device)
    out, lse, row = torch.cat(outs), torch.cat(lses), torch.cat(used)
    real = row >= 0
    out, lse, row = out[real], lse[real], row[real]
    # merge by log-sum-exp; the running maximum only keeps exp() in range (the result does not depend on it)
    top = torch.full((S,), -math.inf, device=q.device).scatter_reduce(0, row, lse.detach(), "amax")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weight = torch.exp(lse - top[row])
    total = torch.zeros(S, device=q.device).index_add(0, row, weight)
    merged = torch.zeros(S, D, device=q.device).index_add(0, row, out * weight.unsqueeze(-1))
    merged = merged / torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(-1)
    return merged, top + torch.log(total)


def torch_selected_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float,
                             return_lse: bool = False):
    """Attention of ``q, k, v [B, H, S, D]`` on exactly the pairs ``layout.selection`` keeps (keys outside
    ``layout.kv_valid`` dropped too). Returns ``out`` in ``q``'s dtype (zero for a query that keeps no key)
    and, with ``return_lse``, the fp32 ``lse [B, H, S]`` (``-inf`` there)."""
    differentiable = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    B, H = q.shape[:2]
    select = layout.selection.select.to(q.device)
    keys = _group_keys(layout, q.device)
    outs, lses = [], []
    for b in range(B):
        for h in range(H):
            chosen = select[min(b, select.shape[0] - 1), min(h, select.shape[1] - 1)]
            o, lse = _one_head(q[b, h], k[b, h], v[b, h], chosen, keys, scale, differentiable)
            outs.append(o)
            lses.append(lse)
    out = torch.stack(outs).view(q.shape).to(q.dtype)
    return (out, torch.stack(lses).view(q.shape[:3])) if return_lse else out
