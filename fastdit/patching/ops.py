"""fastdit's two registered operators: what a compiled or exported patched model calls instead of Python.

A patched model decides per call whether a layer runs dense or sparse (from the denoising step and the grid
its pre-hook recorded), builds a layout (some from q and k themselves) and records stats. Traced by dynamo,
that Python state would become graph guards (a recompile every step) or data-dependent values
(``float(timestep.max())``, which ``torch.export`` refuses). Under tracing, the pre-hook and the processors
therefore call two opaque operators instead:

- ``fastdit::observe_forward(handle, spec, tensors, ints, kinds) -> token``: the pre-hook's bookkeeping (grid,
  step) on the forward inputs it needs. The token is an empty tensor kept in the patch's context.
- ``fastdit::self_attention(q, k, v, attn_mask, token, handle, spec, text_tokens, text_position, dispatch)``:
  the processor's whole engine call. Taking the token as an input orders it after ``observe_forward`` in every
  compiler and keeps ``observe_forward`` in the graph; nothing is mutated, so ``torch.export`` and
  AOTInductor take both.

Both run the same eager Python as an uncompiled model; a graph only sees tensors in, tensors out. ``spec`` is
a JSON string that says everything the operators need of one patched denoiser (the ``SparseConfig``, the
model's name, family, class and diffusers config, and which ``apply`` call patched it); ``handle`` is a
one-element tensor naming the pre-hook (0) or a processor (1, 2, ...) of that denoiser: a tensor, not an
int, so the blocks of a regionally compiled model share one graph instead of recompiling per block on a
constant (``spec`` is the same for all of them). In the process that applied the patch the operators run the
live pre-hook and processors (their stats are the model's); anywhere else (an exported program saved with
``torch.export.save`` and loaded in a fresh process after ``import torch`` and ``import fastdit``, which
imports :mod:`fastdit.patching.patch` when torch is loaded) they rebuild them once from ``spec``
(:func:`fastdit.patching.patch.rebuild`, on a weightless copy of the denoiser), with a step count of their
own. The attention operator's backward recomputes the engine call with autograd on (one more forward of
the attention, as activation checkpointing would), through a third operator so compiled training stays one
graph.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Callable, Iterator, Optional

import torch

__all__ = ["Named", "register", "resolve", "observe_forward", "self_attention", "pack_inputs"]


class Named(list):
    """The objects the operators of one patched denoiser name: its pre-hook's state, then its processors; each
    holds ``handle`` (its position here) and ``spec``."""


_LIVE: "weakref.WeakValueDictionary[str, Named]" = weakref.WeakValueDictionary()
# Rebuilds the objects a spec names where no live patch has them (fastdit.patching.patch.rebuild, which sets
# it when imported: it builds processors, so this module can't import it).
REBUILD: Optional[Callable[[str], Named]] = None


def register(spec: str, objects: list[Any]) -> Named:
    """Name ``objects`` for the operators: each gets ``handle`` (its position) and ``spec``. The operators find
    them while the returned list lives (the patch holds it)."""
    named = Named(objects)
    for position, obj in enumerate(named):
        obj.handle, obj.spec = torch.tensor(position, dtype=torch.int64), spec
    _LIVE[spec] = named
    return named


def resolve(handle: torch.Tensor, spec: str) -> Any:
    """The object ``handle`` names among the patch ``spec`` describes: the live one, else (another process, or
    the patch was removed since) the one rebuilt from ``spec``."""
    named = _LIVE.get(spec)
    if named is None:
        if REBUILD is None:
            raise RuntimeError("fastdit: this traced model runs fastdit's operators in a process that hasn't "
                               "imported fastdit.patching.patch, which rebuilds their patch; import it first")
        named = REBUILD(spec)
    return named[int(handle)]


# ---------------------------------------------------------------- the pre-hook's bookkeeping
def pack_inputs(inputs: dict[str, Any]) -> tuple[list[torch.Tensor], list[int], str]:
    """Forward inputs by name as an operator can take them: tensors, ints, and one kind letter per input
    (``t`` tensor, ``i`` int, ``n`` None) in ``inputs``' order. Other numbers become tensors."""
    tensors, ints, kinds = [], [], []
    for value in inputs.values():
        if value is None:
            kinds.append("n")
        elif isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
            tensors.append(value if isinstance(value, torch.Tensor) else torch.tensor(value))
            kinds.append("t")
        else:
            ints.append(value)
            kinds.append("i")
    return tensors, ints, "".join(kinds)


def _unpack(names: tuple[str, ...], tensors: list[torch.Tensor], ints: list[int], kinds: str) -> dict[str, Any]:
    tensor_it, int_it = iter(tensors), iter(ints)
    pick = {"t": lambda: next(tensor_it), "i": lambda: next(int_it), "n": lambda: None}
    return {name: pick[kind]() for name, kind in zip(names, kinds)}


@torch.library.custom_op("fastdit::observe_forward", mutates_args=())
def observe_forward(handle: torch.Tensor, spec: str, tensors: list[torch.Tensor], ints: Optional[list[int]],
                    kinds: str) -> torch.Tensor:
    """Run the pre-hook ``handle`` names on the forward inputs packed by :func:`pack_inputs`; returns the token
    the attention operators of this forward take. (``ints`` is optional because AOTInductor's packages pass
    an empty list of them as ``None``.)"""
    observer = resolve(handle, spec)
    observer.observe(_unpack(observer.input_names, tensors, ints or [], kinds))
    return torch.empty(0)


@observe_forward.register_fake
def _observe_forward_fake(handle, spec, tensors, ints, kinds) -> torch.Tensor:
    return torch.empty(0)


# ---------------------------------------------------------------- the processors' attention
@torch.library.custom_op("fastdit::self_attention", mutates_args=())
def self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor],
                   token: Optional[torch.Tensor], handle: torch.Tensor, spec: str, text_tokens: Optional[int],
                   text_position: str, dispatch: bool) -> torch.Tensor:
    """The engine call of the processor ``handle`` names, on ``q, k, v [B, H, S, D]``."""
    out = resolve(handle, spec).run(q, k, v, attn_mask, text_tokens, text_position, dispatch)
    return out.contiguous()  # compilers plan around the fake's (contiguous) strides


@self_attention.register_fake
def _self_attention_fake(q, k, v, attn_mask, token, handle, spec, text_tokens, text_position, dispatch):
    return q.new_empty(q.shape)


_AUTOGRAD_KEYS = (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView,
                  torch._C.DispatchKey.AutogradOther, torch._C.DispatchKey.AutogradNestedTensor)


@contextlib.contextmanager
def _autograd() -> Iterator[None]:
    """Autograd back on inside an operator's body, which the dispatcher runs with autograd keys excluded."""
    keys = [key for key in _AUTOGRAD_KEYS if torch._C._dispatch_tls_is_dispatch_key_excluded(key)]
    for key in keys:
        torch._C._dispatch_tls_set_dispatch_key_excluded(key, False)
    try:
        yield
    finally:
        for key in keys:
            torch._C._dispatch_tls_set_dispatch_key_excluded(key, True)


@torch.library.custom_op("fastdit::self_attention_backward", mutates_args=())
def self_attention_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            attn_mask: Optional[torch.Tensor], token: Optional[torch.Tensor], handle: torch.Tensor,
                            spec: str, text_tokens: Optional[int], text_position: str,
                            dispatch: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`self_attention` for ``q, k, v``: the engine call again, differentiated."""
    processor = resolve(handle, spec)
    inputs = [x.detach().requires_grad_() for x in (q, k, v)]
    with _autograd(), torch.enable_grad(), processor.engine.context.unrecorded():
        out = processor.run(*inputs, attn_mask, text_tokens, text_position, dispatch)
        dq, dk, dv = torch.autograd.grad(out, inputs, grad)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@self_attention_backward.register_fake
def _self_attention_backward_fake(grad, q, k, v, attn_mask, token, handle, spec, text_tokens, text_position, dispatch):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, attn_mask, token, handle, *ctx.options = inputs
    ctx.save_for_backward(q, k, v, attn_mask, token, handle)


def _backward(ctx, grad: torch.Tensor):
    q, k, v, attn_mask, token, handle = ctx.saved_tensors
    dq, dk, dv = self_attention_backward(grad, q, k, v, attn_mask, token, handle, *ctx.options)
    return dq, dk, dv, None, None, None, None, None, None, None


self_attention.register_autograd(_backward, setup_context=_setup_context)
