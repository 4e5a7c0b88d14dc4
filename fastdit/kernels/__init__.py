"""Kernels: ``attention(q, k, v, layout)`` over ``[B, H, S, D]`` tensors in the layout's token order, one
contract, several backends.

``dispatch.py`` is the entry and the backend table; ``registry.py`` the constraint machinery backends are
registered with; ``common.py`` the math every backend shares (pooled pyramid levels); ``reference.py`` the
PyTorch reference (any device; it defines correct results); ``flex.py`` FlexAttention on the same layout;
``triton/`` the block-sparse FlashAttention kernels for NVIDIA GPUs (forward, backward, pooling, autograd,
and ``env.py`` for the interpreter and Hopper flags). Only code that runs at inference lives here.
"""

from fastdit.kernels.dispatch import attention, available_backends, select_backend
from fastdit.kernels.registry import Backend, backends, register_backend

__all__ = ["attention", "available_backends", "select_backend", "Backend", "backends", "register_backend"]
