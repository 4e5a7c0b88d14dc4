"""The one kernel entry, ``attention(q, k, v, layout)``, and the table of backends it chooses from.

Each backend is registered below with the constraints it needs (small checkers that return why not);
``backend="auto"`` takes the first auto backend, by priority, whose constraints hold, and the error of a named
backend that can't run the inputs says which constraint failed."""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
import sys
import warnings

import torch

from fastdit.kernels.flex import flex_block_attention
from fastdit.kernels.per_query import torch_selected_attention
from fastdit.kernels.kitchen import kitchen_installed, kitchen_kernel_available, kitchen_sol_attention, sol_layout
from fastdit.kernels.reference import torch_block_attention
from fastdit.kernels.registry import Backend, backends, dtypes, head_dims, level_zero_only, register_backend
from fastdit.kernels.tail import merge_tail
from fastdit.layout.block import BlockLayout
from fastdit.layout.order import TokenOrder

__all__ = ["attention", "available_backends", "select_backend"]

_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


def _flex_available(q, k, v, layout) -> str | None:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return "torch.nn.attention.flex_attention is not available in this PyTorch"
    return None


def _pow2_blocks(q, k, v, layout) -> str | None:
    for b in (layout.block_q, layout.block_kv):
        if b < 16 or b & (b - 1):
            return f"block size {b} is not a power of two >= 16"
    return None


def _triton_installed(q, k, v, layout) -> str | None:
    return None if importlib.util.find_spec("triton") else "triton is not installed"


def _interpreter_requested() -> bool:
    """Whether Triton would build kernels for its interpreter now (it reads TRITON_INTERPRET at decoration)."""
    try:
        from triton import knobs
    except ImportError:  # triton < 3.4 compares the variable with "1"
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)


def _triton_device(q, k, v, layout) -> str | None:
    """CUDA tensors on an Ampere or newer GPU, or any tensors in Triton's CPU interpreter."""
    if q.is_cuda:
        major, minor = torch.cuda.get_device_capability(q.device)
        if major < 8:
            return f"the Triton kernel needs compute capability >= 8.0 (Ampere or newer), this GPU has {major}.{minor}"
        return None
    if not _interpreter_requested():
        return (f"inputs are on {q.device.type}: the Triton kernel needs CUDA tensors, or TRITON_INTERPRET=1 to "
                "run in Triton's CPU interpreter")
    loaded = sys.modules.get("fastdit.kernels.triton.env")
    if loaded is not None and not loaded.INTERPRETED:
        return "the Triton kernel was loaded for the GPU before TRITON_INTERPRET=1 was set (set it before first use)"
    return None


def _cuda_tensors(q, k, v, layout) -> str | None:
    return None if q.is_cuda else f"inputs are on {q.device.type}, not CUDA"


def _differentiable(q, k, v, layout) -> str | None:
    """Training needs a backward: the Triton one runs level-0 layouts (pyramid levels train through torch)."""
    if not (torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))):
        return None
    if layout.max_level > 0:
        return "the Triton backward runs level-0 layouts only (pooled pyramid levels have no Triton backward)"
    if layout.tail:
        return ("Sol-Attn's pooled tail needs the log-sum-exp's gradient, which the Triton backward does not give "
                "(train sol through backend='torch')")
    return None


def _blocks_only(q, k, v, layout) -> str | None:
    if layout.selection is not None:
        return ("the layout selects keys per query (vmoba), which the Triton kernel does not run yet; use "
                "backend='torch', or vmoba's selection='block_union'")
    return None


def _triton_block_attention(q, k, v, layout, scale, return_lse=False):
    """Imports the kernels on first use: Triton decides then between compiling and interpreting them."""
    from fastdit.kernels.triton.autograd import TritonBlockSparseAttention, needs_grad
    from fastdit.kernels.triton.forward import triton_block_attention

    if not needs_grad(q, k, v):
        return triton_block_attention(q, k, v, layout, scale, return_lse)
    out, lse = TritonBlockSparseAttention.apply(q, k, v, layout, scale)
    return (out, lse) if return_lse else out


register_backend("triton", _triton_installed, _blocks_only, _triton_device, dtypes(*_FLOAT_TYPES),
                 head_dims(16, 32, 64, 128), _pow2_blocks, _differentiable, priority=10,
                 auto_constraints=(_cuda_tensors,),
                 summary="Triton block-sparse flash attention with pyramid levels, forward and backward (CUDA; "
                         "CPU interpreter with TRITON_INTERPRET=1)")(_triton_block_attention)


def _torch_attention(q, k, v, layout, scale, return_lse=False):
    """Per-query selections run by key group, each with the queries that chose it (only their pairs), block
    layouts block by block."""
    run = torch_block_attention if layout.selection is None else torch_selected_attention
    return run(q, k, v, layout, scale, return_lse)


def _forward_only(q, k, v, layout) -> str | None:
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return "comfy-kitchen's Sol-Attn is forward only (train sol through backend='torch')"
    return None


register_backend("kitchen", head_dims(128), kitchen_installed, _forward_only,
                 priority=5, applies=sol_layout, auto_constraints=(_cuda_tensors, kitchen_kernel_available),
                 handles_tail=True, gives_lse=False,
                 summary="comfy-kitchen's Sol-Attn for sol layouts (compiled on sm_80+ CUDA, bf16/fp16, head dim "
                         "128; its eager reference elsewhere by name), forward only")(kitchen_sol_attention)
register_backend("torch", dtypes(*_FLOAT_TYPES), priority=100,
                 summary="PyTorch reference (gather + SDPA; per-query selections by key group), any device"
                 )(_torch_attention)
register_backend("flex", _flex_available, dtypes(*_FLOAT_TYPES), level_zero_only, _pow2_blocks,
                 priority=50, auto=False, summary="FlexAttention BlockMask (comparison point)")(flex_block_attention)

_warned: set[str] = set()


def available_backends() -> list[str]:
    return list(backends())


def select_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                   backend: str = "auto", need_lse: bool = False) -> Backend:
    """The backend that will run these inputs; ``auto`` warns once when a faster backend had to be skipped
    (backends meant for other layouts, e.g. comfy-kitchen for non-sol ones, are skipped silently).
    ``need_lse``: the call wants the log-sum-exp too."""
    registry = backends()
    if backend != "auto":
        if backend not in registry:
            raise ValueError(f"unknown backend {backend!r}; available: auto, {', '.join(registry)}")
        chosen = registry[backend]
        reason = chosen.why_not(q, k, v, layout) or (None if chosen.gives_lse or not need_lse
                                                     else "it returns no log-sum-exp")
        if reason:
            raise ValueError(f"backend {backend!r} can't run these inputs: {reason}")
        return chosen
    skipped = []
    for candidate in registry.values():
        if not candidate.auto or (need_lse and not candidate.gives_lse):
            continue
        if candidate.applies is not None and candidate.applies(q, k, v, layout):
            continue
        reason = candidate.why_not(q, k, v, layout, auto=True)
        if reason is None:
            if skipped and q.is_cuda:
                key = "; ".join(skipped)
                if key not in _warned:
                    _warned.add(key)
                    warnings.warn(f"fastdit: falling back to the {candidate.name!r} backend ({key})", stacklevel=3)
            return candidate
        skipped.append(f"{candidate.name}: {reason}")
    raise ValueError(f"no backend can run these inputs ({'; '.join(skipped)})")


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name} must be [B, H, S, D], got shape {tuple(x.shape)}")
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a fastdit.BlockLayout, got {type(layout).__name__}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         "(need q [B, H, Sq, D] and k, v [B, H, Skv, D])")
    if 0 in q.shape or 0 in k.shape:
        raise ValueError(f"q, k, v must not be empty: got q {tuple(q.shape)}, k {tuple(k.shape)} (batch, heads, "
                         "tokens and head dim must all be >= 1)")
    if q.shape[2] != layout.seq_len_q or k.shape[2] != layout.seq_len_kv:
        raise ValueError(f"sequence lengths q={q.shape[2]}, kv={k.shape[2]} don't match the layout "
                         f"({layout.seq_len_q}, {layout.seq_len_kv}); move tensors to tile order with "
                         "layout.to_layout_order(x)")
    if layout.num_heads not in (1, q.shape[1]):
        raise ValueError(f"layout has {layout.num_heads} heads but q has {q.shape[1]}")
    if layout.selection is not None:
        batch, heads = layout.selection.select.shape[:2]
        if batch not in (1, q.shape[0]) or heads not in (1, q.shape[1]):
            raise ValueError(f"the layout's per-query selection is for {batch} batch element(s) and {heads} "
                             f"head(s), but q has {q.shape[0]} and {q.shape[1]} (select per call)")


def _check_order(layout: BlockLayout, order: TokenOrder | None) -> None:
    """Tensors moved into one order can't run on a layout of another: a layout for another grid, block size
    or tile can have the same padded length, so the length check alone would let it through."""
    if order is None or layout.order is None or order == layout.order:
        return
    raise ValueError(f"q, k, v are in the order {order.describe()} of grid {order.grid}, but the layout is over "
                     f"{layout.order.describe()} of grid {layout.order.grid}; build the layout for the tensors' "
                     "grid and order")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    scale: float | None = None,
    backend: str = "auto",
    return_lse: bool = False,
    order: TokenOrder | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention on ``layout``: each query block attends only the key blocks its row lists.

    Args:
        q, k, v: ``[B, H, S, D]`` in the layout's token order (``layout.to_layout_order(x)``), fp32, fp16 or
            bf16; ``S`` is the layout's padded length; ``H`` the layout's heads, or any when it has one.
        layout: the block layout (``fastdit.build_layout``).
        scale: the softmax scale, a finite number; ``None`` is ``1/sqrt(D)``.
        backend: ``"auto"`` (the first backend whose constraints hold: comfy-kitchen for sol layouts on CUDA
            when installed and supported, Triton on CUDA, else torch), ``"torch"``, ``"triton"``, ``"flex"`` or
            ``"kitchen"``; a named backend that can't run the inputs raises
            ``ValueError`` naming the failed constraint.
        return_lse: also return the log-sum-exp, so partial results can be merged.
        order: the token order the tensors were moved into (e.g. ``other_layout.order``); when given it must
            be the layout's, since a layout for another grid or block size can have the same padded length.

    Returns:
        ``out [B, H, S, D]`` in ``q``'s dtype (outputs at padded query positions are unspecified), and with
        ``return_lse`` the fp32 ``lse [B, H, S]`` too.
    """
    _check_inputs(q, k, v, layout)
    _check_order(layout, order)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
                              or not math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number (or None: 1/sqrt(D)), got {scale!r}")
    chosen = select_backend(q, k, v, layout, backend, need_lse=return_lse)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not layout.tail or chosen.handles_tail:
        return chosen.fn(q, k, v, layout, scale, return_lse)
    out, lse = merge_tail(*chosen.fn(q, k, v, layout, scale, True), q, k, v, layout, scale)
    return (out, lse) if return_lse else out
