"""What the web demo does, without the web: check a request, run dense (cached) and sparse, collect results.

Kept apart from the Gradio page so it can be tested directly and reused. One :class:`DemoSession` owns one
loaded pipeline; a lock lets one generation at a time use it (the page's queue does the same per device, the
lock makes it true for any caller). The dense result for identical settings is cached, so changing only the
method or its knobs re-runs the sparse side alone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fastdit.layout.block import BlockLayout
from fastdit.methods import build_layout, get_method, parse_options
from fastdit.models.loading import call_defaults, check_video_size, load_pipeline, resolve_model, video_size_rule
from fastdit.runs.compare import MethodSpec, compare
from fastdit.runs.pictures import layout_image
from fastdit.runs.run import RunResult, check_seed, run_pipeline

__all__ = ["DemoRequest", "DemoResult", "DemoSession", "Limits", "CALIBRATED"]

CALIBRATED = "calibrated"  # the method name of the per-layer settings the demo was started with

_CACHE_SIZE = 8
_KEEP_VIDEOS = 8  # mp4s kept in the page's folder: the player has copied older ones into Gradio's cache


@dataclass(frozen=True)
class Limits:
    """What the loaded model accepts (the page's sliders use these bounds)."""

    frames: tuple[int, int, int]  # min, max, step (Wan: frames = 4k + 1)
    height: tuple[int, int, int]  # min, max, multiple
    width: tuple[int, int, int]
    steps: tuple[int, int]


@dataclass(frozen=True)
class DemoRequest:
    """One click of "Generate"."""

    prompt: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    negative_prompt: str = ""
    entropy_scaling: bool = False
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    seed: int = 0


@dataclass
class DemoResult:
    dense: RunResult
    sparse: RunResult
    metrics: dict[str, Any]
    layout: np.ndarray  # picture of one layer's block layout
    dense_cached: bool


class DemoSession:
    """A loaded pipeline and the demo's dense-result cache."""

    def __init__(self, model: str = "sample", device: str = "cpu", dtype: Any = None,
                 max_frames: int = 33, max_size: int = 256, max_steps: int = 30, calibration: Any = None,
                 reuse_calibration: bool = False) -> None:
        self.source = resolve_model(model)
        self.pipe = load_pipeline(self.source, device, dtype)
        self.calibration = None if calibration is None else self._check_calibration(calibration)
        self.reuse_calibration = reuse_calibration
        self.pipe.set_progress_bar_config(leave=False)
        self.defaults = call_defaults(self.pipe, self.source)
        self.frame_step, self.multiple = video_size_rule(self.pipe)
        step, multiple = self.frame_step or 1, self.multiple or 8
        self.limits = Limits(frames=(1, max(max_frames, self.defaults.get("num_frames") or 1), step),
                             height=(multiple, max(max_size, self.defaults.get("height") or multiple), multiple),
                             width=(multiple, max(max_size, self.defaults.get("width") or multiple), multiple),
                             steps=(1, max(max_steps, self.defaults.get("num_inference_steps") or 1)))
        self._lock = threading.Lock()
        self._dense: OrderedDict[tuple, RunResult] = OrderedDict()

    # ------------------------------------------------------------------ checks
    def _check_calibration(self, calibration: Any):
        """The calibration (a file or object), refused now if it was made for another model."""
        from fastdit.calibration import load_calibration
        from fastdit.patching.patch import apply, remove

        found = load_calibration(calibration)
        remove(apply(self.pipe, calibration=found))
        return found

    def check(self, request: DemoRequest) -> None:
        """Raise ``ValueError`` with a sentence a person can act on when the request is out of bounds."""
        if not request.prompt or not request.prompt.strip():
            raise ValueError("write a prompt first")
        if request.method == CALIBRATED:
            if self.calibration is None:
                raise ValueError("this demo was started without a calibration (fastdit app --calibration PATH)")
        else:
            get_method(request.method)  # unknown method -> ValueError naming the available ones
        check_seed(request.seed)
        call = self._call(request)
        lo, hi, _ = self.limits.frames
        if "num_frames" in call and not lo <= call["num_frames"] <= hi:
            raise ValueError(f"frames must be between {lo} and {hi}, got {call['num_frames']}")
        for key, (lo, hi, _) in (("height", self.limits.height), ("width", self.limits.width)):
            if not lo <= call[key] <= hi:
                raise ValueError(f"{key} must be between {lo} and {hi} pixels, got {call[key]}")
        lo, hi = self.limits.steps
        if not lo <= call["num_inference_steps"] <= hi:
            raise ValueError(f"steps must be between {lo} and {hi}, got {call['num_inference_steps']}")
        check_video_size("this model", call.get("num_frames"), call["height"], call["width"],
                         frame_step=self.frame_step, multiple=self.multiple)
        if request.method != CALIBRATED:
            parse_options(get_method(request.method), request.options)  # option names and values

    def _call(self, request: DemoRequest) -> dict[str, Any]:
        call = {k: v for k, v in self.defaults.items() if k in ("num_frames", "height", "width",
                                                                "num_inference_steps", "guidance_scale",
                                                                "max_sequence_length")}
        call["prompt"] = request.prompt.strip()
        if request.negative_prompt:
            call["negative_prompt"] = request.negative_prompt
        for key, value in (("num_frames", request.frames), ("height", request.height), ("width", request.width),
                           ("num_inference_steps", request.steps)):
            if value is not None:
                call[key] = int(value)
        return call

    # ------------------------------------------------------------------ running
    def generate(self, request: DemoRequest, on_stage: Callable[[str], None] | None = None) -> DemoResult:
        """Dense (cached per prompt, size, steps and seed) and sparse for one request, and their metrics."""
        self.check(request)
        call = self._call(request)
        sparse = {"entropy_scaling": request.entropy_scaling}  # n_train comes from the model's preset
        notify = on_stage or (lambda stage: None)
        key = (tuple(sorted(call.items())), request.seed)
        with self._lock:
            dense = self._dense.get(key)
            cached = dense is not None
            if not cached:
                notify("dense")
                dense = run_pipeline(self.pipe, call, seed=request.seed, label="dense")
                self._dense[key] = dense
                while len(self._dense) > _CACHE_SIZE:
                    self._dense.popitem(last=False)
            self._dense.move_to_end(key)
            notify(request.method)
            if request.method == CALIBRATED:
                spec = MethodSpec(CALIBRATED, calibration=self.calibration)
                sparse["reuse_calibration"] = self.reuse_calibration
            else:
                spec = MethodSpec(request.method, dict(request.options))
            comparison = compare(self.pipe, [spec], call, seed=request.seed, sparse=sparse, warmup=False,
                                 baseline=dense)
        row = comparison.rows[1]
        sparse_run = comparison.runs[0]
        metrics = {"seed": request.seed, "method": sparse_run.label, "dense_s": dense.total_s,
                   "sparse_s": sparse_run.total_s, "speedup": row["speedup"],
                   "step_speedup": row["step_speedup"], "psnr_db": row["psnr_db"], "ssim": row["ssim"],
                   "density": row["density"], "sparse_density": row["sparse_density"],
                   "dense_cached": cached, "frames": int(dense.frames.shape[0]),
                   "size": f"{dense.frames.shape[2]}x{dense.frames.shape[1]}"}
        return DemoResult(dense, sparse_run, metrics, self._layout_picture(sparse_run), cached)

    def _layout_picture(self, run: RunResult) -> np.ndarray:
        """Block layout of the last sparse self-attention call (one layer, head 0), text blocks marked."""
        layout: BlockLayout | None = run.stats.last_layout if run.stats is not None else None
        if layout is None:  # everything ran dense: show the full layout of the video's grid
            grid = run.stats.last_grid if run.stats is not None else None
            if grid is None:
                return np.full((64, 64, 3), 245, np.uint8)
            layout = build_layout("dense", grid, block_size=16)
        return layout_image(layout)

    def write_videos(self, result: DemoResult, folder: str | Path, fps: int | None = None) -> tuple[Path, Path]:
        """Both videos as mp4 files (what the page plays); older ones beyond the newest few are deleted, so
        the folder stays small however many requests come."""
        from fastdit.runs.media import write_video

        folder = Path(folder)
        for old in sorted(folder.glob("*.mp4"), key=lambda p: p.stat().st_mtime)[:-(_KEEP_VIDEOS - 2)]:
            old.unlink(missing_ok=True)
        fps = fps or self.source.fps
        tag = f"{abs(hash((id(result), result.metrics['seed']))):x}"
        return (write_video(result.dense.frames, folder / f"dense-{tag}.mp4", fps),
                write_video(result.sparse.frames, folder / f"sparse-{tag}.mp4", fps))
