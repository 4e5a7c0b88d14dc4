"""comfy-kitchen's Sol-Attn as a backend (``pip install fastdit[kitchen]``): its compiled sm_80+ kernels on CUDA
(bf16/fp16, head dim 128), its eager reference anywhere when asked for by name.

comfy-kitchen routes on its own, so it runs only layouts that ``sol`` built with one setting for every head
(``layout.routed_by``): it gets the same tau or top-k ratio, the layout's text blocks as its ``sink_blocks`` and
``sink_q``, and the live rows of each 64-token block as ``block_len``; its pooled correction is its own. Its
routing is per batch element (fastdit's layout is one for the batch, see :mod:`fastdit.methods.sol`); its compiled
kernels compute scores in INT8 (comfy-kitchen: cosine ~0.999 to its reference, not bitwise). It returns no
log-sum-exp, so calls that merge partial results (side keys, ring attention) use another backend.
"""

from __future__ import annotations

import importlib.util

import torch

from fastdit.layout.block import BlockLayout

__all__ = ["kitchen_installed", "sol_layout", "kitchen_kernel_available", "kitchen_sol_attention"]

BLOCK = 64  # comfy-kitchen's Sol-Attn block, fixed in its kernels and reference


def kitchen_installed(q, k, v, layout) -> str | None:
    if importlib.util.find_spec("comfy_kitchen") is None:
        return "comfy-kitchen is not installed (pip install fastdit[kitchen])"
    return None


def sol_layout(q, k, v, layout: BlockLayout) -> str | None:
    """A layout comfy-kitchen can redo: routed by ``sol`` with one setting for every head, 64-token blocks."""
    if layout.routed_by is None or layout.routed_by[0] != "sol":
        return "comfy-kitchen runs Sol-Attn layouts only (method 'sol', one setting for all heads)"
    if layout.block_q != BLOCK or layout.order is None:
        return f"comfy-kitchen's Sol-Attn needs the {BLOCK}-token blocks of a layout built over a token grid"
    if q.shape[2] != layout.seq_len_q:
        return "comfy-kitchen's Sol-Attn runs every query block (no text-keys-only rows)"
    return None


def kitchen_kernel_available(q, k, v, layout) -> str | None:
    """comfy-kitchen's compiled kernel for these inputs: CUDA sm_80+, bf16/fp16, head dim 128."""
    from comfy_kitchen import sol_attn_is_available

    if not q.is_cuda or not sol_attn_is_available(q.device):
        return "comfy-kitchen's compiled Sol-Attn needs an sm_80+ CUDA device"
    if q.dtype not in (torch.bfloat16, torch.float16) or q.shape[-1] != 128:
        return f"comfy-kitchen's compiled Sol-Attn takes bf16/fp16 with head dim 128, got {q.dtype}, {q.shape[-1]}"
    return None


def kitchen_sol_attention(q, k, v, layout: BlockLayout, scale: float, return_lse: bool = False) -> torch.Tensor:
    """Sol-Attn by comfy-kitchen on ``[B, H, S, D]`` tensors in the layout's (Morton) order; the layout gives
    the rule (``routed_by``), the sinks (text blocks) and the live rows, comfy-kitchen routes and computes."""
    if return_lse:
        raise ValueError("comfy-kitchen's Sol-Attn returns no log-sum-exp; use backend='torch' or 'triton' for "
                         "calls that merge partial results")
    from comfy_kitchen import sol_attn

    options = dict(layout.routed_by[1])
    order = layout.order
    n, nv = order.num_blocks, order.video_blocks
    block_len = order.valid.view(n, BLOCK).sum(-1).to(device=q.device, dtype=torch.int32)
    out = sol_attn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), tau=options["tau"], scale=scale,
                   sink_blocks=[nv, n], sink_q=[nv, n], topk_ratio=options["topk_ratio"], tail=options["tail"],
                   block_len=block_len)
    return out.transpose(1, 2)
