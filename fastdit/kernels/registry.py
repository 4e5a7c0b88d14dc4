"""Backend registry: each kernel backend is a plain function registered with the constraints it needs.

A constraint is a small function ``(q, k, v, layout) -> str | None`` that returns why the backend can't run
these inputs, or ``None``. ``backend="auto"`` then means "the first backend, in priority order, whose
constraints hold", and an explicitly requested backend that can't run raises an error naming the failed
requirement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from fastdit.layout.block import BlockLayout

Constraint = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, BlockLayout], Optional[str]]
KernelFn = Callable[..., "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class Backend:
    name: str
    fn: KernelFn
    constraints: tuple[Constraint, ...]
    priority: int  # lower runs first under backend="auto"
    auto: bool = True  # False: never chosen by auto, only by name
    summary: str = ""
    auto_constraints: tuple[Constraint, ...] = ()  # further requirements for being chosen by auto
    handles_tail: bool = False  # computes Sol-Attn's pooled tail itself (else attention() merges it in)
    gives_lse: bool = True  # can return the log-sum-exp (calls that merge partial results need it)
    applies: Optional[Constraint] = None  # under auto, a backend whose check fails here is skipped silently

    def why_not(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                auto: bool = False) -> str | None:
        """The first failed requirement, or ``None`` when this backend can run the inputs.

        ``auto`` adds the requirements for being picked automatically: a backend may run inputs it is a poor
        choice for (the Triton kernel in the CPU interpreter) when asked for by name.
        """
        for check in (*self.auto_constraints, *self.constraints) if auto else self.constraints:
            reason = check(q, k, v, layout)
            if reason:
                return reason
        return None


_BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, *constraints: Constraint, priority: int, auto: bool = True, summary: str = "",
                     auto_constraints: tuple[Constraint, ...] = (), handles_tail: bool = False, gives_lse: bool = True,
                     applies: Optional[Constraint] = None):
    """Decorator: register ``fn(q, k, v, layout, scale, return_lse)`` as backend ``name`` (``applies``: which
    layouts it is for at all, e.g. one method's; it also counts as a constraint)."""

    def wrap(fn: KernelFn) -> KernelFn:
        checks = constraints if applies is None else (applies, *constraints)
        _BACKENDS[name] = Backend(name, fn, checks, priority, auto, summary, auto_constraints, handles_tail,
                                  gives_lse, applies)
        return fn

    return wrap


def backends() -> dict[str, Backend]:
    """Registered backends in ``auto`` priority order."""
    return dict(sorted(_BACKENDS.items(), key=lambda kv: kv[1].priority))


# ---------------------------------------------------------------- reusable constraints
def head_dims(*allowed: int) -> Constraint:
    def check(q, k, v, layout):
        if q.shape[-1] not in allowed:
            return f"head dim {q.shape[-1]} is not supported (supported: {', '.join(map(str, allowed))})"
        return None

    check.__name__ = f"head_dims_{'_'.join(map(str, allowed))}"
    return check


def dtypes(*allowed: torch.dtype) -> Constraint:
    def check(q, k, v, layout):
        if q.dtype not in allowed:
            return f"dtype {q.dtype} is not supported (supported: {', '.join(str(d) for d in allowed)})"
        return None

    check.__name__ = "dtypes"
    return check


def level_zero_only(q, k, v, layout) -> str | None:
    return "pyramid levels (pooled K/V) are not supported" if layout.max_level > 0 else None
