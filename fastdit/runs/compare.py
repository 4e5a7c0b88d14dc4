"""Dense vs sparse on the same prompt and seed: time, speedup, PSNR/SSIM/LPIPS and density, plus a labelled video.

The baseline is the pipeline's stock attention (what diffusers runs without fastdit), so speedups are against
what a user has today. Each method then runs through ``fastdit.apply`` with the same call arguments and seed;
PSNR and SSIM are computed on the uint8 frames (what the mp4 holds before encoding) against the baseline's,
over every frame. LPIPS joins them where torchmetrics and its AlexNet weights are on the machine (see
:mod:`fastdit.runs.perceptual`); elsewhere its column is empty and the report says why in one line.
``fastdit compare`` and the web demo both call :func:`compare`.

With a diffusers cache (``cache=``), the cache runs alone (through fastdit's dense path, which equals the
stock attention, so ``stats`` can count what it served) and with each method, so the table shows the cache's
speedup, the method's, and the two combined, each against the stock attention.

Every row also says why its speedup is what it is (:mod:`fastdit.runs.breakdown`): attention time dense vs
sparse and its speedup, the attention share of the dense run, the dense warm-up and overhead shares, and the
bound a perfect kernel at this density could reach. The markdown table leads with what sparse attention changed
(attention time, density, quality), then the end-to-end speedup next to its bound, and explains each method in
one sentence under the table.

In JSON, a PSNR of identical videos is written as the string ``"inf"`` (JSON has no infinity); every other
PSNR is a number in dB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fastdit.runs.breakdown import Breakdown, explain
from fastdit.runs.caches import CacheSpec, knob_label
from fastdit.runs.media import film_strip, side_by_side, write_image, write_video
from fastdit.runs.metrics import psnr, ssim
from fastdit.runs.perceptual import MIN_SIDE, LpipsUnavailable, lpips, lpips_metric
from fastdit.runs.report import environment, markdown_table
from fastdit.runs.run import RunResult, run_pipeline
from fastdit.runtime.files import write_text

__all__ = ["MethodSpec", "Comparison", "compare", "write_comparison", "BASELINE"]

BASELINE = "dense"
COLUMNS = ("method", "attention_s", "attention_speedup", "density", "psnr_db", "ssim", "lpips", "speedup", "bound",
           "attention_share", "warmup_share", "overhead_share", "total_s", "step_speedup")
WHY = ("attention_s", "dense_attention_s", "attention_speedup", "attention_share", "warmup_share", "overhead_share",
       "bound")  # the breakdown's numbers a row carries


@dataclass(frozen=True)
class MethodSpec:
    """One method to compare, with its knobs (anything not given comes from the model's preset)."""

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    calibration: Any = None  # a fastdit.Calibration (or its file): per-layer settings instead of the method's

    @property
    def label(self) -> str:
        """The method and its knobs; fastdit's own dense path is told apart from the stock baseline."""
        if isinstance(self.calibration, (str, Path)):
            return f"calibrated ({Path(self.calibration).name})"
        if self.calibration is not None:
            return f"calibrated ({self.calibration.metric} <= {self.calibration.target:g})"
        return knob_label("dense (fastdit)" if self.method == BASELINE else self.method, self.options)

    def apply_arguments(self, shared: dict[str, Any]) -> dict[str, Any]:
        """``fastdit.apply`` keywords of this run: ``shared`` (preset, warm-up...) plus the method's own."""
        if self.calibration is not None:
            return {**shared, "calibration": self.calibration}
        return {**shared, "method": self.method, **self.options}


def _json_number(x: float | None) -> float | str | None:
    return "inf" if x is not None and math.isinf(x) else x


@dataclass
class Comparison:
    """The baseline run, one run per method, and one metrics row per run (the baseline's first);
    ``lpips_unavailable`` says why the rows have no LPIPS, when they have none."""

    baseline: RunResult
    runs: list[RunResult]
    rows: list[dict[str, Any]]
    lpips_unavailable: str | None = None

    def _panels(self) -> list[tuple[tuple[str, str], np.ndarray]]:
        """Each run's frames with its label: name, then speedup / PSNR / density."""
        panels = []
        for row, run in zip(self.rows, (self.baseline, *self.runs)):
            detail = (f"{row['speedup']:.2f}x  {row['psnr_db']:.1f}dB  d={row['density']:.2f}"
                      if run is not self.baseline else f"{run.total_s:.1f}s  stock attention")
            panels.append(((run.label, detail), run.frames))
        return panels

    def video(self) -> np.ndarray:
        """All runs side by side, each under its label strip."""
        return side_by_side(self._panels())

    def frames(self, count: int = 6) -> np.ndarray:
        """A still: one row per run, ``count`` of its frames."""
        return film_strip(self._panels(), count)

    def breakdowns(self) -> list[tuple[str, Breakdown]]:
        """Each sparse run's breakdown (runs without timed stats left out)."""
        dense_stats = _dense_stats(self.baseline, self.runs)
        found = [(run.label, explain(run.total_s, run.stats, self.baseline.total_s, dense_stats))
                 for run in self.runs]
        return [(label, why) for label, why in found if why is not None]

    def markdown(self) -> str:
        """The table, the line on why it has no LPIPS (if so), then one sentence per method on why its speedup
        is what it is."""
        lines = [f"- **{label}**: {why.sentence()}" for label, why in self.breakdowns()
                 if label != "dense (fastdit)"]
        table = markdown_table(self.rows, COLUMNS)
        if self.lpips_unavailable is not None:
            table += f"\n{self.lpips_unavailable}.\n"
        return table + ("\n" + "\n".join(lines) + "\n" if lines else "")

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: _json_number(v) if isinstance(v, float) else v for k, v in row.items()} for row in self.rows]
        return {"rows": rows, "runs": [r.to_dict() for r in (self.baseline, *self.runs)],
                "notes": {"psnr_db": 'vs the dense video over all frames (uint8); the string "inf" when identical',
                          "ssim": "Gaussian-window SSIM (Wang et al. 2004) vs the dense video, mean over frames "
                                  "and channels",
                          "lpips": self.lpips_unavailable or "LPIPS (Zhang et al. 2018; AlexNet, torchmetrics) vs "
                                   "the dense video, mean over frames: 0 when identical, higher when they look "
                                   "more different",
                          "speedup": "dense total time / this total time (whole pipeline call)",
                          "step_speedup": "dense mean denoising-step time / this one",
                          "density": "mean share of the dense attention work over every (step, layer): dense "
                                     "counts as 1, a call a cache served as 0",
                          "sparse_density": "mean density over the (step, layer) calls that ran sparse",
                          "cached_fraction": "share of self-attention layer calls a diffusers cache served",
                          "attention_s": "seconds in self-attention over the run (kernel, layout build, "
                                         "permutation, bookkeeping)",
                          "dense_attention_s": "the dense run's attention seconds: timed on fastdit's dense run when "
                                               "there is one, else this run's dense calls times the dense run's "
                                               "call count",
                          "attention_speedup": "dense_attention_s / attention_s",
                          "attention_share": "dense_attention_s / the dense run's total: what sparse attention can "
                                             "act on",
                          "warmup_share": "share of this run's time in its dense warm-up steps",
                          "overhead_share": "share of this run's attention time outside the kernel (layout "
                                            "build, permutation, bookkeeping)",
                          "bound": "the speedup a perfect kernel at this density would give (Amdahl's law): "
                                   "dense total / (dense total - dense_attention_s x (1 - density))"}}


def _dense_stats(baseline: RunResult, runs: Sequence[RunResult]) -> Any:
    """The timed stats of a dense run: the baseline's when fastdit ran it, else a ``dense (fastdit)`` run's."""
    if baseline.stats is not None:
        return baseline.stats
    return next((r.stats for r in runs if r.sparse.get("method") == BASELINE and r.cache is None), None)


def _row(run: RunResult, baseline: RunResult, perceptual: Any, dense_stats: Any = None) -> dict[str, Any]:
    """One run's metrics row; ``perceptual`` is the LPIPS metric, or None where it is unavailable, and
    ``dense_stats`` a dense run's timed stats, which the breakdown compares the run's attention time with."""
    base_step, step = baseline.mean_step_s, run.mean_step_s
    why = explain(run.total_s, run.stats, baseline.total_s, dense_stats)
    return {
        "method": run.label,
        "total_s": run.total_s,
        "step_s": step,
        "speedup": baseline.total_s / run.total_s,
        "step_speedup": base_step / step if base_step and step else None,
        "psnr_db": psnr(baseline.frames, run.frames),
        "ssim": ssim(baseline.frames, run.frames),
        "lpips": lpips(baseline.frames, run.frames, perceptual) if perceptual is not None else None,
        # the stock attention attends every key: density 1 by definition
        "density": run.stats.mean_density() if run.stats else 1.0,
        "sparse_density": run.stats.sparse_density() if run.stats else None,
        "sparse_fraction": run.stats.sparse_fraction() if run.stats else 0.0,
        "cached_fraction": run.stats.cached_fraction() if run.stats else 0.0,
        **{name: None if why is None else getattr(why, name) for name in WHY},
    }


def compare(pipe: Any, methods: Sequence[MethodSpec], call: dict[str, Any], *, seed: int = 0,
            sparse: dict[str, Any] | None = None, warmup: bool = True, repeats: int = 1,
            baseline: RunResult | None = None, cache: CacheSpec | None = None,
            on_run: Callable[[str], None] | None = None,
            on_step: Callable[[int, int], None] | None = None) -> Comparison:
    """Run the stock pipeline, then each method, on ``call`` (pipeline arguments) with the same ``seed``.

    ``sparse`` holds the ``fastdit.apply`` arguments shared by every method (``preset``, ``dense_steps``,
    ``block_size``...). ``warmup`` first runs one unrecorded denoising step per configuration (the methods'
    with no dense warm-up step, so their sparse path runs), so one-time costs (thread pools, allocator
    growth, first-call dispatch, layout caches) are billed to no one. With ``repeats`` > 1 the
    configurations run round-robin and each keeps its fastest run, so a burst of load from elsewhere on the
    machine slows one round of every method instead of one method. ``baseline`` is a stock run of the same
    ``call`` and ``seed`` made earlier (the app caches them); it is then not run again. ``cache`` adds the
    cache alone and each method with it (see the module docstring). ``on_run`` is told each label before its
    run (for progress messages), and ``on_step`` each denoising step (see :func:`run_pipeline`). Leaves
    ``pipe`` unpatched.
    """
    if not methods:
        raise ValueError("compare needs at least one method")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    configs = _configs(methods, sparse or {}, cache, with_baseline=baseline is None)
    notify = on_run or (lambda label: None)
    if warmup:
        notify("warm-up")
        one_step = {**call, "num_inference_steps": 1}
        for _, config, with_cache in configs:
            warm = None if config is None else {**config, "dense_steps": 0}
            run_pipeline(pipe, one_step, seed=seed, label="warm-up", sparse=warm, cache=with_cache,
                         on_step=on_step)
    fastest: dict[str, RunResult] = {}
    for _ in range(repeats):
        for label, config, with_cache in configs:
            notify(label)
            run = run_pipeline(pipe, call, seed=seed, label=label, sparse=config, cache=with_cache,
                               on_step=on_step)
            if label not in fastest or run.total_s < fastest[label].total_s:
                fastest[label] = run
    if baseline is None:
        baseline = fastest.pop(BASELINE)
    runs = [fastest[label] for label, _, _ in configs if label != BASELINE]
    perceptual, unavailable = _lpips_for(baseline)
    dense_stats = _dense_stats(baseline, runs)
    rows = [_row(r, baseline, perceptual, dense_stats) for r in (baseline, *runs)]
    return Comparison(baseline, runs, rows, unavailable)


def _lpips_for(baseline: RunResult) -> tuple[Any, str | None]:
    """The LPIPS metric for videos like ``baseline``'s, or None and the one-line reason it can't score them."""
    height, width = baseline.frames.shape[1:3]
    if min(height, width) < MIN_SIDE:
        return None, f"LPIPS unavailable: frames of {width}x{height} are below its {MIN_SIDE}x{MIN_SIDE} minimum"
    try:
        return lpips_metric(), None
    except LpipsUnavailable as err:
        return None, str(err)


_Run = tuple[str, dict[str, Any] | None, CacheSpec | None]  # label, apply() arguments (None: stock), cache


def _configs(methods: Sequence[MethodSpec], sparse: dict[str, Any], cache: CacheSpec | None,
             with_baseline: bool) -> list[_Run]:
    """Every run of a comparison, in table order."""
    configs: list[_Run] = [(BASELINE, None, None)] if with_baseline else []
    if cache is not None:
        configs.append((cache.label, {**sparse, "method": "dense"}, cache))
    for spec in methods:
        config = spec.apply_arguments(sparse)
        configs.append((spec.label, config, None))
        if cache is not None:
            configs.append((f"{spec.label}+{cache.label}", config, cache))
    return configs


def write_comparison(comparison: Comparison, out_dir: str | Path, *, fps: int, command: str,
                     settings: dict[str, Any] | None = None) -> dict[str, Path]:
    """``compare.mp4`` and ``frames.png`` (a still of a few frames per run), or ``compare.png`` for image
    models, ``compare.md`` and ``compare.json`` in ``out_dir``; each written atomically."""
    out = Path(out_dir)
    panels = comparison.video()
    paths = {"table_md": out / "compare.md", "table_json": out / "compare.json"}
    if comparison.baseline.video:
        paths["video"] = write_video(panels, out / "compare.mp4", fps)
        paths["frames"] = write_image(comparison.frames(), out / "frames.png")
    else:
        paths["image"] = write_image(panels[0], out / "compare.png")
    data = {"command": command, "environment": environment(), "settings": settings or {}, **comparison.to_dict()}
    write_text(json.dumps(data, indent=2) + "\n", paths["table_json"])
    media = paths.get("video", paths.get("image"))
    write_text(f"# fastdit compare\n\nCommand: `{command}`\n\n{comparison.markdown()}\n"
               f"PSNR/SSIM/LPIPS are vs the dense (stock attention) output over all frames; speedup is total "
               f"pipeline time, step_speedup the mean denoising step; attention_s is the run's time in "
               f"self-attention, attention_share the dense run's; bound is the speedup a perfect kernel at this "
               f"density would give (Amdahl's law). Side by side: `{media.name}`.\n",
               paths["table_md"])
    return paths
