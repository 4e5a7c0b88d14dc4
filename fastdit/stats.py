"""What ran where: per denoising step and layer, dense or sparse, and at which density."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .grid import TokenGrid
    from .layout import BlockLayout


@dataclass
class LayerRecord:
    """One self-attention layer at one denoising step (the last call wins when CFG runs it twice)."""

    step: int
    layer: int
    model: str
    dense: bool
    density: float
    reason: str  # why it ran dense ("dense_steps", "dense_layers", "method", "grid too small") or the method
    tokens: int


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
        """Mean attention density over every recorded (step, layer); dense counts as 1."""
        return sum(r.density for r in self.records) / len(self.records) if self.records else 1.0

    def sparse_fraction(self) -> float:
        """Share of (step, layer) calls that ran sparse."""
        return sum(not r.dense for r in self.records) / len(self.records) if self.records else 0.0

    def per_layer_density(self) -> dict[tuple[str, int], float]:
        """Mean density per (model, layer) across steps."""
        sums: dict[tuple[str, int], list[float]] = {}
        for r in self.records:
            sums.setdefault((r.model, r.layer), []).append(r.density)
        return {key: sum(v) / len(v) for key, v in sorted(sums.items())}

    def to_dict(self) -> dict:
        return {"steps": self.steps, "mean_density": self.mean_density(), "sparse_fraction": self.sparse_fraction(),
                "records": [asdict(r) for r in self.records]}

    def summary(self) -> str:
        if not self.records:
            return "no self-attention calls recorded"
        return (f"{self.steps} steps, {len(self.records)} layer-steps, {self.sparse_fraction():.0%} sparse, "
                f"mean density {self.mean_density():.3f}")

    def __str__(self) -> str:
        return self.summary()
