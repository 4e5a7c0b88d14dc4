"""Keep per-call Python logic out of ``torch.compile`` graphs without importing dynamo at start-up."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def eager_only(fn: F) -> F:
    """``torch.compiler.disable(fn)``, applied lazily.

    Importing ``torch._dynamo`` takes seconds, and nothing can be compiling before something imported it
    (``torch.compile`` does), so until then ``fn`` runs as is; afterwards it runs under
    ``torch.compiler.disable``, so a compiled model calls it eagerly instead of tracing per-call state into
    graph guards (which would recompile the model every denoising step).
    """
    disabled = None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nonlocal disabled
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
