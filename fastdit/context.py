"""Per-call state the processors read: the latent grid, the denoising step, and the stats being recorded.

Processors get neither the grid nor the step from diffusers, so a forward pre-hook on each patched
transformer/UNet writes them here. The step is counted from *distinct* timesteps, so classifier-free
guidance done as one batched forward or as two forwards counts the same, and it resets at the start of every
pipeline call (signalled by the scheduler's ``set_timesteps``, or by a timestep that goes up again).
"""

from __future__ import annotations

from .grid import TokenGrid
from .stats import AttentionStats, LayerRecord


class RunContext:
    def __init__(self) -> None:
        self.grid: TokenGrid | None = None
        self.step = -1
        self._last_timestep: float | None = None
        self.stats = AttentionStats()
        self._records: dict[tuple[int, str, int], LayerRecord] = {}

    def begin_run(self) -> None:
        """A new pipeline call: steps count from 0 again and the stats start empty."""
        self.step = -1
        self._last_timestep = None
        self.stats = AttentionStats()
        self._records = {}

    def observe_timestep(self, timestep: float | None) -> None:
        if timestep is None:
            return
        if self._last_timestep is not None and timestep > self._last_timestep:
            self.begin_run()  # denoising only goes down: a larger timestep is a new call
        if timestep != self._last_timestep:
            self.step += 1
            self._last_timestep = timestep

    def record(self, record: LayerRecord) -> None:
        key = (record.step, record.model, record.layer)
        if key not in self._records:
            self.stats.records.append(record)
        else:
            self.stats.records[self.stats.records.index(self._records[key])] = record
        self._records[key] = record
