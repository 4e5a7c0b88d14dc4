"""What ran where: per denoising step and layer, dense or sparse, at which density, what a cache served, and
where the time went.

Times (see :mod:`fastdit.runtime.timing`): each attention call's total and its kernel, layout build and token
permutation (in and out) parts, the rest being fastdit's bookkeeping; and per step the time spent inside the
denoiser's forwards, so the attention share of a step is known. They are summed over a layer's calls in a step
(classifier-free guidance runs a layer twice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from fastdit.runtime.timing import CallTimes

if TYPE_CHECKING:
    from fastdit.layout.block import BlockLayout
    from fastdit.layout.grid import TokenGrid

CACHED = "cached"  # the reason of a layer-step whose every call a diffusers cache served
PARTS = ("attention", "kernel", "layout", "permute", "rest")  # the times a record reports


@dataclass
class StepTimes:
    """Seconds one denoising step spent inside the patched denoisers' forwards, and, of those, moving tokens
    into a layout's order and back once per forward (``permute_once``: outside any attention call)."""

    forward: float = 0.0
    permute: float = 0.0


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
    times: list[CallTimes] = field(default_factory=list, repr=False, compare=False)  # one per timed call

    @property
    def attention_s(self) -> float:
        """Seconds this layer's attention calls took this step (0 when untimed)."""
        return sum(t.total for t in self.times)

    @property
    def kernel_s(self) -> float:
        return sum(t.kernel for t in self.times)

    @property
    def layout_s(self) -> float:
        return sum(t.layout for t in self.times)

    @property
    def permute_s(self) -> float:
        return sum(t.permute for t in self.times)

    @property
    def rest_s(self) -> float:
        return sum(t.rest for t in self.times)

    def to_dict(self) -> dict:
        """JSON-ready fields, with the times summed over the calls."""
        out = {k: v for k, v in asdict(self).items() if k != "times"}
        return {**out, **{f"{part}_s": getattr(self, f"{part}_s") for part in PARTS}}

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
    ``last_grid`` the grid of the most recent dense one. ``step_times`` holds, per step, the time inside the
    denoisers' forwards (empty when the forwards ran traced by ``torch.compile``: the attention calls are
    still timed).
    """

    records: list[LayerRecord] = field(default_factory=list)
    last_layout: BlockLayout | None = None
    last_grid: TokenGrid | None = None
    step_times: dict[int, StepTimes] = field(default_factory=dict)

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

    def seconds(self, part: str = "attention", records: list[LayerRecord] | None = None) -> float:
        """Seconds spent in ``part`` (one of :data:`PARTS`) of the attention calls, over ``records`` (default:
        all)."""
        return sum(getattr(r, f"{part}_s") for r in (self.records if records is None else records))

    def once_s(self) -> float:
        """Seconds permuting tokens once per forward (``permute_once``), outside the attention calls."""
        return sum(t.permute for t in self.step_times.values())

    def attention_s(self) -> float:
        """Seconds of self-attention: the attention calls and, with ``permute_once``, the tokens' moves into
        their order and back, which replace the calls' own."""
        return self.seconds("attention") + self.once_s()

    def overhead_s(self) -> float:
        """Seconds of self-attention outside the kernel: layout build, permutation (in the calls and once per
        forward), bookkeeping."""
        return self.attention_s() - self.seconds("kernel")

    def parts_s(self) -> dict[str, float] | None:
        """The denoisers' forward time in parts that add up to it: ``kernel``, ``layout``, ``permute`` (in the
        calls and once per forward), ``bookkeeping`` (the rest of the attention calls) and ``other`` (the model
        outside attention); ``None`` when the forwards were not timed. Each part but ``other`` is timed on its
        own (``bookkeeping`` is what a call's parts leave of its timed total, ``other`` what the calls and the
        permutations leave of the timed forward, both at least 0): their sum exceeds the forward when a part was
        counted twice, and falls short of the measured forward when the forward's timing missed some of it."""
        forward = self.forward_s()
        if forward is None:
            return None
        parts = {"kernel": self.seconds("kernel"), "layout": self.seconds("layout"),
                 "permute": self.seconds("permute") + self.once_s(), "bookkeeping": self.seconds("rest")}
        return {**parts, "other": max(0.0, forward - self.attention_s())}

    def forward_s(self) -> float | None:
        """Seconds inside the denoisers' forwards over the call (``None``: not timed)."""
        return sum(t.forward for t in self.step_times.values()) if self.step_times else None

    def warmup_steps(self) -> list[int]:
        """The steps that ran every attention dense because of the dense warm-up (``dense_steps``)."""
        by_step: dict[int, list[LayerRecord]] = {}
        for r in self.records:
            by_step.setdefault(r.step, []).append(r)
        return [step for step, records in sorted(by_step.items())
                if any(r.reason == "dense_steps" for r in records)
                and all(r.reason in ("dense_steps", CACHED) or r.dense for r in records)]

    def attention_share(self) -> float | None:
        """Share of the denoisers' forward time spent in self-attention (``None``: not timed)."""
        forward = self.forward_s()
        return self.attention_s() / forward if forward else None

    def to_dict(self) -> dict:
        out = {"steps": self.steps, "mean_density": self.mean_density(), "sparse_fraction": self.sparse_fraction(),
               "cached_fraction": self.cached_fraction(), "records": [r.to_dict() for r in self.records]}
        out["time_s"] = {part: self.seconds(part) for part in PARTS}
        out["time_s"]["forward"] = self.forward_s()
        out["time_s"]["permute_once"] = self.once_s()
        out["step_forward_s"] = [self.step_times[s].forward for s in sorted(self.step_times)]
        out["attention_share"] = self.attention_share()
        return out

    def summary(self) -> str:
        if not self.records:
            return "no self-attention calls recorded"
        cached = self.cached_fraction()
        served = f", {cached:.0%} of layer calls served by a cache" if cached else ""
        text = (f"{self.steps} steps, {len(self.records)} layer-steps, {self.sparse_fraction():.0%} sparse{served}, "
                f"mean density {self.mean_density():.3f}")
        attention, share = self.attention_s(), self.attention_share()
        if attention:
            of_forward = f" = {share:.0%} of the denoiser's time" if share is not None else ""
            text += (f"; attention {attention:.3g} s{of_forward} (kernel {self.seconds('kernel'):.3g} s, "
                     f"overhead {self.overhead_s():.3g} s)")
        return text

    def __str__(self) -> str:
        return self.summary()
