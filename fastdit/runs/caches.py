"""diffusers' step caches by name, with defaults that work on any model diffusers caches, for the CLI and
:func:`fastdit.runs.run.run_pipeline`.

Caches and sparse attention save different work and compose: a cache (``transformer.enable_cache``) skips
whole blocks or attention layers on steps where their output barely changes, sparse attention makes the
layers that do run cheaper. ``fastdit.apply`` and ``enable_cache`` may come in either order; ``fastdit.stats``
reports the layer calls a cache served. Kinds offered here: ``fbcache`` (First Block Cache), ``pab``
(Pyramid Attention Broadcast), ``taylorseer``, ``magcache``, ``seacache`` and ``textkv``. FasterCache is left
out: it needs a pipeline that batches the conditional and unconditional passes, which Wan's doesn't (use it
through diffusers' API on models whose pipeline does).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["CACHE_KINDS", "CacheSpec", "cache_config", "check_cacheable", "enable_cache", "disable_cache", "knob_label"]


def _pab(pipe: Any, steps: int) -> dict[str, Any]:
    # diffusers' documented example: recompute spatial attention every other call within timesteps 100-800
    return {"spatial_attention_block_skip_range": 2, "current_timestep_callback": lambda: pipe.current_timestep}


# kind -> (diffusers config class, summary, fastdit's defaults for a pipeline and its number of steps)
CACHE_KINDS: dict[str, tuple[str, str, Callable[[Any, int], dict[str, Any]]]] = {
    "fbcache": ("FirstBlockCacheConfig", "First Block Cache: skip the other blocks while the first block's output "
                "changes by less than `threshold`", lambda pipe, steps: {}),
    "pab": ("PyramidAttentionBroadcastConfig", "Pyramid Attention Broadcast: reuse self-attention outputs every "
            "other call in mid-schedule timesteps", _pab),
    "taylorseer": ("TaylorSeerCacheConfig", "TaylorSeer (lite mode: skip the blocks, predict the output "
                   "projection by a Taylor series)", lambda pipe, steps: {"use_lite_mode": True}),
    "magcache": ("MagCacheConfig", "MagCache: skip blocks while the calibrated residual magnitude ratios stay "
                 "within `threshold` (needs mag_ratios)", lambda pipe, steps: {"num_inference_steps": steps}),
    "seacache": ("SeaCacheConfig", "SeaCache: reuse the block stack's residual while its spectral change stays "
                 "within `threshold`", lambda pipe, steps: {}),
    "textkv": ("TextKVCacheConfig", "text K/V cache: project the prompt's keys and values once per call "
               "(lossless)", lambda pipe, steps: {}),
}


@dataclass(frozen=True)
class CacheSpec:
    """A cache kind and the config fields that override fastdit's defaults for it."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return knob_label(self.kind, self.options)


def knob_label(name: str, options: dict[str, Any]) -> str:
    """``name(k=v,...)`` with the knobs sorted, or ``name`` alone: how runs are named in reports."""
    knobs = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{name}({knobs})" if knobs else name


def cache_config(spec: CacheSpec, pipe: Any = None, steps: int = 1) -> Any:
    """The diffusers config of ``spec`` for ``pipe`` running ``steps`` steps; an unknown kind or option, or a
    value the config refuses, is a ``ValueError`` (``pipe=None`` only validates)."""
    if spec.kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache {spec.kind!r}; available: {', '.join(CACHE_KINDS)}")
    class_name, _, defaults = CACHE_KINDS[spec.kind]
    from diffusers import hooks

    config_class = getattr(hooks, class_name, None)
    if config_class is None:
        raise ValueError(f"cache {spec.kind!r} needs diffusers' {class_name}, which this diffusers doesn't have")
    allowed = {f.name for f in dataclasses.fields(config_class) if not f.name.startswith("_")}
    unknown = sorted(set(spec.options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for cache {spec.kind!r}; allowed: "
                         f"{', '.join(sorted(allowed)) or 'none'}")
    numbers = {f.name: f.type for f in dataclasses.fields(config_class) if f.type in (int, float)}
    for name, value in spec.options.items():
        _check_number(spec.kind, name, value, numbers.get(name))
    try:
        return config_class(**{**defaults(pipe, steps), **spec.options})
    except (TypeError, ValueError) as err:
        message = " ".join(str(err).split())  # diffusers' messages run over several lines
        raise ValueError(f"cache {spec.kind!r}: {message}") from None


def _check_number(kind: str, name: str, value: Any, expected: type | None) -> None:
    """A ``ValueError`` for a number that isn't finite, or a field typed ``int``/``float`` given something else:
    diffusers' configs take any value, and ``threshold=nan`` would otherwise run, comparing against NaN."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and not math.isfinite(value):
        raise ValueError(f"cache {kind!r}: {name} must be a finite number, got {value!r}")
    if expected is float and not number or expected is int and not (number and isinstance(value, int)):
        kind_of = "a whole number" if expected is int else "a finite number"
        raise ValueError(f"cache {kind!r}: {name} must be {kind_of}, got {value!r}")


def enable_cache(pipe: Any, spec: CacheSpec, steps: int) -> list[Any]:
    """Enable ``spec`` on every denoiser of ``pipe`` (one config each); returns the models to disable after."""
    from fastdit.patching.components import denoisers

    models = [model for _, model in denoisers(pipe)]
    check_cacheable(models)
    enabled = []
    try:
        for model in models:
            model.enable_cache(cache_config(spec, pipe, steps))
            enabled.append(model)
    except BaseException:
        disable_cache(enabled)
        raise
    return enabled


def check_cacheable(models: list[Any]) -> None:
    """A ``ValueError`` when a denoiser has no diffusers cache support (e.g. the SD UNet)."""
    for model in models:
        if not hasattr(model, "enable_cache"):
            raise ValueError(f"{type(model).__name__} has no diffusers cache support (enable_cache)")


def disable_cache(models: list[Any]) -> None:
    for model in models:
        model.disable_cache()
