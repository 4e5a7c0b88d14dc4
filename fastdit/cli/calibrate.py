"""Calibrate sparse attention per layer and head to a quality target, and write the result as a JSON file.

  fastdit calibrate --prompt "a red ball bouncing in a white room" --target 0.05 --out calibration.json
  fastdit generate --prompt "a cat surfing" --calibration calibration.json

Runs a dense generation per prompt (stopped after the last measured step, no VAE decode). At a few denoising steps
it computes sampled query rows of every self-attention layer exactly and under each candidate setting of each
method (radial decay, pyramid bands, vmoba threshold, grat radius, sol tau), then chooses per layer and head the
sparsest settings whose error stays within --target (relative L2 of the output rows, or with --metric mass the share
of attention mass left out; for every head, or with --allocation budget as an RMS over all heads); layers and heads
where nothing is worth its error run dense, and a dense warm-up (at least the preset's, or --warmup) is chosen where
it pays. The file records the model, its config fingerprint, the grid, the target, every choice with its measured
error and density, and the expected density of a run.
"""

from __future__ import annotations

import argparse
import math

from fastdit.cli import CLIError
from fastdit.cli.common import (add_model_arguments, call_arguments, check_preset, load_model, read_images,
                                read_prompts, step_count_or_share)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.calibration import ALLOCATIONS, DEFAULT_METHODS, METRICS
    from fastdit.calibration.candidates import SEARCHABLE
    from fastdit.calibration.measurements import DEFAULT_ROWS

    parser.add_argument("--target", type=float, default=0.05,
                        help="largest error allowed per layer and head (default 0.05)")
    parser.add_argument("--metric", choices=METRICS, default="rel_l2",
                        help="rel_l2: relative L2 error of sampled output rows (default); mass: share of the "
                             "attention mass a layout leaves out")
    parser.add_argument("--allocation", choices=ALLOCATIONS, default="cap",
                        help="cap: every head's error stays within --target (default); budget: the RMS of the "
                             "errors over all heads does, spent where it buys the most sparsity")
    parser.add_argument("--methods", nargs="+", choices=SEARCHABLE, default=list(DEFAULT_METHODS), metavar="METHOD",
                        help=f"methods to choose from per layer ({' | '.join(SEARCHABLE)}; default: "
                             f"{' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--measure-steps", nargs="+", type=int, metavar="STEP",
                        help="0-based denoising steps to measure (default: 5 spread over the run)")
    parser.add_argument("--warmup", type=step_count_or_share, metavar="N|SHARE",
                        help="the shortest dense warm-up allowed, in steps or a share of them (default: the "
                             "preset's published one; 0 lets calibration decide alone)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"query rows sampled per self-attention call (default {DEFAULT_ROWS})")
    parser.add_argument("--shared-heads", action="store_true",
                        help="one setting for all heads of a layer (default: one per head)")
    parser.add_argument("--preset", default="auto",
                        help="where the block size and the options not searched come from: 'auto', 'none' or a "
                             "preset id")
    parser.add_argument("--block-size", type=int, help="kernel block in tokens (default: the preset's)")
    parser.add_argument("--out", default="calibration.json", help="the calibration file to write (.json)")
    add_model_arguments(parser, several_prompts=True)


def _check(args: argparse.Namespace) -> None:
    from fastdit.runs.media import check_writable
    from fastdit.runs.run import check_seed
    from fastdit.runtime.config import check_block_size

    if not math.isfinite(args.target) or args.target < 0:
        raise CLIError(f"--target must be a finite number >= 0, got {args.target}")
    if args.rows < 1:
        raise CLIError(f"--rows must be >= 1, got {args.rows}")
    for flag in ("steps", "frames", "height", "width"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise CLIError(f"--{flag} must be > 0, got {value}")
    if args.measure_steps and any(s < 0 for s in args.measure_steps):
        raise CLIError(f"--measure-steps are 0-based step indices, got {args.measure_steps}")
    check_preset(args.preset)
    try:
        check_seed(args.seed)
        if args.block_size is not None:
            check_block_size(args.block_size)
        if not args.out.endswith(".json"):
            raise ValueError(f"--out {args.out!r} must end in .json")
        check_writable(args.out)
    except ValueError as err:
        raise CLIError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    from fastdit.calibration import measure, select

    _check(args)
    prompts = read_prompts(args)
    images = read_images(args)
    source, pipe, device = load_model(args)
    call = call_arguments(args, pipe, source, device, images)
    call.pop("prompt")
    pipe.set_progress_bar_config(desc="calibrating")
    try:
        measured = measure(pipe, prompts, methods=args.methods, steps=args.measure_steps, warmup=args.warmup,
                           rows=args.rows,
                           block_size=args.block_size, preset=None if args.preset == "none" else args.preset,
                           seed=args.seed, call=call)
        calibration = select(measured, args.target, metric=args.metric, allocation=args.allocation,
                             per_head=not args.shared_heads)
    except ValueError as err:
        raise CLIError(str(err)) from None
    calibration.save(args.out)
    for choice in calibration.layers:
        heads = ", ".join("dense" if h.options is None else f"{h.density:.2f} (err {h.error:.3f})"
                          for h in choice.heads) or "dense"
        print(f"{choice.model}.{choice.layer}: {choice.method}: {heads}")
    print(calibration.summary())
    print(f"measured {len(measured.steps)} of {measured.schedule} steps of {len(prompts)} prompt(s) in "
          f"{measured.seconds:.1f} s on {device}")
    print(f"wrote {args.out}")
    return 0
