"""Per-query selections: which key groups each query attends, finer than the block layout can say.

A method like VMoBA chooses key *chunks* per query. A block layout can only give a whole query block the
union of its queries' choices (at VMoBA's published setting that keeps most of the pairs the method drops), so
such a layout carries a :class:`QuerySelection` as well: each key position belongs to a group (a chunk; text
tokens form one more), and each query lists the groups it attends. Kernels that run it compute exactly those
token pairs; the block layout stays as its envelope (the blocks that hold any kept pair).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["QuerySelection"]


@dataclass(frozen=True, eq=False)
class QuerySelection:
    """Query ``s`` of batch element ``b`` and head ``h`` attends the keys ``j`` with
    ``select[b, h, s, key_group[j]]``.

    Args:
        select: ``[batch, heads, seq_len_q, n_groups]`` bool (``batch == 1``: shared by every batch element,
            ``heads == 1``: by every head); a query that selects nothing has no output.
        key_group: ``[seq_len_kv]`` int64, the group of each key position; ``-1``: no query attends it
            (padding).
    """

    select: torch.Tensor
    key_group: torch.Tensor

    def __post_init__(self) -> None:
        if self.select.ndim != 4 or self.select.dtype != torch.bool:
            raise ValueError(f"select must be a [batch, heads, seq_len_q, n_groups] bool tensor, got "
                             f"{self.select.dtype} {tuple(self.select.shape)}")
        if self.key_group.ndim != 1 or self.key_group.dtype != torch.int64:
            raise ValueError(f"key_group must be a [seq_len_kv] int64 tensor, got {self.key_group.dtype} "
                             f"{tuple(self.key_group.shape)}")
        if self.key_group.numel() and not -1 <= int(self.key_group.min()) <= int(self.key_group.max()) \
                < self.n_groups:
            raise ValueError(f"key_group entries must lie in [-1, {self.n_groups}) (the groups select has)")

    @property
    def n_groups(self) -> int:
        return self.select.shape[-1]

    @property
    def seq_len_q(self) -> int:
        return self.select.shape[2]

    @property
    def seq_len_kv(self) -> int:
        return self.key_group.numel()

    def group_sizes(self) -> torch.Tensor:
        """``[n_groups]`` int64: how many key positions each group holds."""
        keys = self.key_group[self.key_group >= 0]
        return torch.bincount(keys, minlength=self.n_groups)

    def kept_pairs(self) -> torch.Tensor:
        """``[batch, heads, seq_len_q]`` int64: how many keys each query attends."""
        sizes = self.group_sizes().to(self.select.device)
        return (self.select.long() * sizes).sum(-1)

    def density(self) -> float:
        """Share of all (query, key) pairs kept, averaged over the batch elements and heads given."""
        total = self.select.shape[0] * self.select.shape[1] * self.seq_len_q * self.seq_len_kv
        return float(self.kept_pairs().sum()) / total

    def block_mask(self, block_q: int, block_kv: int) -> torch.Tensor:
        """``[heads, n_q_blocks, n_kv_blocks]`` bool: the blocks holding a kept pair of some batch element (the
        block layout a block-sparse kernel needs to see every kept pair)."""
        n_kv = -(-self.seq_len_kv // block_kv)
        picked = self.select.any(0)
        heads = picked.shape[0]
        pad = -self.seq_len_q % block_q
        if pad:
            picked = torch.cat([picked, picked.new_zeros(heads, pad, self.n_groups)], 1)
        picked = picked.view(heads, -1, block_q, self.n_groups).any(2)  # [heads, n_q_blocks, groups]
        touches = torch.zeros(self.n_groups, n_kv, dtype=torch.float32, device=picked.device)
        real = (self.key_group >= 0).nonzero().flatten()
        touches[self.key_group[real].to(picked.device), real.to(picked.device) // block_kv] = 1.0
        return (torch.matmul(picked.float(), touches) > 0).cpu()

    def slice(self, queries: slice, keys: slice) -> "QuerySelection":
        """The selection of query positions ``queries`` against key positions ``keys`` (context-parallel ring
        attention runs a rank's queries on one key chunk at a time)."""
        return QuerySelection(self.select[:, :, queries], self.key_group[keys])

    def batch_rows(self, rows: torch.Tensor) -> "QuerySelection":
        """The selection of batch elements ``rows`` (unchanged when it is shared by the batch)."""
        if self.select.shape[0] == 1:
            return self
        return QuerySelection(self.select[rows.to(self.select.device)], self.key_group)

    def to(self, device: torch.device | str) -> "QuerySelection":
        """A copy whose tensors live on ``device``."""
        return QuerySelection(self.select.to(device), self.key_group.to(device))
