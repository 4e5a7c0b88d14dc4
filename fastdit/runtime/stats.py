"""What ran where: per denoising step and layer, dense or sparse, at which density, and what a cache served."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastdit.layout.block import BlockLayout
    from fastdit.layout.grid import TokenGrid

CACHED = "cached"  # the reason of a layer-step whose every call a diffusers cache served


@dataclass
class LayerRecord:
    """One self-attention layer at one denoising step (the last call's values win when CFG runs it twice).

    ``calls`` is how many times the layer's attention ran this step and ``cached`` how many of the denoiser's
    calls skipped it because a diffusers cache (first-block cache, PAB, TaylorSeer, ...) served the result. A
    layer-step that every call skipped has ``reason == "cached"``, ``calls == 0`` and density 0: no attention
    was computed. ``gathered``: the call moved q, k, v into the layout's token order and its output back (the
    per-call path); ``False`` when it ran dense, or sparse on tokens permuted once per forward.
    """

    step: int
    layer: int
    model: str
    dense: bool
    density: float
    reason: str  # why it ran dense ("dense_steps", "dense_layers", "method", "grid too small"), the method, or "cached"
    tokens: int
    calls: int = 1
    cached: int = 0
    gathered: bool = False

    @property
    def work(self) -> float:
        """Share of the dense attention work this layer-step did: its density, times the share of calls that
        a cache did not serve."""
        total = self.calls + self.cached
        return self.density * self.calls / total if total else 0.0

    @property
    def ran_sparse(self) -> bool:
        return self.calls > 0 and not self.dense


@dataclass
class AttentionStats:
    """Per-step, per-layer record of the last pipeline call (reset at the start of each call).

    ``last_layout`` is the layout of the most recent sparse call (for pictures of what ran), and
    ``last_grid`` the grid of the most recent dense one.
    """

    records: list[LayerRecord] = field(default_factory=list)
    last_layout: BlockLayout | None = None
    last_grid: TokenGrid | None = None

    @property
    def steps(self) -> int:
        return len({r.step for r in self.records})

    def mean_density(self) -> float:
        """Mean share of the dense attention work over every recorded (step, layer): dense counts as 1, a
        sparse layer as its density, a call a cache served as 0."""
        return sum(r.work for r in self.records) / len(self.records) if self.records else 1.0

    def sparse_fraction(self) -> float:
        """Share of (step, layer) records that ran sparse."""
        return sum(r.ran_sparse for r in self.records) / len(self.records) if self.records else 0.0

    def sparse_density(self) -> float | None:
        """Mean density of the (step, layer) records that ran sparse (``None``: none did)."""
        sparse = [r.density for r in self.records if r.ran_sparse]
        return sum(sparse) / len(sparse) if sparse else None

    def cached_fraction(self) -> float:
        """Share of the layer calls a diffusers cache served instead of running attention."""
        total = sum(r.calls + r.cached for r in self.records)
        return sum(r.cached for r in self.records) / total if total else 0.0

    def per_layer_density(self) -> dict[tuple[str, int], float]:
        """Mean share of dense work per (model, layer) across steps."""
        sums: dict[tuple[str, int], list[float]] = {}
        for r in self.records:
            sums.setdefault((r.model, r.layer), []).append(r.work)
        return {key: sum(v) / len(v) for key, v in sorted(sums.items())}

    def to_dict(self) -> dict:
        return {"steps": self.steps, "mean_density": self.mean_density(), "sparse_fraction": self.sparse_fraction(),
                "cached_fraction": self.cached_fraction(), "records": [asdict(r) for r in self.records]}

    def summary(self) -> str:
        if not self.records:
            return "no self-attention calls recorded"
        cached = self.cached_fraction()
        served = f", {cached:.0%} of layer calls served by a cache" if cached else ""
        return (f"{self.steps} steps, {len(self.records)} layer-steps, {self.sparse_fraction():.0%} sparse{served}, "
                f"mean density {self.mean_density():.3f}")

    def __str__(self) -> str:
        return self.summary()
