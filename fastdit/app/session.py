"""What the web demo does, without the web: check a request, run dense (cached) and sparse, collect results.

Kept apart from the Gradio page so it can be tested directly and reused. One :class:`DemoSession` owns one
loaded pipeline; a lock lets one generation at a time use it (the page's queue does the same per device, the
lock makes it true for any caller). The dense result for identical settings is cached, so changing only the
method or its knobs re-runs the sparse side alone.

A generation is stopped between denoising steps when its client has gone (the caller says how to tell) or
when it has run past the session's time limit, so an abandoned or oversized request cannot hold the model for
the next users; prompts are bounded in length before the tokenizer sees them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fastdit.layout.block import BlockLayout
from fastdit.methods import build_layout, get_method, parse_options
from fastdit.models.loading import call_defaults, check_video_size, load_pipeline, resolve_model, video_size_rule
from fastdit.runs.compare import WHY, MethodSpec, compare
from fastdit.runs.pictures import layout_image
from fastdit.runs.run import RunResult, check_seed, image_input, run_pipeline

__all__ = ["DemoRequest", "DemoResult", "DemoSession", "Limits", "JobStopped", "CALIBRATED", "MAX_PROMPT_CHARS",
           "TIME_LIMIT_S"]

CALIBRATED = "calibrated"  # the method name of the per-layer settings the demo was started with

_CACHE_SIZE = 8
_KEEP_VIDEOS = 8  # mp4s kept in the page's folder: the player has copied older ones into Gradio's cache
# text encoders read a few hundred tokens (Wan: 512, about 4 characters each); a longer prompt is a mistake or
# an attack (20 MB took the tokenizer minutes and gigabytes)
MAX_PROMPT_CHARS = 2000
TIME_LIMIT_S = 600.0  # one Generate (dense and sparse) on this server: long enough for the page's sizes on a GPU


class JobStopped(Exception):
    """A generation stopped between two denoising steps: its client left, or it ran past the time limit."""


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
    image: Any = None  # the first frame of an image-to-video model (a PIL image or an [H, W, 3] array)


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
                 reuse_calibration: bool = False, time_limit_s: float = TIME_LIMIT_S) -> None:
        if not time_limit_s > 0:
            raise ValueError(f"time_limit_s must be a number of seconds > 0, got {time_limit_s!r}")
        self.time_limit_s = float(time_limit_s)
        self.source = resolve_model(model)
        self.pipe = load_pipeline(self.source, device, dtype)
        self.image_input = image_input(self.pipe)  # "required", "optional" or None (text only)
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
        for name, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"the {name} is {len(text)} characters long; the demo takes at most "
                                 f"{MAX_PROMPT_CHARS} (the text encoder reads only the first few hundred words)")
        if self.image_input == "required" and request.image is None:
            raise ValueError(f"{type(self.pipe).__name__} makes a video from an image: add one (its first frame)")
        if self.image_input is None and request.image is not None:
            raise ValueError(f"{type(self.pipe).__name__} takes no image; leave the image out")
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
        if request.image is not None:
            call["image"] = _as_picture(request.image)
        for key, value in (("num_frames", request.frames), ("height", request.height), ("width", request.width),
                           ("num_inference_steps", request.steps)):
            if value is not None:
                call[key] = int(value)
        return call

    # ------------------------------------------------------------------ running
    def generate(self, request: DemoRequest, on_progress: Callable[[str, int, int], None] | None = None,
                 client_left: Callable[[], bool] | None = None) -> DemoResult:
        """Dense (cached per prompt, image, size, steps and seed) and sparse for one request, and their metrics.

        Args:
            request: what the user asked for (checked first: ``ValueError`` with a sentence to act on).
            on_progress: told ``(run, steps done, steps in all)`` as each run (``"dense"``, then the method)
                starts and after each of its denoising steps (progress bars).
            client_left: asked between steps; once it answers ``True`` the generation stops.

        Returns:
            Both runs, the metrics the page shows and a picture of the sparse layout.

        Raises:
            JobStopped: ``client_left`` said so, or the whole generation ran past ``time_limit_s`` (counted from
                when it got the model, not from when it joined the queue).
        """
        self.check(request)
        call = self._call(request)
        sparse = {"entropy_scaling": request.entropy_scaling}  # n_train comes from the model's preset
        report = on_progress or (lambda run, done, total: None)
        steps = int(call["num_inference_steps"])
        key = (tuple(sorted((k, _image_digest(v) if k == "image" else v) for k, v in call.items())), request.seed)
        stage = ["dense"]

        def stage_starts(label: str) -> None:
            stage[0] = label
            report(label, 0, steps)

        with self._lock:
            deadline = time.monotonic() + self.time_limit_s

            def step_done(done: int, total: int) -> None:
                if client_left is not None and client_left():
                    raise JobStopped(f"stopped {stage[0]} at step {done} of {total}: its client left")
                if time.monotonic() > deadline:
                    raise JobStopped(f"stopped after {self.time_limit_s:g} s, this demo's time limit for one "
                                     f"Generate ({stage[0]} was at step {done} of {total}): try fewer frames or "
                                     "steps, or a smaller size")
                report(stage[0], done, total)

            dense = self._dense.get(key)
            cached = dense is not None
            if not cached:
                stage_starts("dense")
                dense = run_pipeline(self.pipe, call, seed=request.seed, label="dense", on_step=step_done)
                self._dense[key] = dense
                while len(self._dense) > _CACHE_SIZE:
                    self._dense.popitem(last=False)
            self._dense.move_to_end(key)
            stage_starts(request.method)
            if request.method == CALIBRATED:
                spec = MethodSpec(CALIBRATED, calibration=self.calibration)
                sparse["reuse_calibration"] = self.reuse_calibration
            else:
                spec = MethodSpec(request.method, dict(request.options))
            comparison = compare(self.pipe, [spec], call, seed=request.seed, sparse=sparse, warmup=False,
                                 baseline=dense, on_step=step_done)
        row = comparison.rows[1]
        sparse_run = comparison.runs[0]
        why = dict(comparison.breakdowns()).get(sparse_run.label)
        metrics = {"seed": request.seed, "method": sparse_run.label, "dense_s": dense.total_s,
                   "sparse_s": sparse_run.total_s, "speedup": row["speedup"],
                   "step_speedup": row["step_speedup"], "psnr_db": row["psnr_db"], "ssim": row["ssim"],
                   "lpips": row["lpips"], "lpips_unavailable": comparison.lpips_unavailable,
                   "density": row["density"], "sparse_density": row["sparse_density"],
                   "dense_cached": cached, "frames": int(dense.frames.shape[0]),
                   "size": f"{dense.frames.shape[2]}x{dense.frames.shape[1]}",
                   "steps": steps, "entropy_scaling": request.entropy_scaling,
                   **{name: row[name] for name in WHY}, "time_parts": None if why is None else why.parts()}
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


def _as_picture(image: Any) -> Any:
    """``image`` as the PIL image every diffusers image-to-video pipeline takes (Wan's refuses arrays)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise TypeError(f"image must be a PIL image or an [H, W, 3] uint8 array, got {pixels.dtype} "
                        f"{list(pixels.shape)}")
    return Image.fromarray(pixels).convert("RGB")


def _image_digest(image: Any) -> str:
    """What tells two input images apart in the dense cache (a PIL image has no hash of its own)."""
    pixels = np.asarray(image)
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()
