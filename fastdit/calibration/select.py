"""Choosing, from measurements, the sparsest settings that keep every layer and head within a target.

For a warm-up of ``w`` dense steps only the measured steps from ``w`` on count. Per layer, each method's
candidates are checked per head against the target at every counted step (the worst step decides); each
head takes its sparsest candidate that holds, or runs dense when none does (``per_head=False``: one
candidate for all heads, held by every head). The layer takes the method whose heads average the lowest
density, or runs dense when that is no saving. Over the possible warm-ups (each measured step), the one
with the lowest expected density of the whole run wins: dense early steps are worth it only when they let
the later ones be sparser.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .candidates import options_dict
from .measure import Measurements, MethodMeasure
from .result import Calibration, HeadChoice, LayerChoice

__all__ = ["select", "METRICS"]

# what the target bounds: the relative L2 error of the sampled output rows, or the attention mass outside
METRICS = ("rel_l2", "mass")


def _method_choice(key: tuple[str, int], method: str, measure: MethodMeasure, settings: list[Any], used: slice,
                   target: float, metric: str, per_head: bool) -> LayerChoice:
    """This layer's best use of ``method`` over the steps ``used``."""
    error = (measure.rel_l2() if metric == "rel_l2" else measure.mass_loss())[:, used].amax(1)  # [C, H]
    rel_l2 = measure.rel_l2()[:, used].amax(1)
    recall = (1 - measure.mass_loss())[:, used].amin(1)
    density = measure.mean_density()[:, used].mean(1)  # [C, H]
    holds = (error <= target) & (density < 1)
    inf = torch.tensor(math.inf, dtype=density.dtype)
    heads = density.shape[1]
    if per_head:
        picks = [int(torch.where(holds[:, h], density[:, h], inf).argmin()) if bool(holds[:, h].any()) else None
                 for h in range(heads)]
    else:
        shared = holds.all(1)
        pick = int(torch.where(shared, density.mean(1), inf).argmin()) if bool(shared.any()) else None
        picks = [pick] * heads
    choices = tuple(HeadChoice(None) if c is None else
                    HeadChoice(options_dict(settings[c]), float(rel_l2[c, h]), float(recall[c, h]),
                               float(density[c, h])) for h, c in enumerate(picks))
    return LayerChoice(key[0], key[1], method, choices)


def _layer_choice(key: tuple[str, int], measures: dict[str, MethodMeasure], m: Measurements, used: slice,
                  target: float, metric: str, per_head: bool) -> LayerChoice:
    best = None
    for method in m.methods:
        choice = _method_choice(key, method, measures[method], m.options[method], used, target, metric, per_head)
        if best is None or choice.density < best.density:
            best = choice
    if best is None or all(h.options is None for h in best.heads):
        return LayerChoice(key[0], key[1], "dense")
    return best


def select(m: Measurements, target: float, *, metric: str = "rel_l2", per_head: bool = True) -> Calibration:
    """The calibration for ``target`` (an upper bound on ``metric``: ``"rel_l2"``, the relative L2 error of
    the output rows, or ``"mass"``, the share of attention mass left out) from measurements; the
    measurements are kept, so other targets cost no new generation."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target < math.inf:
        raise ValueError(f"target must be a finite number >= 0, got {target!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not m.layers or m.grid is None:
        raise ValueError("nothing was measured: no self-attention call ran at the measured steps "
                         f"{list(m.steps)} of {m.schedule} (are the steps within the run, and the model patched?)")
    best: tuple[float, int, list[LayerChoice]] | None = None
    for first, warmup in enumerate(m.steps):
        used = slice(first, None)
        layers = [_layer_choice(key, measures, m, used, target, metric, per_head)
                  for key, measures in sorted(m.layers.items())]
        sparse_share = 1 - warmup / m.schedule
        expected = (1 - sparse_share) + sparse_share * sum(c.density for c in layers) / len(layers)
        if best is None or expected < best[0] - 1e-12:
            best = (expected, warmup, layers)
    expected, warmup, layers = best
    if all(c.method == "dense" for c in layers):  # no step runs sparse: a warm-up says nothing
        warmup, expected = 0, 1.0
    g = m.grid
    return Calibration(model=m.model, fingerprint=m.fingerprint, grid=(g.t, g.h, g.w), block_size=m.block_size,
                       target=float(target), metric=metric, schedule=m.schedule, dense_steps=warmup,
                       layers=tuple(layers), expected_density=float(expected), measured_steps=m.steps,
                       methods=m.methods, prompts=m.prompts, rows=m.rows, seconds=m.seconds)
