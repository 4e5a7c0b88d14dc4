"""Measuring every candidate layout of every layer and head during a dense generation.

:class:`Measurements` is an observer of fastdit's engine (``AttentionCall``): at the denoising steps it was
asked to measure, it samples query rows of each self-attention call, computes them exactly, and records for
each method and each rung of its knob how far the rows move under that layout (per head), how much of the
attention mass the layout keeps, and the layout's density per head. Sums are kept, so a step's error pools
every measured call of the step (every prompt) before it is compared with the target; other steps are not
touched and run at dense speed. By default only the first call of a layer per step is measured:
classifier-free guidance runs each layer twice a step, and the conditional branch (which diffusers'
pipelines run first) stands for both at half the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from fastdit.calibration.candidates import candidates
from fastdit.calibration.rows import exact_rows, head_density, layout_rows, ordered_keys, sample_rows
from fastdit.layout.grid import TokenGrid
from fastdit.methods import get_method, layout_order, make_layout
from fastdit.runtime.engine import AttentionCall, key_padding

__all__ = ["MethodMeasure", "Measurements", "DEFAULT_ROWS"]

# query rows sampled per call: exact rows cost rows / S of the attention, so a few dozen are cheap at real
# token counts (Sparse VideoGen profiles 32) and still average out a head's error
DEFAULT_ROWS = 32


@dataclass
class MethodMeasure:
    """Sums over the calls of one layer for one method: ``[candidates, measured steps, heads]`` tensors, and
    per step the exact rows' squared norm ``[steps, heads]``, sampled rows and calls ``[steps]``."""

    sq_error: torch.Tensor
    recall: torch.Tensor
    density: torch.Tensor
    sq_norm: torch.Tensor
    rows: torch.Tensor
    calls: torch.Tensor

    @classmethod
    def empty(cls, n_candidates: int, n_steps: int, heads: int) -> "MethodMeasure":
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        return cls(z(n_candidates, n_steps, heads), z(n_candidates, n_steps, heads), z(n_candidates, n_steps, heads),
                   z(n_steps, heads), z(n_steps), z(n_steps))

    def rel_l2(self) -> torch.Tensor:
        """``[candidates, steps, heads]`` relative L2 error of the sampled output rows."""
        return (self.sq_error / self.sq_norm.clamp(min=1e-30)).sqrt()

    def mass_loss(self) -> torch.Tensor:
        """``[candidates, steps, heads]``: share of the exact attention mass outside the layout."""
        return 1 - self.recall / self.rows.clamp(min=1).view(1, -1, 1)

    def mean_density(self) -> torch.Tensor:
        """``[candidates, steps, heads]`` density per head, averaged over the step's calls."""
        return self.density / self.calls.clamp(min=1).view(1, -1, 1)


@dataclass
class Measurements:
    """Everything calibration measured, from which :func:`fastdit.calibrate.select` picks per target.

    ``steps`` are the measured denoising steps (0-based) of a ``schedule``-step run; ``layers`` maps
    ``(denoiser name, layer)`` to ``{method: MethodMeasure}``; ``options[method]`` lists the candidate
    settings in the order of the measures' first axis.
    """

    methods: tuple[str, ...]
    options: dict[str, list[Any]]
    steps: tuple[int, ...]
    schedule: int
    block_size: int
    rows: int = DEFAULT_ROWS
    seed: int = 0
    calls_per_step: int = 1
    grid: TokenGrid | None = None
    heads: dict[tuple[str, int], int] = field(default_factory=dict)
    layers: dict[tuple[str, int], dict[str, MethodMeasure]] = field(default_factory=dict)
    skipped_calls: int = 0
    model: str | None = None  # what was calibrated: its id or path, and its config fingerprint
    fingerprint: str = ""
    prompts: tuple[str, ...] = ()
    seconds: float = 0.0  # time the measuring generations took
    run: int = 0  # which generation (prompt) the calls belong to
    generator: torch.Generator = field(init=False, repr=False)
    _seen: dict[tuple[int, str, int, int], int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    @classmethod
    def create(cls, methods: Sequence[str], steps: Sequence[int], schedule: int, block_size: int, *,
               base_options: dict[str, dict[str, Any]] | None = None, rows: int = DEFAULT_ROWS, seed: int = 0,
               calls_per_step: int = 1) -> "Measurements":
        base_options = base_options or {}
        options = {m: candidates(m, base_options.get(m)) for m in methods}
        return cls(tuple(methods), options, tuple(sorted(set(steps))), schedule, block_size, rows, seed,
                   calls_per_step)

    def __call__(self, call: AttentionCall) -> None:
        """Measure one self-attention call (the engine's observer hook); calls at other steps are ignored."""
        if call.step not in self.steps or call.grid is None:
            return
        seen = (self.run, call.model, call.layer, call.step)
        self._seen[seen] = self._seen.get(seen, 0) + 1
        if self._seen[seen] > self.calls_per_step:  # e.g. the unconditional branch of classifier-free guidance
            return
        q, k, v = call.q, call.k, call.v
        keys = None
        if call.attn_mask is not None:
            keys = key_padding(call.attn_mask, q.shape[2], call.grid.video_slice)
            if keys is None:  # a bias or per-query mask: no layout can reproduce it, nothing to measure
                self.skipped_calls += 1
                return
        grid = call.grid
        video = TokenGrid(grid.t, grid.h, grid.w)
        if self.grid is None:
            self.grid = video
        elif self.grid != video:
            raise ValueError(f"calibration measures one latent grid; got {video.t}x{video.h}x{video.w} after "
                             f"{self.grid.t}x{self.grid.h}x{self.grid.w} (use the same size for every prompt)")
        start = grid.leading_text_tokens
        rows = sample_rows(range(start, start + grid.video_tokens), self.rows, self.generator).to(q.device)
        heads = q.shape[1]
        key = (call.model, call.layer)
        self.heads[key] = heads
        step = self.steps.index(call.step)
        with torch.no_grad():
            exact = exact_rows(q, k, v, rows, call.scale, keys)
            per_method = self.layers.setdefault(key, {})
            for method in self.methods:
                measure = per_method.get(method)
                if measure is None:
                    measure = per_method[method] = MethodMeasure.empty(len(self.options[method]), len(self.steps),
                                                                       heads)
                self._measure(method, measure, call, exact, step, grid)

    def _measure(self, method: str, measure: MethodMeasure, call: AttentionCall, exact, step: int,
                 grid: TokenGrid) -> None:
        spec = get_method(method)
        settings = self.options[method]
        order = layout_order(spec, grid, self.block_size, settings[0], layer=call.layer)
        k, v = order.to_order(call.k), order.to_order(call.v)
        data = {"q": order.to_order(call.q), "k": k} if spec.dynamic else {}
        heads = call.q.shape[1]
        layouts = [make_layout(spec, order, options, layer=call.layer, **data) for options in settings]
        if layouts[0].head_order is not None:  # per-head orders (SVG2): the keys sit in each head's own order
            if call.q.shape[0] != 1:
                raise ValueError(f"calibrating {method} (per-head orders computed from q and k) measures calls of "
                                 f"batch 1, got {call.q.shape[0]}: run guidance as separate calls")
            k, v = layouts[0].head_order.keys(k), layouts[0].head_order.keys(v)
        keys = ordered_keys(exact, k, v, layouts[0], order, levels=max(layout.max_level for layout in layouts))
        qkv = (data.get("q", order.to_order(call.q)), k, v) if any(layout.tail for layout in layouts) else None
        for c, (layout, error) in enumerate(zip(layouts, layout_rows(exact, keys, layouts, qkv))):
            measure.sq_error[c, step] += error.sq_error.double().cpu()
            measure.recall[c, step] += error.recall.double().cpu()
            measure.density[c, step] += head_density(layout, heads).double()
        measure.sq_norm[step] += error.sq_norm.double().cpu()
        measure.rows[step] += error.rows
        measure.calls[step] += 1
