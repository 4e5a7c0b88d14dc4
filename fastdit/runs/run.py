"""One timed pipeline call, dense or sparse: the unit ``fastdit generate``, ``fastdit compare`` and the app share.

Timing: the total is the whole pipeline call (text encoding, denoising, VAE decode); each denoising step runs
from the previous step's end (the first: from the first denoiser forward) to diffusers'
``callback_on_step_end``, with a device synchronise on CUDA so queued kernels are counted where they run.
Peak memory is the CUDA allocator's peak for the call on a GPU, and the process's peak resident set on CPU
(the OS keeps no per-call peak there, so on CPU it also covers loading and earlier calls).
"""

from __future__ import annotations

import inspect
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from fastdit.patching.components import denoisers
from fastdit.patching.patch import apply, remove, stats
from fastdit.runs.breakdown import explain
from fastdit.runs.caches import CacheSpec, disable_cache, enable_cache
from fastdit.runs.media import to_uint8
from fastdit.runtime.stats import AttentionStats

__all__ = ["RunResult", "run_pipeline", "is_video_pipeline", "image_input", "check_seed", "MAX_SEED"]

MAX_SEED = 2**64 - 1  # a torch.Generator seed is an unsigned 64-bit number


def check_seed(seed: Any) -> int:
    """``seed`` (a whole number, also as a float from a form field) as the int a ``torch.Generator`` takes,
    else a ``ValueError`` that says the range (torch's own message is an overflow of an internal type)."""
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to 2**64 - 1, got {seed!r}")
    return seed


@dataclass
class RunResult:
    """What one call produced and cost. ``frames`` is ``[F, H, W, 3]`` uint8 (an image is one frame);
    ``stats`` is ``None`` for the stock (unpatched) attention."""

    label: str
    frames: np.ndarray
    video: bool
    total_s: float
    step_s: list[float]
    peak_memory_bytes: int
    memory_kind: str
    stats: AttentionStats | None = None
    sparse: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None  # the diffusers cache the call ran with

    @property
    def denoise_s(self) -> float:
        return float(sum(self.step_s))

    @property
    def mean_step_s(self) -> float | None:
        return self.denoise_s / len(self.step_s) if self.step_s else None

    def per_layer_density(self) -> dict[str, float]:
        """Mean density per self-attention layer over the steps (``"transformer.3"``-style keys)."""
        if self.stats is None:
            return {}
        return {f"{model}.{layer}": d for (model, layer), d in self.stats.per_layer_density().items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no pixels)."""
        out: dict[str, Any] = {
            "label": self.label, "sparse": self.sparse, "cache": self.cache, "frames": int(self.frames.shape[0]),
            "height": int(self.frames.shape[1]), "width": int(self.frames.shape[2]),
            "total_s": self.total_s, "denoise_s": self.denoise_s, "steps": len(self.step_s),
            "mean_step_s": self.mean_step_s, "step_s": self.step_s,
            "peak_memory_bytes": self.peak_memory_bytes, "memory_kind": self.memory_kind,
        }
        if self.stats is not None:
            out["attention"] = {**self.stats.to_dict(), "per_layer_density": self.per_layer_density()}
            why = explain(self.total_s, self.stats)
            if why is not None:  # against a dense run estimated from this one (dense_run: false)
                out["breakdown"] = why.to_dict()
        return out


def is_video_pipeline(pipe: Any) -> bool:
    """Video pipelines take ``num_frames``; image pipelines don't."""
    return "num_frames" in inspect.signature(pipe.__call__).parameters


def image_input(pipe: Any) -> str | None:
    """How ``pipe`` takes a picture as ``image``: ``"required"`` for image-to-video pipelines (the picture is
    the first frame: Wan, CogVideoX, LTX, HunyuanVideo I2V; LTX's declares ``image=None`` yet fails without
    one), ``"optional"`` for pipelines that merely accept one (LTX conditions, Flux Kontext), ``None`` for text
    only."""
    parameter = inspect.signature(pipe.__call__).parameters.get("image")
    if parameter is None:
        return None
    name = type(pipe).__name__
    if parameter.default is inspect.Parameter.empty or "ImageToVideo" in name or "Image2Video" in name:
        return "required"
    return "optional"


def _device(pipe: Any) -> torch.device:
    return getattr(pipe, "_execution_device", None) or getattr(pipe, "device", torch.device("cpu"))


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def _call(pipe: Any, kwargs: dict[str, Any]) -> Any:
    """``pipe(**kwargs)``; a pipeline that cleans prompts with ``ftfy`` (Wan I2V, VACE, SkyReels-V2...) calls
    it whether or not it is installed, which reads as a ``NameError``: that becomes an ``ImportError``
    saying what to install."""
    try:
        return pipe(**kwargs)
    except NameError as err:
        if err.name != "ftfy":
            raise
        raise ImportError(f"{type(pipe).__name__} cleans prompts with the ftfy package, which is not installed: "
                          "pip install ftfy") from None


def run_pipeline(pipe: Any, call: dict[str, Any], *, seed: int, label: str,
                 sparse: dict[str, Any] | None = None, cache: CacheSpec | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> RunResult:
    """Run ``pipe(**call)`` once with a fresh ``seed`` generator and time it.

    ``sparse`` is ``fastdit.apply``'s keyword arguments (``method`` and the rest); ``None`` runs the stock
    attention. ``cache`` also enables a diffusers cache on the denoisers for this call. ``on_step`` is told
    ``(steps done, steps in all)`` after each denoising step (progress bars); an exception it raises stops the
    call there (the app's cancel and time limit). The pipeline is left unpatched and uncached afterwards either
    way, so runs never leak into each other.
    """
    device = torch.device(_device(pipe))
    cuda = device.type == "cuda"

    def now() -> float:
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    marks: list[float] = []

    def first_forward(module, args):
        if not marks:
            marks.append(now())

    def step_end(pipeline, step, timestep, callback_kwargs):
        marks.append(now())
        if on_step is not None:
            on_step(step + 1, getattr(pipeline, "num_timesteps", None) or call.get("num_inference_steps") or 1)
        return {}

    kwargs = dict(call, output_type="np", generator=torch.Generator("cpu").manual_seed(check_seed(seed)))
    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        kwargs["callback_on_step_end"] = step_end
    remove(pipe)
    hooks: list[Any] = []
    cached: list[Any] = []
    try:
        if sparse is not None:
            apply(pipe, **sparse)
        if cache is not None:
            cached = enable_cache(pipe, cache, call.get("num_inference_steps") or 1)
        hooks = [model.register_forward_pre_hook(first_forward) for _, model in denoisers(pipe)]
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = now()
        with torch.inference_mode():
            output = _call(pipe, kwargs)
        total = now() - start
        run_stats = stats(pipe) if sparse is not None else None
    finally:
        for hook in hooks:
            hook.remove()
        disable_cache(cached)
        remove(pipe)
    video = hasattr(output, "frames")
    pixels = output.frames[0] if video else output.images[0][None]
    return RunResult(
        label=label, frames=to_uint8(pixels), video=video, total_s=total,
        step_s=[b - a for a, b in zip(marks, marks[1:])],
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if cuda else _peak_rss_bytes(),
        memory_kind="CUDA peak allocated" if cuda else "process peak RSS",
        stats=run_stats, sparse=dict(sparse or {}), cache=cache.label if cache is not None else None,
    )
