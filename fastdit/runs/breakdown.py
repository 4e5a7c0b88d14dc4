"""Why a run is as fast as it is: attention time dense vs sparse, the attention share of the dense run, the
dense warm-up, fastdit's overhead, and the bound on the speedup.

The **bound** is Amdahl's law: a perfect kernel makes the attention of each (step, layer) cost its density
times the dense attention (dense warm-up steps and layers count 1) and costs nothing else, so the run could at
best take ``dense total - dense attention x (1 - mean density)``. When attention is a small share of the dense
run, no kernel makes the run much faster: the bound says so before anyone optimises a kernel.

The dense attention time is measured on the dense run when fastdit patched it (``stats`` timed it); the stock
attention has no timer, so otherwise it is this run's own dense calls (warm-up steps, dense layers: the same
SDPA the stock attention calls) scaled to every call the dense run made. With neither, it is unknown and so is
the bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastdit.runtime.stats import AttentionStats

__all__ = ["Breakdown", "explain"]


@dataclass(frozen=True)
class Breakdown:
    """Seconds of one sparse run and of the dense run it is compared with (``None``: not known)."""

    total_s: float  # the sparse run's measured time
    attention_s: float  # its attention calls, all parts, and its tokens permuted once per forward
    kernel_s: float  # their kernels
    warmup_s: float  # its dense warm-up steps (inside the denoiser)
    density: float  # mean share of the dense attention work (dense counts 1)
    dense_total_s: float  # the dense run's measured (or, alone, estimated) time
    dense_attention_s: float | None
    dense_measured: bool  # dense attention timed on the dense run itself, not estimated from this run
    dense_run: bool = True  # dense_total_s measured on a dense run (else estimated from this run alone)

    @property
    def overhead_s(self) -> float:
        """Layout build, token permutation and bookkeeping of the attention calls."""
        return self.attention_s - self.kernel_s

    @property
    def other_s(self) -> float:
        """Everything but attention: the rest of the model, text encoder, VAE, scheduler."""
        return self.total_s - self.attention_s

    @property
    def speedup(self) -> float:
        return self.dense_total_s / self.total_s

    @property
    def attention_speedup(self) -> float | None:
        return self.dense_attention_s / self.attention_s if self.dense_attention_s else None

    @property
    def attention_share(self) -> float | None:
        """Share of the dense run's time spent in attention: what sparse attention can act on."""
        return self.dense_attention_s / self.dense_total_s if self.dense_attention_s is not None else None

    @property
    def warmup_share(self) -> float:
        return self.warmup_s / self.total_s

    @property
    def overhead_share(self) -> float:
        """Share of the sparse attention time outside the kernel."""
        return self.overhead_s / self.attention_s if self.attention_s else 0.0

    @property
    def bound(self) -> float | None:
        """The speedup over dense a perfect kernel at this density would give (Amdahl's law)."""
        if self.dense_attention_s is None:
            return None
        return self.dense_total_s / (self.dense_total_s - self.dense_attention_s * (1 - self.density))

    def parts(self) -> dict[str, dict[str, float]]:
        """Seconds per part of each run, for stacked bars: dense (attention, other), sparse (attention kernel,
        overhead, other)."""
        dense = {} if self.dense_attention_s is None else {
            "attention": self.dense_attention_s, "other": self.dense_total_s - self.dense_attention_s}
        return {"dense": dense, "sparse": {"attention": self.kernel_s, "overhead": self.overhead_s,
                                           "other": self.other_s}}

    def sentence(self) -> str:
        """One line a user reads at a glance."""
        run = "the dense run" if self.dense_run else "a dense run (estimated)"
        text = f"end to end {self.speedup:.2f}x" if self.dense_run else \
            f"attention {self.attention_s / self.total_s:.0%} of this run"
        if self.attention_speedup is not None:
            text = (f"attention {self.dense_attention_s:.2f} s -> {self.attention_s:.2f} s "
                    f"({self.attention_speedup:.2f}x) at density {self.density:.2f}; attention is "
                    f"{self.attention_share:.0%} of {run}, so {self.bound:.2f}x is the most a perfect kernel could "
                    "give end to end" + (f"; measured {self.speedup:.2f}x" if self.dense_run else ""))
        if self.warmup_s:
            text += f"; dense warm-up {self.warmup_share:.0%} of the run"
        text += f"; overhead {self.overhead_share:.0%} of sparse attention"
        return text + ("" if self.dense_measured or self.dense_attention_s is None
                       else " (dense attention timed on this run's dense calls)")

    def to_dict(self) -> dict[str, Any]:
        names = ("dense_run", "total_s", "attention_s", "kernel_s", "overhead_s", "other_s", "warmup_s", "density",
                 "dense_total_s", "dense_attention_s", "dense_measured", "speedup", "attention_speedup",
                 "attention_share", "warmup_share", "overhead_share", "bound")
        return {name: getattr(self, name) for name in names}


def _dense_per_call(stats: AttentionStats) -> float | None:
    """Mean seconds of this run's dense attention calls (``None``: it made none)."""
    dense = [r for r in stats.records if r.dense and r.calls]
    calls = sum(len(r.times) for r in dense)
    return stats.seconds("attention", dense) / calls if calls else None


def explain(total_s: float, stats: AttentionStats | None, dense_total_s: float | None = None,
            dense_stats: AttentionStats | None = None) -> Breakdown | None:
    """Where the time of a sparse run went, next to the dense run's.

    Args:
        total_s: the sparse run's measured time (a pipeline call, a denoising loop, a forward).
        stats: its ``fastdit.stats``.
        dense_total_s: the dense run's time, measured the same way (``None``: estimated from this run, with
            its attention at the dense time).
        dense_stats: the dense run's stats when fastdit patched it (timed), else ``None``.

    Returns:
        The breakdown, or ``None`` when ``stats`` holds no times (timing off, or not a fastdit run).
    """
    if stats is None or not stats.seconds("attention"):
        return None
    attention = stats.attention_s()
    measured = dense_stats is not None and dense_stats.seconds("attention") > 0
    if measured:
        dense_attention = dense_stats.seconds("attention")
    else:
        per_call = _dense_per_call(stats)
        calls = sum(r.calls + r.cached for r in stats.records)  # the dense run computes what a cache served
        dense_attention = None if per_call is None else per_call * calls
    dense_run = dense_total_s is not None
    if not dense_run:
        dense_total_s = total_s - attention + (dense_attention if dense_attention is not None else attention)
    warmup = sum(stats.step_times[s].forward for s in stats.warmup_steps() if s in stats.step_times)
    return Breakdown(total_s=total_s, attention_s=attention, kernel_s=stats.seconds("kernel"), warmup_s=warmup,
                     density=stats.mean_density(), dense_total_s=dense_total_s, dense_attention_s=dense_attention,
                     dense_measured=measured, dense_run=dense_run)
