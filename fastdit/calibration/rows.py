"""Exact attention on a sample of query rows, and what a block layout changes about it.

Attention of a few query rows against every key costs ``rows / S`` of the whole attention, so calibration can
afford it at every layer of the steps it measures (Sparse VideoGen profiles 32-64 rows the same way). For each
candidate layout the rows are recomputed with only the keys the layout lets their query block read (pooled
pyramid levels included, with the reference kernel's pooled keys and ``ln(m)`` bias), which gives per head:

* the squared error of the output rows against exact attention, summed (its ratio to the exact rows' squared
  norm is the relative L2 error), and
* the recall: the share of the exact softmax mass that falls on the key blocks the layout reads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..kernels.reference import pyramid_level
from ..layout import BlockLayout
from ..order import TokenOrder

__all__ = ["ExactRows", "RowError", "sample_rows", "exact_rows", "layout_rows", "head_density"]


@dataclass
class ExactRows:
    """Dense attention of the sampled rows: ``rows`` (model order), their probabilities ``p [B, H, R, S]`` and
    outputs ``out [B, H, R, D]``; ``q`` the rows' queries and ``keys`` the key validity (``None``: all)."""

    rows: torch.Tensor
    q: torch.Tensor
    p: torch.Tensor
    out: torch.Tensor
    scale: float
    keys: torch.Tensor | None


@dataclass
class RowError:
    """Per head: summed squared output error, summed squared exact norm, summed recall over the rows."""

    sq_error: torch.Tensor
    sq_norm: torch.Tensor
    recall: torch.Tensor
    rows: int


def sample_rows(video: range, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct positions of the video tokens ``video`` (model order), sorted; all when fewer."""
    n = len(video)
    pick = torch.randperm(n, generator=generator)[:count].sort().values
    return pick + video.start


def exact_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, scale: float | None,
               keys: torch.Tensor | None = None) -> ExactRows:
    """Dense attention of query ``rows`` of ``q, k, v [B, H, S, D]`` (model order), in fp32; ``keys [B|1, S]``
    bool hides padded keys as the model's own mask does."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qr = q[:, :, rows].float()
    logits = torch.matmul(qr, k.float().transpose(-1, -2)) * scale
    if keys is not None:
        logits = logits.masked_fill(~keys.view(keys.shape[0], 1, 1, -1), -math.inf)
    p = torch.softmax(logits, dim=-1)
    return ExactRows(rows, qr, p, torch.matmul(p, v.float()), scale, keys)


def layout_rows(exact: ExactRows, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                order: TokenOrder) -> RowError:
    """The sampled rows under ``layout`` (over ``order``; ``k, v`` already in that order) against ``exact``."""
    block = order.block_size
    query_block = order.destination[exact.rows.cpu()] // block  # [R]
    level_map = layout.to_level_map()  # [Hl, nq, nk], -1 where not read
    read = level_map[:, query_block].to(k.device).long()  # [Hl, R, nk]
    if exact.keys is not None:  # padded text keys stay hidden, as the engine's kernel call keeps them
        valid = torch.zeros(exact.keys.shape[0], order.seq_len, dtype=torch.bool, device=k.device)
        valid[:, order.destination.to(k.device)] = exact.keys
    else:
        valid = order.valid.to(k.device).unsqueeze(0)
    logits, values = [], []
    for level in range(layout.max_level + 1):
        kl, vl, log_count = pyramid_level(k.float(), v.float(), dataclasses.replace(layout, kv_valid=valid[0]),
                                          level)
        owner = (torch.arange(kl.shape[2], device=k.device) << level) // block  # key block of each pooled key
        allowed = read[:, :, owner] == level  # [Hl, R, n_l]
        s = torch.matmul(exact.q, kl.transpose(-1, -2)) * exact.scale + log_count.to(k.device)
        if level == 0 and exact.keys is not None:
            s = s.masked_fill(~valid.view(valid.shape[0], 1, 1, -1), -math.inf)
        logits.append(s.masked_fill(~allowed.unsqueeze(0), -math.inf))
        values.append(vl)
    p = torch.softmax(torch.cat(logits, -1), dim=-1).nan_to_num(0.0)
    out = torch.matmul(p, torch.cat(values, 2))
    covered = (read >= 0)[:, :, order.destination.to(k.device) // block]  # [Hl, R, S] in model order
    recall = (exact.p * covered.unsqueeze(0)).sum(-1)  # [B, H, R]
    return RowError(sq_error=((out - exact.out) ** 2).sum((0, 2, 3)), sq_norm=(exact.out ** 2).sum((0, 2, 3)),
                    recall=recall.sum((0, 2)), rows=recall.shape[0] * recall.shape[2])


def head_density(layout: BlockLayout, heads: int) -> torch.Tensor:
    """``[heads]``: each head's share of the dense attention work (a pooled pyramid entry counts ``2**-l``)."""
    weight = torch.ones(layout.nnz, dtype=torch.float64) if layout.level is None \
        else torch.exp2(-layout.level.double())
    cumulative = torch.zeros(layout.nnz + 1, dtype=torch.float64)
    torch.cumsum(weight, 0, out=cumulative[1:])
    per_head = (cumulative[layout.row_ptr[:, -1]] - cumulative[layout.row_ptr[:, 0]])
    per_head = per_head / (layout.n_q_blocks * layout.n_kv_blocks)
    return per_head.expand(heads).clone() if layout.num_heads == 1 else per_head
