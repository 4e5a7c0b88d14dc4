"""Per-call state the processors read: the latent grid, the denoising step, and the stats being recorded.

Processors get neither the grid nor the step from diffusers, so a forward pre-hook on each patched
transformer/UNet writes them here. The step is counted from *distinct* timesteps, so classifier-free
guidance done as one batched forward or as two forwards counts the same, and it resets at the start of every
pipeline call (signalled by the scheduler's ``set_timesteps``, or by a timestep that goes up again).

The pre-hook also counts the denoiser's forward calls per step. A diffusers cache (first-block cache, PAB,
TaylorSeer, ...) serves some layers without calling their attention; when a step ends, every layer that ran
fewer times than its denoiser did is marked as served by a cache, so ``stats`` says so instead of leaving a
gap.

The pre-hook and the forward hook also time each forward (:meth:`start_forward` / :meth:`end_forward`) into the
step's :class:`~fastdit.runtime.stats.StepTimes`, so the attention share of a step is known.

One context serves every pipeline that shares the patched model, so two threads calling it at once would read
each other's grid and step: a forward that starts while another thread's is running is refused
(:meth:`enter_forward`); calls from several threads one after another are fine.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Iterable, Iterator

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import TokenOrder
from fastdit.runtime.stats import CACHED, AttentionStats, LayerRecord, StepTimes
from fastdit.runtime.timing import Clock, Span


class RunContext:
    def __init__(self) -> None:
        self.grid: TokenGrid | None = None
        self.step = -1
        self.schedule: int | None = None  # denoising steps of the current pipeline call, when the scheduler said
        self._last_timestep: float | None = None
        self.stats = AttentionStats()
        self._index: dict[tuple[int, str, int], int] = {}  # (step, model, layer) -> position in stats.records
        self._layers: dict[str, dict[int, int]] = {}  # model -> layer -> attention modules patched at that layer
        self._forwards: dict[str, int] = {}  # model -> forward calls in the current step
        # (model, layer) -> a stateful method's state for this pipeline call (SVG2's warm-start centroids)
        self.method_state: dict[tuple[str, int], dict] = {}
        self._recording = True
        # The order the denoiser's tokens are in between its first and last block when they are permuted once
        # per forward (fastdit.patching.permute); None: the model's own order, the engine moves q, k, v per call.
        self.held: TokenOrder | None = None
        # What a traced pre-hook returns and traced attention calls take, so compilers keep them in that order
        # (see fastdit.patching.ops); None when the pre-hook ran eagerly.
        self.token: torch.Tensor | None = None
        self._running: Counter[int] = Counter()  # thread id -> forwards of a patched denoiser it is inside
        self.clock = Clock()
        self._forward_spans: dict[int, list[tuple[StepTimes, Span]]] = {}  # thread id -> its open forwards
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> "RunContext":
        # every patched module reaches its context: a copy's hooks, saved processors and state would still be
        # the original's, so its remove() could not restore it
        raise TypeError("a model fastdit patches can't be deep-copied: fastdit.remove it, copy it, then "
                        "fastdit.apply to each copy")

    def enter_forward(self) -> None:
        """A patched denoiser's forward starts in this thread; a ``RuntimeError`` while another thread is inside
        one (the grid and step here are per call: sharing them would silently mix the two calls)."""
        me = threading.get_ident()
        with self._lock:
            if any(count for thread, count in self._running.items() if thread != me):
                raise RuntimeError("fastdit: this patched model is running in another thread; models patched by "
                                   "fastdit (and pipelines sharing them) take one call at a time: wait for it, or "
                                   "give each thread its own model")
            self._running[me] += 1

    def exit_forward(self) -> None:
        """The forward :meth:`enter_forward` let in has ended (a refused one never entered: nothing to undo)."""
        me = threading.get_ident()
        with self._lock:
            if self._running[me] > 0:
                self._running[me] -= 1
            if not self._running[me]:
                del self._running[me]

    def expect_layers(self, model: str, layers: Iterable[int]) -> None:
        """The layer of every attention module of denoiser ``model`` that runs fastdit's processor (a layer may
        hold several), so that a step in which a cache skipped some can be reported."""
        self._layers[model] = dict(Counter(layers))

    def begin_run(self, keep_method_state: bool = False) -> None:
        """A new pipeline call: steps count from 0 again and the stats start empty; ``keep_method_state``: the
        stateful methods' per-layer state stays (a benchmark timing a later step of a call, see
        :func:`fastdit.patching.patch.restart_stats`)."""
        self.close_step()
        self.step = -1
        self._last_timestep = None
        self.clock.drop()
        self.stats = AttentionStats()
        self._index = {}
        self._forwards = {}
        if not keep_method_state:
            self.method_state = {}

    def observe_forward(self, model: str, timestep: float | None) -> None:
        """A forward call of denoiser ``model`` at ``timestep`` (called by its pre-hook; a value that falls during a
        run: a model whose own timestep rises hands its negation, see ``Family.timestep_rises``)."""
        self.held = None  # a forward starts in the model's order (also after one that raised inside its blocks)
        if timestep is not None:
            if self._last_timestep is not None and timestep > self._last_timestep:
                self.begin_run()  # denoising only goes down: a larger timestep is a new call
            if timestep != self._last_timestep:
                self.close_step()
                self._forwards = {}
                self.step += 1
                self._last_timestep = timestep
        self._forwards[model] = self._forwards.get(model, 0) + 1

    def start_forward(self, device: torch.device) -> None:
        """A denoiser forward of the current step starts running on ``device`` in this thread (after
        :meth:`observe_forward` counted it): its time goes to the step."""
        self._forward_spans.setdefault(threading.get_ident(), []).append((self.step_times(),
                                                                          self.clock.start(device)))

    def step_times(self) -> StepTimes:
        """The current step's times (what its forwards and their once-per-forward permutations add to)."""
        return self.stats.step_times.setdefault(max(self.step, 0), StepTimes())

    def end_forward(self) -> None:
        """This thread's innermost forward :meth:`start_forward` timed has ended (none open: nothing to do)."""
        me = threading.get_ident()
        spans = self._forward_spans.get(me)
        if spans:
            times, span = spans.pop()
            self.clock.stop(span, times, "forward")
        if not spans:
            self._forward_spans.pop(me, None)

    def settle(self) -> AttentionStats:
        """The stats with every time in (on a GPU this waits for the timed work to finish)."""
        self.close_step()
        self.clock.settle()
        return self.stats

    @contextlib.contextmanager
    def unrecorded(self) -> Iterator[None]:
        """Calls made inside are not recorded (a backward pass recomputing an attention it already counted)."""
        before, self._recording = self._recording, False
        try:
            yield
        finally:
            self._recording = before

    def record(self, record: LayerRecord) -> None:
        """Keep ``record`` as its (step, model, layer)'s, counting the calls (CFG may run a layer twice)."""
        if not self._recording:
            return
        key = (record.step, record.model, record.layer)
        position = self._index.get(key)
        if position is None:
            self._index[key] = len(self.stats.records)
            self.stats.records.append(record)
        else:
            existing = self.stats.records[position]
            record.calls = existing.calls + 1
            record.times = existing.times + record.times
            self.stats.records[position] = record

    def close_step(self) -> None:
        """Mark what a cache served in the current step: every patched layer of a denoiser that ran this step
        gets the calls it missed as ``cached`` (and a ``"cached"`` record when it never ran). Idempotent, so
        reading the stats mid-step is safe."""
        step = max(self.step, 0)
        for model, forwards in self._forwards.items():
            for layer, modules in self._layers.get(model, {}).items():
                expected = forwards * modules
                position = self._index.get((step, model, layer))
                if position is None:
                    self.record(LayerRecord(step=step, layer=layer, model=model, dense=False, density=0.0,
                                            reason=CACHED, tokens=0, calls=0, cached=expected))
                else:
                    existing = self.stats.records[position]
                    existing.cached = max(0, expected - existing.calls)
