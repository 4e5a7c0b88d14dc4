"""The validated configuration of one ``fastdit.apply`` call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .kernels import available_backends
from .methods import DEFAULT_BLOCK_SIZE, check_order, get_method, parse_options
from .order import check_tile


@dataclass(frozen=True)
class SparseConfig:
    """Everything that decides how self-attention runs once a model is patched.

    ``dense_steps`` / ``dense_layers``: the first N denoising steps / transformer blocks run dense (the
    layout of early, high-noise steps and of the first blocks matters most for quality). ``entropy_scaling``
    multiplies the softmax scale by ``sqrt(log N / log n_train)``; ``n_train`` is the self-attention token
    count at the model's training resolution. ``order`` is the token order layouts are built in (``None``: the
    one the method was published with) and ``tile`` the tile of the ``"tiles"`` order.
    """

    method: str = "radial"
    options: Any = None
    dense_steps: int = 0
    dense_layers: int = 0
    entropy_scaling: bool = False
    n_train: int | None = None
    backend: str = "auto"
    block_size: int = DEFAULT_BLOCK_SIZE
    order: str | None = None
    tile: tuple[int, int, int] | None = None

    @classmethod
    def create(cls, method: str, method_options: dict[str, Any], **fields: Any) -> "SparseConfig":
        """Validate every argument up front, so a bad one never leaves a model half patched."""
        spec = get_method(method)
        options = parse_options(spec, method_options)
        for name in ("dense_steps", "dense_layers"):
            value = fields.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        backend = fields.get("backend", "auto")
        if backend != "auto" and backend not in available_backends():
            raise ValueError(f"unknown backend {backend!r}; available: auto, {', '.join(available_backends())}")
        block = fields.get("block_size", DEFAULT_BLOCK_SIZE)
        if not isinstance(block, int) or block < 1 or block & (block - 1):
            raise ValueError(f"block_size must be a power of two, got {block!r}")
        if not isinstance(fields.get("entropy_scaling", False), bool):
            raise TypeError("entropy_scaling must be True or False")
        n_train = fields.get("n_train")
        if n_train is not None and (not isinstance(n_train, int) or n_train < 2):
            raise ValueError(f"n_train must be an int >= 2 (tokens at the training resolution), got {n_train!r}")
        if fields.get("entropy_scaling") and n_train is None:
            raise ValueError("entropy_scaling=True needs n_train (self-attention tokens at the model's training "
                             "resolution); pass n_train= or use a preset that knows it")
        check_order(spec, fields.get("order"))
        tile = fields.get("tile")
        if tile is not None:
            fields["tile"] = tuple(tile)
            check_tile(fields["tile"], block)
        return cls(method=spec.name, options=options, **fields)
