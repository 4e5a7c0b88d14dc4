"""Timing what ``stats`` reports: the parts of each attention call and each denoiser forward.

On CPU work is synchronous, so a span is two ``time.perf_counter`` reads. On a GPU kernels run
asynchronously: a wall clock would time their launch, and synchronising around every span would stall the
stream. A span there is a pair of CUDA events recorded in the stream, and the time between them is read only
when the stats are read (:meth:`Clock.settle`), which waits for the GPU once, then.

Timing is on by default (two clock reads per span cost well under 1% of the smallest attention call fastdit
patches on a CPU); ``FASTDIT_TIMING=0`` in the environment turns it off for processes patched after it is set.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

__all__ = ["Clock", "Span", "CallTimes", "timing_enabled"]


def timing_enabled() -> bool:
    """Whether new patches time their calls (``FASTDIT_TIMING=0`` turns it off)."""
    return os.environ.get("FASTDIT_TIMING", "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class CallTimes:
    """Seconds one attention call spent in each part; ``rest`` (deciding, recording, the dense/sparse switch)
    is what the timed parts leave of ``total``."""

    total: float = 0.0
    kernel: float = 0.0
    layout: float = 0.0
    permute: float = 0.0

    @property
    def rest(self) -> float:
        return max(0.0, self.total - self.kernel - self.layout - self.permute)


@dataclass
class Span:
    """A started span: the wall-clock start on CPU, the start event on CUDA (``None``: timing is off)."""

    start: float | torch.cuda.Event | None


@dataclass
class Clock:
    """Starts and stops spans; each stopped span adds its seconds to ``times.<part>`` (on CUDA once settled)."""

    enabled: bool = field(default_factory=timing_enabled)
    _pending: list[tuple[torch.cuda.Event, torch.cuda.Event, object, str]] = field(default_factory=list)

    def start(self, device: torch.device) -> Span:
        """A span that starts now on ``device`` (where the timed work runs)."""
        if not self.enabled:
            return Span(None)
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(device))
            return Span(event)
        return Span(time.perf_counter())

    def stop(self, span: Span, times: object, part: str) -> None:
        """End ``span`` and add its seconds to the attribute ``part`` of ``times``."""
        if span.start is None:
            return
        if isinstance(span.start, float):
            setattr(times, part, getattr(times, part) + time.perf_counter() - span.start)
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self._pending.append((span.start, end, times, part))

    @contextlib.contextmanager
    def span(self, device: torch.device, times: object, part: str) -> Iterator[None]:
        """Time the ``with`` block into ``times.<part>`` (see :meth:`stop`)."""
        started = self.start(device)
        yield
        self.stop(started, times, part)

    def settle(self) -> None:
        """Add the time of every CUDA span stopped so far (waits for the GPU to reach them)."""
        pending, self._pending = self._pending, []
        for start, end, times, part in pending:
            end.synchronize()
            setattr(times, part, getattr(times, part) + start.elapsed_time(end) / 1000)

    def drop(self) -> None:
        """Forget spans not settled yet (a new pipeline call starts with empty stats)."""
        self._pending = []
