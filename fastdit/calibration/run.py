"""``fastdit.calibrate``: measure a pipeline's attention during dense generations, then choose per target.

The pipeline is patched with fastdit's dense path (the stock attention, bit for bit), an observer measures
every candidate layout at the chosen steps (see :mod:`.measure`), and the run stops after the last measured
step and skips the VAE decode, so the cost is at most one dense generation per prompt plus the measuring.
"""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from fastdit.calibration.candidates import SEARCHABLE, options_dict
from fastdit.calibration.measurements import DEFAULT_ROWS, Measurements
from fastdit.calibration.selection import select
from fastdit.patching.components import denoisers, name_or_path
from fastdit.patching.patch import apply, is_patched, patch_config, remove, set_observer
from fastdit.runs.run import check_seed
from fastdit.runtime.calibration_file import Calibration, check_target, fingerprint
from fastdit.runtime.config import SparseConfig, check_dense_steps

__all__ = ["calibrate", "measure", "default_steps", "DEFAULT_METHODS"]

DEFAULT_METHODS = ("radial", "pyramid", "vmoba", "grat", "sol")
MEASURED_STEPS = 5  # measured steps of a run by default, spread from the first to the last


def default_steps(schedule: int, first: int = 0, count: int = MEASURED_STEPS) -> tuple[int, ...]:
    """``count`` steps spread evenly from step ``first`` (the shortest warm-up allowed) to the last of a
    ``schedule``-step run (50 steps from 12: 12, 21, 30, 40, 49): the first decides whether a longer
    warm-up pays; patterns change slowly between steps, so a few stand for the rest."""
    first = min(first, schedule - 1)
    if schedule - first <= count:
        return tuple(range(first, schedule))
    span = schedule - 1 - first
    return tuple(sorted({first + math.floor(i * span / (count - 1) + 0.5) for i in range(count)}))


def _schedule(pipe: Any, call: dict[str, Any]) -> int:
    steps = call.get("num_inference_steps")
    if steps is None:
        steps = inspect.signature(pipe.__call__).parameters.get("num_inference_steps")
        steps = None if steps is None else steps.default
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError("pass call={'num_inference_steps': N}: the pipeline has no default step count")
    return steps


def _check(prompts: Sequence[str], methods: Sequence[str], rows: int) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("calibration needs at least one prompt (a string or a list of strings)")
    if not methods or any(m not in SEARCHABLE for m in methods):
        raise ValueError(f"methods must be a non-empty selection of {', '.join(SEARCHABLE)}, got {tuple(methods)!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an int >= 1 (query rows sampled per call), got {rows!r}")
    return prompts


def _stop_after(last: int):
    """A ``callback_on_step_end`` that interrupts the run once step ``last`` is done (when the pipeline has
    diffusers' ``interrupt`` switch), so unmeasured late steps cost nothing."""
    def callback(pipeline, step, timestep, callback_kwargs):
        if step >= last and hasattr(pipeline, "_interrupt"):
            pipeline._interrupt = True
        return {}

    return callback


def _model_name(name: str | None) -> str | None:
    """A hub id as it is; a local folder by its name only, since the file is shared and an absolute path would
    publish the maker's folders (the config fingerprint, not the name, is what a run checks)."""
    if name is None or not (Path(name).is_absolute() or Path(name).exists()):
        return name
    return Path(name).resolve().name


def measure(pipe: Any, prompts: str | Sequence[str], *, methods: Sequence[str] = DEFAULT_METHODS,
            steps: Sequence[int] | None = None, warmup: int | float | None = None, rows: int = DEFAULT_ROWS,
            block_size: int | None = None, preset: str | None = "auto", seed: int = 0,
            call: dict[str, Any] | None = None, calls_per_step: int = 1) -> Measurements:
    """Generate each prompt densely and measure every candidate layout of ``methods`` at ``steps``.

    ``call`` holds the pipeline's other arguments (size, frames, steps, guidance); ``steps`` the 0-based denoising
    steps to measure (default: :func:`default_steps` from the shortest warm-up allowed). ``warmup`` is that
    shortest warm-up, a step count or a share of the steps; by default the model preset's published one (12 of 50
    steps for Wan), since the error a layout makes at early, noisy steps grows through every later step, which
    per-step measurements don't see (``warmup=0`` lets calibration decide alone). ``rows``: the query rows sampled
    per self-attention call; ``block_size`` and the options each method keeps fixed come from the model's preset
    (``preset=None``: the methods' defaults). ``calls_per_step``: calls of each layer measured per step and prompt
    (1: classifier-free guidance's conditional branch stands for both). Leaves ``pipe`` unpatched.
    """
    prompts = _check(prompts, methods, rows)
    if isinstance(calls_per_step, bool) or not isinstance(calls_per_step, int) or calls_per_step < 1:
        raise ValueError(f"calls_per_step must be an int >= 1, got {calls_per_step!r}")
    call = dict(call or {})
    schedule = _schedule(pipe, call)
    if warmup is not None:
        warmup = SparseConfig(dense_steps=check_dense_steps(warmup)).warmup_steps(schedule)
    if steps is not None:
        steps = tuple(steps)
        if not steps or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < schedule for s in steps):
            raise ValueError(f"steps must be step indices in [0, {schedule - 1}], got {steps!r}")
    seed = check_seed(seed)
    if is_patched(pipe):  # measuring patches the pipeline itself and leaves it unpatched: say so, don't drop it
        raise ValueError(f"the pipeline is patched by fastdit ({patch_config(pipe).method}); calibration measures "
                         "dense generations and would drop that patch: call fastdit.remove(pipe) first")
    start = time.perf_counter()
    base: dict[str, dict[str, Any]] = {}
    shortest: int | None = None  # the shortest published warm-up of the methods
    try:
        for method in methods:  # the preset's settings of each method: what calibration does not search
            config = patch_config(apply(pipe, method=method, preset=preset, block_size=block_size))
            base[method] = options_dict(config.options)
            block_size = config.block_size
            published = config.warmup_steps(schedule)
            shortest = published if shortest is None else min(shortest, published)
        if steps is None:
            steps = default_steps(schedule, shortest if warmup is None else warmup)
        apply(pipe, method="dense", preset=None, block_size=block_size)
        models = denoisers(pipe)
        result = Measurements.create(methods, steps, schedule, block_size, base_options=base, rows=rows, seed=seed,
                                      calls_per_step=calls_per_step)
        result.model = _model_name(name_or_path(pipe, models[0][1]))
        result.fingerprint = fingerprint(models)
        result.prompts = tuple(prompts)
        set_observer(pipe, result)
        accepts = inspect.signature(pipe.__call__).parameters
        bar = tqdm(prompts, desc="calibration prompts", unit="prompt", disable=len(prompts) == 1)
        for run, prompt in enumerate(bar):
            result.run = run
            kwargs = dict(call, prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed))
            if "output_type" in accepts:
                kwargs["output_type"] = "latent"
            if "callback_on_step_end" in accepts:
                kwargs["callback_on_step_end"] = _stop_after(max(steps))
            with torch.no_grad():
                pipe(**kwargs)
    finally:
        remove(pipe)
    result.seconds = time.perf_counter() - start
    return result


def calibrate(pipe: Any, prompts: str | Sequence[str], *, target: float = 0.05, metric: str = "rel_l2",
              allocation: str = "cap", methods: Sequence[str] = DEFAULT_METHODS,
              steps: Sequence[int] | None = None, warmup: int | float | None = None, rows: int = DEFAULT_ROWS,
              per_head: bool = True, block_size: int | None = None, preset: str | None = "auto", seed: int = 0,
              call: dict[str, Any] | None = None) -> Calibration:
    """The sparsest per-layer, per-head settings whose error on sampled query rows stays within ``target``.

    During a dense generation of each prompt (with ``call``'s other pipeline arguments), query rows of every
    self-attention layer are computed exactly at a few ``steps`` and under each candidate layout of each of
    ``methods`` (their main knob on a ladder: radial decay, pyramid bands, vmoba threshold, grat radius, sol tau).
    ``metric="rel_l2"`` bounds the relative L2 error of the rows' outputs, ``"mass"`` the share of attention mass a
    layout leaves out; ``allocation="cap"`` bounds every head's error, ``"budget"`` the RMS of the errors over
    all heads (spent where it buys the most sparsity). Per layer the method that serves it best wins; heads
    (``per_head``) and layers where no candidate is worth its error run dense, and the dense warm-up (at least
    ``warmup``, default the preset's) is chosen with them. The result saves as a small JSON file (``.save(path)``)
    and applies with ``fastdit.apply(pipe, calibration=...)``. Other targets on the same measurements:
    ``select(measure(...), target)``.

    Args:
        pipe: a diffusers pipeline fastdit supports, not patched (a patch is refused, not dropped); it is left
            unpatched afterwards.
        prompts: one prompt or several; each is generated once, dense.
        target: the bound on ``metric`` (relative L2 error of the rows' outputs, or the mass left out).
        metric: ``"rel_l2"`` or ``"mass"``.
        allocation: ``"cap"`` (every head within ``target``) or ``"budget"`` (the RMS over all heads).
        methods: the candidate methods.
        steps: the denoising step indices measured (default: five, from the published warm-up to the last).
        warmup: the least dense warm-up in steps (int) or share (float); default: the preset's.
        rows: query rows sampled per call.
        per_head: choose per head (else per layer).
        block_size: the kernel block (default: the preset's).
        preset: as in ``fastdit.apply``.
        seed: of the generations and the sampled rows.
        call: the pipeline call's other arguments (``num_frames``, ``height``, ``num_inference_steps``, ...).

    Returns:
        The :class:`~fastdit.Calibration` (``.summary()``, ``.save(path)``; applies with
        ``fastdit.apply(pipe, calibration=...)``).
    """
    check_target(target, metric, allocation)  # before the measuring generation, not after it
    measured = measure(pipe, prompts, methods=methods, steps=steps, warmup=warmup, rows=rows,
                       block_size=block_size, preset=preset, seed=seed, call=call)
    return select(measured, target, metric=metric, allocation=allocation, per_head=per_head)
