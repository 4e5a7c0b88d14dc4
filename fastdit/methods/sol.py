"""Sol-Attn (NVLabs and MIT, arXiv 2607.24027): key blocks routed by a score threshold, the rest kept as a
pooled term of the softmax.

Per query block, every key block is scored by the query block's mean query against the key block's mean key;
the blocks whose score clears ``mean + tau · std`` of the row are attended exactly, and every other block still
enters the softmax as one pooled term (its mean key, scored by the query block's mean query, weighing its token
count, its values summed): the "approximation correction", so the whole sequence stays in the normaliser. The
correction is computed by the kernels from a layout's ``tail`` flag (:mod:`fastdit.kernels.tail`); this file
only routes.

The rule of the official code, comfy-kitchen 0.2.40's eager reference ``comfy_kitchen/backends/eager/sol_attn.py``
(Apache-2.0; the same op ComfyUI core and its compiled sm_80+ kernels run), with the token order of NVlabs/Sana's
``sol-engine`` backend (``techniques/sparse_backends/sol_attn_backend.py``, commit 36f3155d):

1. **Order.** Video tokens along a 3D Morton curve (:class:`~fastdit.layout.order.MortonOrder`), cut into
   64-token blocks; text tokens after them in blocks of their own. A block's live rows are its real tokens.
2. **Statistics** (fp32, per batch element and head). ``kc`` = each block's mean key, ``c`` = each block's mean
   query (live rows only); the keys are centred on ``k̄`` = the mean of the ``kc`` over all blocks (a row-constant
   shift, so the exact softmax is unchanged). Block score ``s[I, j] = c_I · (kc_j - k̄) · scale · log2(e)``;
   its spread ``σ_I = sqrt(Σ_d c_Id² var_d · (scale · log2 e)² + 1e-6)`` with ``var_d`` the variance of the
   centred ``kc`` over blocks (the row's own mean is 0 by the centring).
3. **Routing.** ``s[I, j] > tau · σ_I`` (``tau`` = 1.0 published); or, with ``topk_ratio > 0``, the
   ``round(topk_ratio · n)`` best blocks (clamped to ``[1, n - 1]``, sink blocks not counted, ties at the boundary
   kept). Always exact: the diagonal band ``|I - j| <= 1``, the text blocks as key sinks (``sink_blocks``) and
   text query rows attend everything (``sink_q``), as fastdit does for every method.
4. **Correction** (``tail``, on by default): see :mod:`fastdit.kernels.tail`.

Published warm-up: the Sana backend's defaults run every step and layer sparse (``dense_steps=0``,
``dense_layers=""``) at ``tau=1.0``; its Wan dispatch takes both as knobs.

Differences from the official code, deliberately:

- One layout serves the batch: a key block is exact for a (query block, head) when any batch element routes it
  (upstream routes per batch element). With one video per call (diffusers calls the transformer once per
  guidance branch) this is the same. Measured on a batch of two different inputs (``make_sol.case_inputs``
  seeds 11 and 12, tau 1): density 0.275 / 0.280 per element upstream, 0.320 for the union (6×16×16); 0.353 /
  0.325 vs 0.366 (4×16×20 + 45 text tokens); output 0.11 / 0.06 relative L2 from upstream's, error against
  dense attention 0.151 → 0.098 and 0.081 → 0.052 (more exact blocks).
- The routing scale is ``1/sqrt(D)``: upstream uses the call's scale, which enters the comparison only through
  the ``1e-6`` guard of ``σ`` (the kernels use the call's scale for the correction, as upstream): at 1.15× the
  scale (entropy scaling) 0 of the fixtures' 5 996 routing entries differ.
- The mean of each block's scores is taken as ``c_I · (kc_j - k̄)`` (the mean query times the key); upstream
  averages the per-token scores of the block, the same number up to fp32 rounding. On the stored fixtures the
  routing is identical (``tests/methods/test_sol.py``).
- Sana's Hunyuan path (``sol_attn_attention_hunyuan``) routes video against video only and merges the text
  keys densely; comfy-kitchen's op, reproduced here, routes over the whole joint sequence with the text as sink
  blocks, so its ``k̄`` and ``var`` include the text blocks' mean keys. Sana's release kernels (CuTe DSL,
  SM90/SM100, forward only) prepare their threshold with code of their own (``compute_global_qck_threshold``);
  they were not run (no GPU here, and the repository is too large to fetch), so agreement with them is not
  measured.
- A batch whose prompts are padded differently (joint-text models with a text mask) is routed from the union
  of its elements and with the padded text tokens in the statistics (the kernels mask them as keys, Sana's
  Hunyuan path crops them), so a sample's output depends on the batch it is in: on the tiny random-weight
  HunyuanVideo-1.5 of ``tests/patching``, padded batch vs each prompt alone differ by up to 0.012 (absolute;
  radial and grat: equal within 2e-5).
- The published Wan run auto-calibrates tau to a density of 0.15 (``SOL_ATTN_AUTO_CALIBRATE=1``) and also
  passes ``--pisa_threshold 1.7``; the preset keeps tau at 1.7 (calibration is ``fastdit.calibrate``'s job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastdit.layout.block import block_means
from fastdit.layout.order import ORDERS, TokenOrder
from fastdit.methods.base import HeadSlice, Method

__all__ = ["SolOptions", "SOL", "SOL_BLOCK_SIZE", "block_scores", "route", "topk_count", "sol_mask"]

SOL_BLOCK_SIZE = 64  # tokens per block in the official code (comfy-kitchen BLOCK, Sana DEFAULT_BLOCK_SIZE)
_LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class SolOptions:
    """``tau``: the routing threshold in standard deviations of the row's block scores (higher: fewer exact
    blocks); ``topk_ratio``: ``0`` for the threshold, else the share of key blocks each query block keeps exact
    (SLA-style top-k, ``tau`` ignored); ``tail``: add the pooled correction for the blocks not routed
    (``False``: the softmax runs over the routed blocks only, upstream's ``tail=False``)."""

    tau: float = 1.0
    topk_ratio: float = 0.0
    tail: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not math.isfinite(self.tau):
            raise ValueError(f"sol tau must be a finite number, got {self.tau!r}")
        if (isinstance(self.topk_ratio, bool) or not isinstance(self.topk_ratio, (int, float))
                or not (self.topk_ratio == 0 or 0 < self.topk_ratio < 1)):
            raise ValueError(f"sol topk_ratio must be 0 (threshold routing) or in (0, 1), got {self.topk_ratio!r}")
        if not isinstance(self.tail, bool):
            raise ValueError(f"sol tail must be True or False, got {self.tail!r}")
        object.__setattr__(self, "tau", float(self.tau))
        object.__setattr__(self, "topk_ratio", float(self.topk_ratio))


def block_scores(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor,
                 block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(score [B, H, n, n], sigma [B, H, n])`` in log2 units: the centred mean-query/mean-key score of every
    (query block, key block) and the spread ``σ`` of each row (see the module docstring).

    Args:
        q, k: ``[B, H, S, D]`` in the layout's order (``S`` a multiple of ``block``).
        valid: ``[S]`` bool, the live rows.
        block: tokens per block.
    """
    log2s = q.shape[-1] ** -0.5 * _LOG2E
    kc, _ = block_means(k, valid, block)
    centroid, _ = block_means(q, valid, block)
    kcc = kc - kc.mean(2, keepdim=True)
    var = (centroid.pow(2) * kcc.pow(2).mean(2, keepdim=True)).sum(-1)
    score = torch.matmul(centroid, kcc.transpose(-1, -2)) * log2s
    return score, torch.sqrt(var * log2s * log2s + 1e-6)


def topk_count(n: int, ratio: float) -> int:
    """Key blocks a query block keeps under top-k routing: ``round(ratio · n)`` clamped to ``[1, n - 1]``
    (``0`` when ``n <= 1``: nothing to choose beyond the forced blocks), as upstream's ``_topk_count``."""
    return max(0, min(n - 1, max(1, round(ratio * n))))


def route(score: torch.Tensor, sigma: torch.Tensor, options: SolOptions, sinks: int) -> torch.Tensor:
    """``[B, H, n, n]`` bool: the key blocks each query block attends exactly.

    Args:
        score, sigma: from :func:`block_scores`.
        options: the method's options.
        sinks: trailing key blocks that are sinks (text): always exact, outside the top-k budget.
    """
    n = score.shape[-1]
    if options.topk_ratio:
        ranked = score.clone()
        ranked[..., n - sinks:] = float("-inf")
        kept = topk_count(n - sinks, options.topk_ratio)
        if kept:
            exact = ranked >= ranked.topk(kept, dim=-1).values[..., -1:]  # a tie at the boundary is kept
        else:
            exact = torch.zeros_like(score, dtype=torch.bool)
    else:
        exact = score > options.tau * sigma.unsqueeze(-1)
    idx = torch.arange(n, device=score.device)
    exact |= ((idx.view(1, -1) - idx.view(-1, 1)).abs() <= 1)
    exact[..., n - sinks:] = True
    exact[..., n - sinks:, :] = True
    return exact


def sol_mask(order: TokenOrder, options: SolOptions, *, q: torch.Tensor, k: torch.Tensor, layer: int = 0,
             heads: HeadSlice | None = None) -> torch.Tensor:
    """``[H, n_video_blocks, n_video_blocks]`` bool: the key blocks each query block attends exactly, per head.

    ``q, k [B, H, S, D]`` are in ``order`` (text blocks included: they enter the statistics as upstream's sink
    blocks); ``layer`` and ``heads`` are unused (Sol-Attn decides from q and k alone, head by head).
    """
    score, sigma = block_scores(q, k, order.valid, order.block_size)
    nv = order.video_blocks
    return route(score, sigma, options, order.text_blocks)[:, :, :nv, :nv].any(0).cpu()


SOL = Method("sol", SolOptions, sol_mask, dynamic=True, orders=tuple(dict.fromkeys(("morton", *ORDERS))),
             tail=lambda options: options.tail, block_size=SOL_BLOCK_SIZE,
             summary="dynamic; key blocks routed by mean + tau·std of block scores, the rest as pooled terms "
                     "(Sol-Attn)")
