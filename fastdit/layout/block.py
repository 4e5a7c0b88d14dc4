"""The block layout: the one data structure between methods and kernels.

A layout says, for every query block, which key/value blocks it attends (CSR, per head or shared by all
heads) and, for pyramid attention, at which pooling level. It is built at block granularity: nothing here is
ever of size S×S in tokens. A method that chooses keys per query (VMoBA) adds a
:class:`~fastdit.layout.selection.QuerySelection`, which kernels then execute exactly; the blocks are its
envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdit.layout.head_order import HeadOrder
from fastdit.layout.order import TokenOrder
from fastdit.layout.selection import QuerySelection

__all__ = ["BlockLayout", "block_means"]


def block_means(x: torch.Tensor, valid: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(means [B, H, n, D] fp32, lengths [n] fp32)``: each block's mean over its live rows, and how many
    live rows it has (at least 1, as Sol-Attn's reference clamps it). Sol-Attn's routing (mean query and key of
    each block) and its pooled correction in the kernels share it, so they agree bit for bit.

    Args:
        x: ``[B, H, S, D]`` with ``S = n · block``.
        valid: ``[S]`` bool, the live rows.
        block: tokens per block.
    """
    B, H, S, D = x.shape
    live = valid.to(x.device)
    lengths = live.view(-1, block).sum(-1).float().clamp(min=1)
    sums = (x.float() * live.view(1, 1, S, 1)).view(B, H, -1, block, D).sum(3)
    return sums / lengths.view(1, 1, -1, 1), lengths


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Block-sparse attention pattern in CSR form: the one data structure between methods and kernels.

    Head ``h``, query block ``i`` attends the key blocks ``col_idx[row_ptr[h, i]:row_ptr[h, i + 1]]``. It knows
    no kernel and no method; :func:`fastdit.kernels.flex.block_mask_from_layout` turns it into a FlexAttention
    ``BlockMask``.

    Args:
        row_ptr: ``[heads, n_q_blocks + 1]`` int64 offsets into ``col_idx`` (``heads == 1``: one pattern shared
            by every head).
        col_idx: ``[nnz]`` int64 key block ids, ascending within each row.
        block_q, block_kv: query and key block sizes in tokens.
        seq_len_q, seq_len_kv: the padded sequence lengths (whole blocks).
        level: ``[nnz]`` int8 pyramid level of each entry (level ``l`` reads K/V averaged over groups of
            ``2**l`` tokens); ``None``: all full resolution.
        kv_valid: ``[seq_len_kv]`` bool, which key positions hold real tokens (padding is masked).
        order: the token grid and order the layout is defined in, so ``[B, H, S, D]`` tensors move between the
            model's order and the layout's (:meth:`to_layout_order`, :meth:`from_layout_order`).
        head_order: per-head query and key permutations of ``order`` computed from q and k (SVG2's clusters);
            the blocks are then blocks of the permuted sequences, and with ``B`` batch elements the layout has
            ``B * H`` heads, batch element ``b``'s heads at ``b * H ... (b + 1) * H - 1``.
        selection: per-query key groups (``None``: every query of a block attends all of its keys); the kernels
            that run it compute exactly the pairs it keeps, and the blocks must hold all of them.
        tail: Sol-Attn's approximation correction: every key block a row does not list still enters that row's
            softmax as one pooled term (the block's mean key scored against the query block's mean query, its
            summed values), so the whole sequence stays in the normaliser (:mod:`fastdit.kernels.tail`).
        routed_by: the dynamic rule that chose the blocks, ``(method, ((option, value), ...))``, so a backend
            that routes on its own (comfy-kitchen's Sol-Attn) can run the layout; ``None`` for the others.
    """

    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    block_q: int
    block_kv: int
    seq_len_q: int
    seq_len_kv: int
    level: torch.Tensor | None = None
    kv_valid: torch.Tensor | None = None
    order: TokenOrder | None = None
    head_order: HeadOrder | None = None
    selection: QuerySelection | None = None
    tail: bool = False
    routed_by: tuple | None = None

    def __post_init__(self) -> None:
        if self.head_order is not None and (self.order != self.head_order.base
                                            or self.num_heads != self.head_order.batch * self.head_order.heads):
            raise ValueError(f"a per-head order of {self.head_order.batch} x {self.head_order.heads} (batch x heads) "
                             f"needs a layout of as many heads over its base order, got {self.num_heads} heads")
        if self.row_ptr.ndim != 2 or self.row_ptr.shape[1] != self.n_q_blocks + 1:
            raise ValueError(f"row_ptr must be [heads, {self.n_q_blocks + 1}], got {tuple(self.row_ptr.shape)}")
        if self.level is not None and self.level.shape != self.col_idx.shape:
            raise ValueError("level must have one entry per col_idx entry")
        if self.kv_valid is not None and self.kv_valid.shape != (self.seq_len_kv,):
            raise ValueError(f"kv_valid must be [{self.seq_len_kv}], got {tuple(self.kv_valid.shape)}")
        if self.order is not None and (
                (self.block_q, self.block_kv) != (self.order.block_size,) * 2
                or (self.seq_len_q, self.seq_len_kv) != (self.order.seq_len,) * 2):
            raise ValueError(f"a layout over {self.order.describe()} ({self.order.seq_len} tokens) can't have "
                             f"{self.block_q}x{self.block_kv}-token blocks over {self.seq_len_q}x{self.seq_len_kv} "
                             "tokens")
        if self.selection is not None:
            sel = self.selection
            if (sel.seq_len_q, sel.seq_len_kv) != (self.seq_len_q, self.seq_len_kv):
                raise ValueError(f"a selection over {sel.seq_len_q}x{sel.seq_len_kv} tokens can't refine a layout "
                                 f"over {self.seq_len_q}x{self.seq_len_kv}")
            if sel.select.shape[1] not in (1, self.num_heads) and self.num_heads != 1:
                raise ValueError(f"a selection for {sel.select.shape[1]} heads can't refine a layout of "
                                 f"{self.num_heads}")
            if self.level is not None:
                raise ValueError("a layout with per-query selections has no pyramid levels")

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_block_mask(
        cls,
        mask: torch.Tensor,
        order: TokenOrder,
        level: torch.Tensor | None = None,
        head_order: HeadOrder | None = None,
        selection: QuerySelection | None = None,
        tail: bool = False,
        routed_by: tuple | None = None,
    ) -> "BlockLayout":
        """Build a layout from a ``[heads, n_blocks, n_blocks]`` bool block mask over ``order``'s blocks.

        ``level`` (same shape, int) gives the pyramid level of each kept entry; ``head_order`` the per-head
        permutations the blocks are cut from (``heads = B * H`` then); ``selection`` the per-query key groups
        inside the kept blocks; ``tail`` and ``routed_by`` as in the class.
        """
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.dtype != torch.bool or mask.shape[1:] != (order.num_blocks, order.num_blocks):
            raise ValueError(f"expected a bool [heads, {order.num_blocks}, {order.num_blocks}] mask, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        heads, nq, _ = mask.shape
        flat = torch.zeros(heads * nq + 1, dtype=torch.int64)
        torch.cumsum(mask.sum(-1).flatten(), 0, out=flat[1:])
        row_ptr = flat[torch.arange(heads).unsqueeze(1) * nq + torch.arange(nq + 1)]
        col_idx = torch.arange(mask.shape[2]).expand_as(mask)[mask]  # row-major: grouped by (head, row)
        levels = None if level is None else level[mask].to(torch.int8)
        valid = order.valid
        return cls(row_ptr, col_idx, order.block_size, order.block_size, order.seq_len, order.seq_len,
                   level=levels, kv_valid=None if bool(valid.all()) else valid, order=order, head_order=head_order,
                   selection=selection, tail=tail, routed_by=routed_by)

    # ---------------------------------------------------------------- shape facts
    @property
    def n_q_blocks(self) -> int:
        return -(-self.seq_len_q // self.block_q)

    @property
    def n_kv_blocks(self) -> int:
        return -(-self.seq_len_kv // self.block_kv)

    @property
    def num_heads(self) -> int:
        """Heads the pattern is given for (1 = shared by all heads)."""
        return self.row_ptr.shape[0]

    @property
    def nnz(self) -> int:
        return self.col_idx.numel()

    @property
    def max_level(self) -> int:
        return 0 if self.level is None or self.level.numel() == 0 else int(self.level.max())

    def row_counts(self) -> torch.Tensor:
        """``[heads, n_q_blocks]``: how many key blocks each query block attends."""
        return self.row_ptr[:, 1:] - self.row_ptr[:, :-1]

    def density(self) -> float:
        """Share of the dense attention work this layout computes.

        A pyramid entry at level ``l`` reads ``1 / 2**l`` of its block's keys, and is counted as that much; with
        a per-query selection it is the share of token pairs the selection keeps.
        """
        if self.selection is not None:
            return self.selection.density()
        total = self.num_heads * self.n_q_blocks * self.n_kv_blocks
        if self.level is None:
            return self.nnz / total
        return float(torch.exp2(-self.level.float()).sum()) / total

    # ---------------------------------------------------------------- conversions
    def to_dense_block_mask(self) -> torch.Tensor:
        """``[heads, n_q_blocks, n_kv_blocks]`` bool mask (for tests and pictures; small: one bit per block)."""
        mask = torch.zeros(self.num_heads, self.n_q_blocks, self.n_kv_blocks, dtype=torch.bool)
        heads, rows = self._entry_rows()
        mask[heads, rows, self.col_idx] = True
        return mask

    def to_level_map(self) -> torch.Tensor:
        """``[heads, n_q_blocks, n_kv_blocks]`` int8: the pooling level of each kept block, -1 where skipped."""
        out = torch.full((self.num_heads, self.n_q_blocks, self.n_kv_blocks), -1, dtype=torch.int8)
        heads, rows = self._entry_rows()
        out[heads, rows, self.col_idx] = 0 if self.level is None else self.level
        return out

    def _entry_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Head and query-block index of every CSR entry."""
        counts = self.row_counts().flatten()
        flat_rows = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        return flat_rows // self.n_q_blocks, flat_rows % self.n_q_blocks

    def kept_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(query block, key block)`` of every kept entry, over all heads (a pair may repeat per head)."""
        _, rows = self._entry_rows()
        return rows, self.col_idx

    def block_slice(self, rows: range, cols: range) -> "BlockLayout":
        """The pattern of query blocks ``rows`` against key blocks ``cols`` (both ranges of block ids), as a
        layout of its own over just those tokens (no token order: the slice is no grid's). Context-parallel
        ring attention runs a rank's query blocks against one key/value chunk at a time with it."""
        if self.tail and (rows.start != 0 or cols != range(0, self.n_kv_blocks)):
            # its pooled terms are centred on the mean key of the whole sequence, and its rows are the leading ones
            raise ValueError("a layout with Sol-Attn's pooled tail can be cut to its leading query blocks only, not "
                             "into key chunks (ring attention)")
        heads, entry_rows = self._entry_rows()
        keep = ((entry_rows >= rows.start) & (entry_rows < rows.stop)
                & (self.col_idx >= cols.start) & (self.col_idx < cols.stop))
        n = len(rows)
        flat = torch.zeros(self.num_heads * n + 1, dtype=torch.int64)
        slot = heads[keep] * n + entry_rows[keep] - rows.start
        torch.cumsum(torch.bincount(slot, minlength=self.num_heads * n), 0, out=flat[1:])
        row_ptr = flat[torch.arange(self.num_heads).unsqueeze(1) * n + torch.arange(n + 1)]
        tokens = slice(cols.start * self.block_kv, cols.stop * self.block_kv)
        queries = slice(rows.start * self.block_q, rows.stop * self.block_q)
        return BlockLayout(row_ptr, self.col_idx[keep] - cols.start, self.block_q, self.block_kv,
                           n * self.block_q, len(cols) * self.block_kv,
                           level=None if self.level is None else self.level[keep],
                           kv_valid=None if self.kv_valid is None else self.kv_valid[tokens],
                           selection=None if self.selection is None else self.selection.slice(queries, tokens),
                           tail=self.tail, routed_by=self.routed_by)

    def padded_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([heads, n_q_blocks], [heads, n_q_blocks, max_count])``: counts and key block ids, padded with 0."""
        counts = self.row_counts()
        width = max(int(counts.max()), 1) if counts.numel() else 1
        heads, rows = self._entry_rows()
        pos = torch.arange(self.nnz) - self.row_ptr[heads, rows]
        idx = torch.zeros(self.num_heads, self.n_q_blocks, width, dtype=torch.int64)
        idx[heads, rows, pos] = self.col_idx
        return counts, idx

    def to(self, device: torch.device | str) -> "BlockLayout":
        """A copy whose index tensors live on ``device`` (kernels read them there)."""
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return BlockLayout(move(self.row_ptr), move(self.col_idx), self.block_q, self.block_kv, self.seq_len_q,
                           self.seq_len_kv, level=move(self.level), kv_valid=move(self.kv_valid), order=self.order,
                           head_order=None if self.head_order is None else self.head_order.to(device),
                           selection=None if self.selection is None else self.selection.to(device),
                           tail=self.tail, routed_by=self.routed_by)

    def head_slice(self, start: int, stop: int) -> "BlockLayout":
        """The pattern of heads ``start:stop`` alone, without a per-head order (the caller has already moved
        its tensors): the engine runs a per-head-ordered layout of ``B * H`` heads one batch element at a time."""
        ptr = self.row_ptr[start:stop]
        return BlockLayout(ptr - ptr[0, 0], self.col_idx[int(ptr[0, 0]):int(ptr[-1, -1])], self.block_q,
                           self.block_kv, self.seq_len_q, self.seq_len_kv,
                           level=None if self.level is None else self.level[int(ptr[0, 0]):int(ptr[-1, -1])],
                           kv_valid=self.kv_valid, order=self.order)

    def to_layout_order(self, x: torch.Tensor, keys: bool = False) -> torch.Tensor:
        """``[B, H, S, D]`` in the model's token order → ``[B, H, seq_len_q, D]`` in the layout's own order
        (padding zero-filled); ``keys``: ``x`` holds keys or values (a per-head order permutes them apart from
        the queries)."""
        x = self._require_order().to_order(x, dim=-2)
        if self.head_order is None:
            return x
        return self.head_order.keys(x) if keys else self.head_order.queries(x)

    def from_layout_order(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, seq_len_q, D]`` in the layout's order (an output, in the queries' order) → ``[B, H, S, D]``
        in the model's token order."""
        if self.head_order is not None:
            x = self.head_order.restore(x)
        return self._require_order().from_order(x, dim=-2)

    def _require_order(self) -> TokenOrder:
        if self.order is None:
            raise ValueError("this layout was built without a token grid; it has no token order")
        return self.order

    def __repr__(self) -> str:
        grid = "" if self.order is None else f", grid={self.order.grid}, order={self.order.describe()}"
        grid += "" if self.selection is None else ", per-query selection"
        return (f"BlockLayout(heads={self.num_heads}, blocks={self.n_q_blocks}x{self.n_kv_blocks}, "
                f"block={self.block_q}x{self.block_kv}, nnz={self.nnz}, density={self.density():.3f}"
                f"{', tail' if self.tail else ''}{grid})")
