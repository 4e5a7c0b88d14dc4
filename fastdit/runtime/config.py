"""The validated configuration of one ``fastdit.apply`` call."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from fastdit.kernels import available_backends
from fastdit.layout.order import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, check_block_size, check_tile
from fastdit.methods import DEFAULT_BLOCK_SIZE, check_order, get_method, parse_options

__all__ = ["SparseConfig", "LayerPlan", "MIN_BLOCK_SIZE", "MAX_BLOCK_SIZE", "PUBLISHED_SCHEDULE", "check_block_size",
           "check_dense_steps"]

# Published warm-ups are counts of a 50-step schedule; a fraction of the steps falls back to it when the
# schedule length is unknown (a bare transformer called in the user's own loop).
PUBLISHED_SCHEDULE = 50


def check_dense_steps(value: Any) -> int | float:
    """An int step count >= 0, or a float share of the steps in [0, 1] (a warm-up that adapts to
    ``num_inference_steps``, as a 4-step distilled model needs)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return value
    raise ValueError(f"dense_steps must be an int >= 0 (steps) or a float in [0, 1] (a share of the steps), "
                     f"got {value!r}")


def _options_dict(options: Any) -> dict[str, Any]:
    """A method's options (``None``, a dict, or its options dataclass) as a dict."""
    if options is None:
        return {}
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    if not isinstance(options, Mapping):
        raise TypeError(f"SparseConfig.options must be a dict of the method's options, got {type(options).__name__}")
    return dict(options)


@dataclass(frozen=True)
class LayerPlan:
    """How one self-attention layer runs when it is configured on its own (a calibration's choice).

    ``method`` is a registered method, or ``"dense"`` for a layer that always runs dense. ``heads`` holds the
    method's validated options per head (one entry: the same for every head); a ``None`` entry is a head that
    attends every block. All heads of a layer share one method, so they share its token order and one kernel
    call: heads may differ only in options that keep the order (radial decay, pyramid bands, vmoba threshold,
    grat radius, sol tau), and the order is the first sparse head's.
    """

    method: str
    heads: tuple[Any, ...] = ()

    @property
    def dense(self) -> bool:
        return self.method == "dense" or all(h is None for h in self.heads)

    @classmethod
    def create(cls, method: str, heads: list[dict[str, Any] | None]) -> "LayerPlan":
        """Validate ``method`` and each head's options (``None``: a dense head)."""
        if method == "dense":
            return cls("dense", ())
        spec = get_method(method)
        if not heads:
            raise ValueError(f"a {method} layer needs the options of at least one head")
        return cls(spec.name, tuple(None if h is None else parse_options(spec, h) for h in heads))


@dataclass(frozen=True)
class SparseConfig:
    """Everything that decides how self-attention runs once a model is patched: ``fastdit.apply(pipe, config)``.

    Build one with :meth:`create` (which checks every field) or directly; ``apply`` checks it either way.
    ``options`` holds the method's knobs (a dict, or its options dataclass; ``None``: the method's defaults).

    ``dense_steps`` / ``dense_layers``: the first denoising steps / transformer blocks run dense (the layout
    of early, high-noise steps and of the first blocks matters most for quality); ``dense_steps`` is a count
    (int) or a share of the pipeline call's steps (float), see :meth:`warmup_steps`. ``entropy_scaling``
    multiplies the softmax scale by ``sqrt(log N / log n_train)``; ``n_train`` is the self-attention token
    count at the model's training resolution. ``order`` is the token order layouts are built in (``None``: the
    one the method was published with) and ``tile`` the tile of the ``"tiles"`` order.

    ``layers`` maps ``(denoiser name, layer)`` to a :class:`LayerPlan` that overrides ``method`` and
    ``options`` there (per-layer and per-head settings, e.g. from ``fastdit.calibrate``); ``grid`` is the
    ``(t, h, w)`` latent grid those plans were measured on: a call on another grid is refused, or runs with a
    warning when ``reuse_grid`` is set.

    ``permute_once``: where the family and the method allow it (a token order that is the same for every layer,
    no padding between tokens), the hidden states and every per-token input of the blocks are moved into the
    layout's order at the first block and back after the last, instead of gathering q, k, v and scattering the
    output at every attention call (the same result; off by default: on a 2-core CPU the saving was within
    the run-to-run noise, the kernel dominates; see :mod:`fastdit.patching.permute`).
    """

    method: str = "radial"
    options: Any = None
    dense_steps: int | float = 0
    dense_layers: int = 0
    entropy_scaling: bool = False
    n_train: int | None = None
    backend: str = "auto"
    block_size: int = DEFAULT_BLOCK_SIZE
    order: str | None = None
    tile: tuple[int, int, int] | None = None
    layers: Mapping[tuple[str, int], LayerPlan] | None = None
    grid: tuple[int, int, int] | None = None
    reuse_grid: bool = False
    permute_once: bool = False

    def plan(self, model: str, layer: int) -> LayerPlan | None:
        """The layer's own plan, when ``layers`` gives one."""
        return None if self.layers is None else self.layers.get((model, layer))

    def warmup_steps(self, schedule: int | None) -> int:
        """Dense steps of a call with ``schedule`` denoising steps: a count as given, a share rounded to the
        nearest step (the published 12 of 50 is 1 of a distilled model's 4); ``schedule=None`` (unknown)
        takes the share of the 50-step schedule warm-ups are published for."""
        if isinstance(self.dense_steps, int):
            return self.dense_steps
        return math.floor(self.dense_steps * (schedule or PUBLISHED_SCHEDULE) + 0.5)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON data (``options`` and each layer's heads as dicts, ``layers`` as a list), which
        :meth:`from_dict` checks and reads back: what an exported model carries to run in another process."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["options"] = _options_dict(self.options)
        if self.layers is not None:
            data["layers"] = [{"model": model, "layer": layer, "method": plan.method,
                               "heads": [None if h is None else _options_dict(h) for h in plan.heads]}
                              for (model, layer), plan in self.layers.items()]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SparseConfig":
        """The configuration :meth:`to_dict` wrote (lists read back as tuples), checked as :meth:`create`."""
        fields = dict(data)
        method, options, layers = fields.pop("method"), fields.pop("options"), fields.pop("layers", None)
        if layers is not None:
            fields["layers"] = {(entry["model"], entry["layer"]): LayerPlan.create(entry["method"], entry["heads"])
                                for entry in layers}
        for name in ("tile", "grid"):
            if fields.get(name) is not None:
                fields[name] = tuple(fields[name])
        return cls.create(method, dict(options or {}), **fields)

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SparseConfig":
        """The configuration :meth:`to_json` wrote, checked."""
        return cls.from_dict(json.loads(text))

    def checked(self) -> "SparseConfig":
        """This configuration with every field checked as :meth:`create` checks it, and ``options`` as the
        method's options dataclass (a ``ValueError`` or ``TypeError`` names the first bad field)."""
        options = _options_dict(self.options)
        rest = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("method", "options")}
        return SparseConfig.create(self.method, options, **rest)

    @classmethod
    def create(cls, method: str, method_options: dict[str, Any], **fields: Any) -> "SparseConfig":
        """A checked configuration: ``method`` and its ``method_options`` (the knobs), and any other field of
        the class by keyword. Every argument is validated up front, so a bad one never leaves a model half
        patched.

        Args:
            method: a registered method (``fastdit.available_methods()``).
            method_options: the method's knobs by name; unknown names raise ``ValueError`` listing the allowed.
            **fields: ``dense_steps``, ``dense_layers``, ``entropy_scaling``, ``n_train``, ``backend``,
                ``block_size``, ``order``, ``tile``, ``layers``, ``grid``, ``reuse_grid``,
                ``permute_once``.

        Returns:
            The configuration, ``options`` as the method's frozen options dataclass.
        """
        spec = get_method(method)
        options = parse_options(spec, method_options)
        fields["dense_steps"] = check_dense_steps(fields.get("dense_steps", 0))
        value = fields.get("dense_layers", 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"dense_layers must be an int >= 0, got {value!r}")
        backend = fields.get("backend", "auto")
        if backend != "auto" and backend not in available_backends():
            raise ValueError(f"unknown backend {backend!r}; available: auto, {', '.join(available_backends())}")
        fields.setdefault("block_size", spec.published_block_size)  # sol's 64 tokens, else DEFAULT_BLOCK_SIZE
        block = check_block_size(fields["block_size"])
        for flag in ("entropy_scaling", "permute_once"):
            if not isinstance(fields.get(flag, False), bool):
                raise TypeError(f"{flag} must be True or False")
        n_train = fields.get("n_train")
        if n_train is not None and (not isinstance(n_train, int) or n_train < 2):
            raise ValueError(f"n_train must be an int >= 2 (tokens at the training resolution), got {n_train!r}")
        if fields.get("entropy_scaling") and n_train is None:
            raise ValueError("entropy_scaling=True needs n_train (self-attention tokens at the model's training "
                             "resolution); pass n_train= or use a preset that knows it")
        kind = check_order(spec, fields.get("order"))
        tile = fields.get("tile")
        if tile is not None:
            if kind != "tiles":
                raise ValueError(f"tile= shapes the 'tiles' token order; method {spec.name!r} runs on the {kind!r} "
                                 "order here, which has no tile")
            check_tile(tile, block)
            fields["tile"] = tuple(tile)
        layers = fields.get("layers")
        if layers is not None and not all(isinstance(p, LayerPlan) for p in layers.values()):
            raise TypeError("layers must map (model, layer) to fastdit.runtime.config.LayerPlan")
        return cls(method=spec.name, options=options, **fields)
