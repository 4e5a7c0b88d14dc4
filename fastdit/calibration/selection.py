"""Choosing, from measurements, the sparsest settings that keep attention within a target.

For a warm-up of ``w`` dense steps only the measured steps from ``w`` on count, and a candidate's error is
its worst counted step. Two ways to spend the target:

* ``allocation="cap"`` (default): every head on its own keeps its error within the target (the sparsest
  candidate that does, else dense).
* ``allocation="budget"``: the root mean square of the errors over every head of every layer stays within the
  target, at the lowest total density. Heads whose attention is cheap to sparsify take more of the error,
  heads that need their keys keep them: each head minimises ``density + λ · error²`` and ``λ`` is searched
  until the budget holds. End to end on the toy model it beat the cap at loose targets and lost at tight ones
  (``fastdit bench calibrate``), so it is an option, not the default.

Heads without a candidate worth its error run dense (``per_head=False``: one candidate for all heads of a
layer); a layer takes the method that serves it best, or runs dense. Over the possible warm-ups (each
measured step) the one with the lowest expected density of the whole run wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastdit.calibration.candidates import options_dict
from fastdit.calibration.measurements import Measurements, MethodMeasure
from fastdit.runtime.calibration_file import ALLOCATIONS, METRICS, Calibration, HeadChoice, LayerChoice, check_target

__all__ = ["select", "METRICS", "ALLOCATIONS"]

_SEARCH = 60  # bisection steps of the budget's multiplier (log scale, 1e-6 to 1e12)


@dataclass
class _Table:
    """One layer under one method over the counted steps: ``[candidates, heads]`` error (the target's
    metric, worst step), relative L2 error, recall and density."""

    key: tuple[str, int]
    method: str
    settings: list[Any]
    error: torch.Tensor
    rel_l2: torch.Tensor
    recall: torch.Tensor
    density: torch.Tensor

    @classmethod
    def of(cls, key: tuple[str, int], method: str, measure: MethodMeasure, settings: list[Any], used: slice,
           metric: str) -> "_Table":
        rel_l2 = measure.rel_l2()[:, used].amax(1)
        error = rel_l2 if metric == "rel_l2" else measure.mass_loss()[:, used].amax(1)
        return cls(key, method, settings, error, rel_l2, (1 - measure.mass_loss())[:, used].amin(1),
                   measure.mean_density()[:, used].mean(1))

    def choice(self, picks: list[int | None]) -> LayerChoice:
        heads = tuple(HeadChoice(None) if c is None else
                      HeadChoice(options_dict(self.settings[c]), float(self.rel_l2[c, h]), float(self.recall[c, h]),
                                 float(self.density[c, h])) for h, c in enumerate(picks))
        return LayerChoice(self.key[0], self.key[1], self.method, heads)

    def squared_error(self, picks: list[int | None]) -> float:
        return sum(float(self.error[c, h]) ** 2 for h, c in enumerate(picks) if c is not None)


def _cap_picks(table: _Table, target: float, per_head: bool) -> list[int | None]:
    """Per head, the sparsest candidate within ``target`` (``None``: none is, the head runs dense)."""
    cost = torch.where((table.error <= target) & (table.density < 1), table.density, math.inf)
    return _argmin_picks(cost, per_head)


def _budget_picks(table: _Table, weight: float, per_head: bool) -> list[int | None]:
    """Per head, the candidate minimising ``density + weight · error²`` when that beats dense (cost 1)."""
    cost = torch.where(table.density < 1, table.density + weight * table.error**2, math.inf)
    return _argmin_picks(cost, per_head, dense=1.0)


def _argmin_picks(cost: torch.Tensor, per_head: bool, dense: float = math.inf) -> list[int | None]:
    """Column-wise argmin of ``cost [C, H]`` (``None`` where no candidate costs less than ``dense``), or the
    candidate of least total cost for every head."""
    heads = cost.shape[1]
    if not per_head:
        total = cost.sum(1)
        c = int(total.argmin())
        return [c if bool(total[c] < dense * heads) else None] * heads
    best, index = cost.min(0)
    return [int(c) if bool(b < dense) else None for b, c in zip(best, index)]


def _layers(tables: list[list[_Table]], picker: Callable[[_Table], list[int | None]],
            cost: Callable[[_Table, list[int | None]], float]) -> list[tuple[_Table | None, list[int | None]]]:
    """Per layer, the method (table) and picks of least ``cost``; ``(None, [])`` for a layer that runs dense."""
    out = []
    for per_method in tables:
        options = [(table, picker(table)) for table in per_method]
        options = [(t, p) for t, p in options if any(c is not None for c in p)]
        out.append(min(options, key=lambda tp: cost(*tp)) if options else (None, []))
    return out


def _mean_density(table: _Table, picks: list[int | None]) -> float:
    return sum(1.0 if c is None else float(table.density[c, h]) for h, c in enumerate(picks)) / len(picks)


def _budget(tables: list[list[_Table]], target: float, per_head: bool):
    """The layers' choices of least density whose RMS error over all heads is within ``target``."""
    heads = sum(t[0].error.shape[1] for t in tables if t)

    def solve(weight: float):
        chosen = _layers(tables, lambda t: _budget_picks(t, weight, per_head),
                         lambda t, p: _mean_density(t, p) + weight * t.squared_error(p) / len(p))
        rms = math.sqrt(sum(t.squared_error(p) for t, p in chosen if t is not None) / max(heads, 1))
        return chosen, rms

    lo, hi = 1e-6, 1e12
    chosen, rms = solve(lo)
    if rms <= target:
        return chosen
    for _ in range(_SEARCH):  # the error only falls as its weight grows
        mid = math.sqrt(lo * hi)
        if solve(mid)[1] > target:
            lo = mid
        else:
            hi = mid
    chosen, rms = solve(hi)
    return chosen if rms <= target else [(None, []) for _ in tables]


def select(m: Measurements, target: float, *, metric: str = "rel_l2", allocation: str = "cap",
           per_head: bool = True) -> Calibration:
    """The calibration for ``target`` from measurements (kept, so other targets cost no new generation).

    ``metric``: what the target bounds, ``"rel_l2"`` (the relative L2 error of sampled output rows) or
    ``"mass"`` (the share of attention mass a layout leaves out); ``allocation``: ``"budget"``, the RMS over
    all heads, or ``"cap"``, every head (see the module docstring); ``per_head=False``: one setting for all
    heads of a layer.
    """
    check_target(target, metric, allocation)
    if not m.layers or m.grid is None:
        raise ValueError("nothing was measured: no self-attention call ran at the measured steps "
                         f"{list(m.steps)} of {m.schedule} (are the steps within the run, and the model patched?)")
    best: tuple[float, int, list[LayerChoice]] | None = None
    for first, warmup in enumerate(m.steps):
        used = slice(first, None)
        tables = [[_Table.of(key, method, measures[method], m.options[method], used, metric)
                   for method in m.methods] for key, measures in sorted(m.layers.items())]
        if allocation == "budget":
            chosen = _budget(tables, target, per_head)
        else:
            chosen = _layers(tables, lambda t: _cap_picks(t, target, per_head), _mean_density)
        layers = [LayerChoice(*key, "dense") if table is None else table.choice(picks)
                  for key, (table, picks) in zip(sorted(m.layers), chosen)]
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
                       layers=tuple(layers), expected_density=float(expected), allocation=allocation,
                       measured_steps=m.steps, methods=m.methods, prompts=m.prompts, rows=m.rows,
                       seconds=m.seconds)
