"""Calibrated vs uniform sparse attention, end to end: ``fastdit bench calibrate``.

On the bundled toy-world model (or ``--model``), every configuration generates the same held-out prompts at
the same seed, and is scored against the stock dense video of each prompt:

  density   mean share of the dense attention work over every step and layer (``fastdit.stats``)
  psnr_db   PSNR vs dense, pooled over the prompts (from the mean squared error); ssim: mean SSIM

Uniform configurations are the model's preset and every rung of each method's calibration ladder (radial
decay, pyramid bands, vmoba threshold, grat radius, sol tau), one setting for every layer and head, with the preset's
warm-up: they trace what one global knob can reach. Calibrated configurations come from one measuring pass on
prompts that are not among the evaluated ones (``fastdit.calibration.measurements``), selected at each
``--targets`` value. For each target the report compares the calibrated run's PSNR with the uniform
settings' Pareto frontier at the same density (linear between its points), and names the least dense
uniform setting with at least its PSNR. The calibration's cost is the measuring pass's time as a multiple of
one dense generation (selecting another target costs nothing). Writes ``<name>.json`` and ``<name>.md``.

  fastdit bench calibrate
  fastdit bench calibrate --targets 0.02 0.05 0.1 --prompts 6
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from fastdit.bench.toy import pooled_psnr
from fastdit.runs.report import markdown_table, write_report

COLUMNS = ("config", "kind", "target", "dense_steps", "density", "expected_density", "psnr_db", "ssim",
           "total_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.calibration import ALLOCATIONS, DEFAULT_METHODS
    from fastdit.calibration.candidates import SEARCHABLE
    from fastdit.cli.common import finite_float, whole_number
    from fastdit.runs.run import MAX_SEED

    parser.add_argument("--model", default="sample", help="'sample' (the bundled toy-world model), a folder or hub id")
    parser.add_argument("--targets", nargs="+", type=finite_float, default=[0.05, 0.1, 0.2],
                        help="calibration targets, >= 0 (relative L2 error of sampled output rows)")
    parser.add_argument("--allocations", nargs="+", choices=ALLOCATIONS, default=list(ALLOCATIONS),
                        help="how calibration spends each target: budget (RMS over heads), cap (every head)")
    parser.add_argument("--methods", nargs="+", choices=SEARCHABLE, default=list(DEFAULT_METHODS), metavar="METHOD",
                        help="methods calibration and the uniform settings use")
    parser.add_argument("--prompts", type=whole_number(), default=4, help="held-out prompts to evaluate on")
    parser.add_argument("--calibration-prompts", type=whole_number(), default=1,
                        help="other held-out prompts to calibrate on")
    parser.add_argument("--steps", type=whole_number(), help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0)
    parser.add_argument("--name", default="calibrate_cpu", help="report file name (without extension)")


def _prompts(evaluate: int, calibrate: int) -> tuple[list[str], list[str]]:
    """Evaluation prompts spread over the held-out set, and calibration prompts from the rest."""
    from fastdit.toy.world import HELD_OUT_PROMPTS

    total = len(HELD_OUT_PROMPTS)
    if evaluate < 1 or calibrate < 1 or evaluate + calibrate > total:
        raise ValueError(f"--prompts and --calibration-prompts must be >= 1 and sum to at most {total}")
    picked = np.linspace(0, total - 1, evaluate).round().astype(int).tolist()
    rest = [i for i in range(total) if i not in picked]
    others = [rest[i] for i in np.linspace(0, len(rest) - 1, calibrate).round().astype(int)]
    return [HELD_OUT_PROMPTS[i] for i in picked], [HELD_OUT_PROMPTS[i] for i in others]


def _score(pipe: Any, prompts: list[str], call: dict[str, Any], seed: int, sparse: dict[str, Any],
           dense: list[Any]) -> dict[str, Any]:
    from fastdit.runs.metrics import psnr, ssim
    from fastdit.runs.run import run_pipeline

    runs = [run_pipeline(pipe, {**call, "prompt": p}, seed=seed, label="", sparse=sparse) for p in prompts]
    return {"density": float(np.mean([r.stats.mean_density() for r in runs])),
            "psnr_db": pooled_psnr([psnr(d.frames, r.frames) for d, r in zip(dense, runs)]),
            "ssim": float(np.mean([ssim(d.frames, r.frames) for d, r in zip(dense, runs)])),
            "total_s": float(np.mean([r.total_s for r in runs]))}


def frontier_psnr(uniform: list[dict[str, Any]], density: float) -> float | None:
    """PSNR of the uniform settings' Pareto frontier at ``density``, linear between its neighbouring points
    (``None`` outside the frontier's density range)."""
    points, best = [], -math.inf
    for row in sorted(uniform, key=lambda r: r["density"]):
        if row["psnr_db"] > best and math.isfinite(row["psnr_db"]):
            points.append((row["density"], row["psnr_db"]))
            best = row["psnr_db"]
    for (d0, p0), (d1, p1) in zip(points, points[1:]):
        if d0 <= density <= d1:
            return p0 + (p1 - p0) * (density - d0) / (d1 - d0) if d1 > d0 else max(p0, p1)
    return None


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per calibrated row: its PSNR against the uniform frontier's at the same density, and the least dense
    uniform setting with at least its PSNR."""
    uniform = [r for r in rows if r["kind"] == "uniform"]
    lines = []
    for row in (r for r in rows if r["kind"] == "calibrated"):
        label = f"{row['config']}: PSNR {row['psnr_db']:.1f} dB at density {row['density']:.3f}"
        reference = frontier_psnr(uniform, row["density"])
        gain = ("outside the uniform settings' density range" if reference is None else
                f"uniform frontier there {reference:.1f} dB ({row['psnr_db'] - reference:+.1f} dB)")
        reach = [u for u in uniform if u["psnr_db"] >= row["psnr_db"]]
        if not reach:
            lines.append(f"{label}; {gain}; no uniform setting reaches this PSNR")
            continue
        least = min(reach, key=lambda u: u["density"])
        lines.append(f"{label}; {gain}; least dense uniform with PSNR >= that: {least['config']} at "
                     f"{least['density']:.3f} ({least['psnr_db']:.1f} dB)")
    return lines


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from fastdit.calibration import measure, select
    from fastdit.calibration.candidates import candidates, knob_value, options_dict
    from fastdit.cli import CLIError
    from fastdit.cli.common import command_line
    from fastdit.models.loading import ModelError, benchmark_call, load_pipeline, resolve_model
    from fastdit.runs.run import run_pipeline

    negative = [t for t in args.targets if t < 0]
    if negative:
        raise CLIError(f"--targets must be >= 0, got {' '.join(f'{t:g}' for t in negative)}")
    try:
        evaluate, calibrate_on = _prompts(args.prompts, args.calibration_prompts)
        source = resolve_model(args.model)
        pipe = load_pipeline(source, "cpu")
    except (ModelError, ValueError) as err:
        raise CLIError(str(err)) from None
    pipe.set_progress_bar_config(disable=True)
    call = benchmark_call(pipe, source, args.steps)
    dense = [run_pipeline(pipe, {**call, "prompt": p}, seed=args.seed, label="dense") for p in evaluate]
    dense_s = float(np.mean([r.total_s for r in dense]))
    rows: list[dict[str, Any]] = [{"config": "dense (stock)", "kind": "dense", "density": 1.0,
                                   "psnr_db": float("inf"), "ssim": 1.0, "total_s": dense_s}]
    measured = measure(pipe, calibrate_on, methods=args.methods, seed=args.seed, call=call)
    calibrations = [select(measured, t, allocation=a) for a in args.allocations for t in args.targets]
    uniform = [("preset", {})]  # the model preset's method and knobs
    uniform += [(f"{m} {knob_value(m, o)}", {"method": m, **options_dict(o)})
                for m in args.methods for o in candidates(m)]
    with tqdm(total=len(uniform) + len(calibrations), desc="bench calibrate", dynamic_ncols=True) as bar:
        for label, sparse in uniform:
            rows.append({"config": label, "kind": "uniform", **_score(pipe, evaluate, call, args.seed, sparse, dense)})
            bar.update()
        for calibration in calibrations:
            scored = _score(pipe, evaluate, call, args.seed, {"calibration": calibration}, dense)
            rows.append({"config": f"calibrated {calibration.allocation} {calibration.target:g}",
                         "kind": "calibrated", "target": calibration.target, "dense_steps": calibration.dense_steps,
                         "expected_density": calibration.expected_density, **scored})
            bar.update()
    notes = verdicts(rows)
    cost = measured.seconds / dense_s
    layers = {f"{c.allocation} {c.target:g}": [
        {"layer": f"{entry.model}.{entry.layer}", "method": entry.method, "density": entry.density,
         "heads": ["dense" if h.options is None else h.density for h in entry.heads]} for entry in c.layers]
        for c in calibrations}
    body = (f"Model `{args.model}`, {len(evaluate)} held-out prompts evaluated, calibrated on "
            f"{len(calibrate_on)} other prompt(s), call {call}, seed {args.seed}. Uniform: every rung of each "
            f"method's ladder for all layers and heads, with the preset's warm-up.\n\n"
            f"Calibration cost: {measured.seconds:.1f} s for measuring {len(measured.steps)} of "
            f"{measured.schedule} steps = {cost:.2f}x one dense generation ({dense_s:.2f} s); each further "
            f"target is a selection on the same measurements (no generation).\n\n"
            + markdown_table(rows, COLUMNS) + "\n" + "\n".join(f"- {line}" for line in notes) + "\n")
    data = {"model": args.model, "call": call, "seed": args.seed, "evaluated_prompts": evaluate,
            "calibration_prompts": calibrate_on, "measured_steps": list(measured.steps),
            "calibration_seconds": measured.seconds, "dense_seconds": dense_s, "cost_vs_dense": cost,
            "rows": rows, "verdicts": notes, "calibrations": [c.to_dict() for c in calibrations],
            "layers": layers}
    json_path, md_path = write_report(args.out, args.name, "Calibrated vs uniform sparse attention", data, body,
                                      command_line())
    print(body)
    print(f"wrote {json_path} and {md_path}")
    return 0
