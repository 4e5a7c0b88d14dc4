"""Generate a video (mp4) or image (png) with sparse attention, and say what it cost.

  fastdit generate --prompt "a red ball bouncing in a white room"   # the bundled toy model, offline, CPU
  fastdit generate --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "a cat surfing" \\
      --method radial --option decay_factor=0.4 --frames 81 --out cat.mp4 --report cat.json
  torchrun --nproc-per-node 4 -m fastdit generate --model ... --prompt "a cat surfing" --parallel ulysses=4
  fastdit generate --model Wan-AI/Wan2.1-I2V-14B-480P-Diffusers --image cat.png --prompt "the cat surfs" \\
      --offload model --vae-tiling     # image to video; a 14B model on one GPU: weights wait on the CPU

Several prompts (--prompt repeated, or --prompt-file with one per line) are one run each with the model
loaded once, written to OUT-1.mp4, OUT-2.mp4... (zero-padded); the --report then lists every run.

Without --model it runs the bundled toy-world model (samples/tiny-wan: coloured shapes). Settings
not given come from the model: call defaults from its folder's fastdit.json or the pipeline, sparse
defaults from its preset (see `fastdit info`). The summary reports time, time per denoising step, the
attention density per layer (mean over steps) and peak memory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fastdit.cli import CLIError
from fastdit.cli.common import (add_model_arguments, add_sparse_arguments, cache_spec, call_arguments, check_arguments,
                                check_cacheable, check_method, command_line, format_bytes, json_call, load_model,
                                parse_options, read_images, run_label, sparse_arguments)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.methods import available_methods

    parser.add_argument("--method", choices=available_methods(), metavar="METHOD",
                        help=f"{' | '.join(available_methods())}; default: the model preset's")
    parser.add_argument("--out", help="output file: .mp4 for video models, .png for image models "
                                      "(default: out.mp4 / out.png)")
    parser.add_argument("--report", help="also write the numbers as JSON to this file")
    parser.add_argument("--parallel", metavar="KIND=N",
                        help="context parallelism over N processes, ulysses=N or ring=N (launch with "
                             "torchrun --nproc-per-node N -m fastdit generate ...); rank 0 writes")
    add_model_arguments(parser)
    add_sparse_arguments(parser)


def _check_output(flag: str, path: str, suffixes: tuple[str, ...]) -> Path:
    from fastdit.runs.media import check_writable

    if Path(path).suffix.lower() not in suffixes:
        raise CLIError(f"{flag} {path!r} must end in {' or '.join(suffixes)}")
    try:
        return check_writable(path)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _agree(args: argparse.Namespace, source: Any, device: str, call: dict, config: Any, cache: Any) -> None:
    """Every rank of ``--parallel`` must compute the same thing: refuse, on every rank, settings that differ
    (the model by its real path, so a symlink or the sample's other name counts as the same model)."""
    from fastdit.patching.parallel.launch import agree

    model = str(Path(source.location).resolve()) if source.local else source.location
    settings = {"--model": model, "--lora": args.lora and str(Path(args.lora).resolve()), "--seed": args.seed,
                "--device": device, "--dtype": args.dtype, "--parallel": args.parallel, "call": call,
                "sparse settings": repr(config), "--cache": cache and cache.label}
    try:
        agree(settings)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _check_parallel(kind: str, degree: int, calibration: str | None, cache: Any) -> None:
    """What ``--parallel`` can't run equal to one process is refused before the model loads."""
    if cache is not None:  # a cache decides per rank, from the rank's own shard, whether a step runs
        raise CLIError(f"--cache {cache.kind} doesn't run under --parallel (diffusers' caches decide on each "
                       "rank's shard alone whether to skip work, and ranks that differ fail); run it in one process")
    if kind == "ring" and calibration is not None:
        raise CLIError(f"--calibration under --parallel ring={degree} does not reproduce the single-process "
                       f"video; use --parallel ulysses={degree}, which does")


def run(args: argparse.Namespace) -> int:
    from fastdit.patching.parallel.launch import all_finished, is_main_process, parallelize, parse_parallel
    from fastdit.patching.patch import apply, patch_config, remove
    from fastdit.runs.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from fastdit.runs.report import environment
    from fastdit.runs.run import is_video_pipeline
    from fastdit.runtime.files import write_text

    options = parse_options(args.option)
    check_arguments(args)
    cache = cache_spec(args)
    if args.method is not None:
        check_method(args.method, options)
    out = _check_output("--out", args.out, VIDEO_SUFFIXES + IMAGE_SUFFIXES) if args.out else None
    if args.report:
        _check_output("--report", args.report, (".json",))

    if args.parallel and args.offload:
        raise CLIError("--offload and --parallel don't combine: each rank holds its share of the work on its own GPU")
    if args.parallel:
        try:
            kind, degree = parse_parallel(args.parallel)  # before the model loads
        except ValueError as err:
            raise CLIError(str(err)) from None
        _check_parallel(kind, degree, args.calibration, cache)

    images = read_images(args)
    source, pipe, device = load_model(args)
    if args.parallel:
        try:
            parallelize(pipe, args.parallel)
        except (RuntimeError, ValueError) as err:
            raise CLIError(str(err)) from None
    video = is_video_pipeline(pipe)
    suffixes = VIDEO_SUFFIXES if video else IMAGE_SUFFIXES
    kind = "videos" if video else "images"
    if out is None:
        out = _check_output("--out", f"out{suffixes[0]}", suffixes)
    elif out.suffix.lower() not in suffixes:
        raise CLIError(f"{type(pipe).__name__} makes {kind}; --out must end in {' or '.join(suffixes)}")
    call = call_arguments(args, pipe, source, device, images)
    if cache is not None:
        check_cacheable(pipe)
    sparse = {**sparse_arguments(args), "method": args.method, **options}
    try:  # every apply() argument is checked before the (long) run starts
        config = patch_config(apply(pipe, **sparse))
        remove(pipe)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from None
    if args.parallel:
        _agree(args, source, device, {**json_call(call, args), "prompts": args.prompts}, config, cache)

    main = is_main_process()  # under --parallel every rank computes, rank 0 reports and writes
    pipe.set_progress_bar_config(desc=args.method or "denoising", disable=not main)
    prompts = args.prompts
    runs = []
    for i, prompt in enumerate(prompts, 1):
        path = out if len(prompts) == 1 else out.with_name(f"{out.stem}-{run_label(i, len(prompts))}{out.suffix}")
        if len(prompts) > 1 and main:
            print(f"[{i}/{len(prompts)}] {prompt}")
        result = _generate(pipe, {**call, "prompt": prompt}, args, sparse, cache)
        all_finished()  # a rank that fails ends the launch here: nothing is written
        if main:
            _write(result, path, args.fps or source.fps, device)
        runs.append({"output": str(path), "call": json_call({**call, "prompt": prompt}, args), **result.to_dict()})
    if args.report and main:
        report = {"command": command_line(), "environment": environment(), "model": source.location,
                  "device": device, "seed": args.seed, "fps": args.fps or source.fps, "offload": args.offload,
                  "vae_tiling": args.vae_tiling, **(runs[0] if len(runs) == 1 else {"runs": runs})}
        write_text(json.dumps(report, indent=2) + "\n", args.report)
        print(f"report: {args.report}")
    return 0


def _generate(pipe: Any, call: dict[str, Any], args: argparse.Namespace, sparse: dict[str, Any], cache: Any):
    from fastdit.runs.run import run_pipeline

    try:
        return run_pipeline(pipe, call, seed=args.seed, label=args.method or "preset", sparse=sparse, cache=cache)
    except ValueError as err:  # the pipeline's own input checks
        raise CLIError(f"{type(pipe).__name__}: {err}") from None
    except ImportError as err:  # a package the pipeline calls is missing (it names it)
        raise CLIError(str(err)) from None


def _write(result: Any, out: Path, fps: int, device: str) -> None:
    """The video (or image) and the summary of one run."""
    from fastdit.runs.breakdown import explain
    from fastdit.runs.media import write_image, write_video

    if result.video:
        write_video(result.frames, out, fps)
    else:
        write_image(result.frames[0], out)
    methods = sorted({r.reason for r in result.stats.records if not r.dense})
    f, h, w = result.frames.shape[:3]
    print(f"wrote {out} ({f} frames of {w}x{h}, {fps} fps)" if result.video else f"wrote {out} ({w}x{h})")
    step = f", {result.mean_step_s:.3f} s per step" if result.mean_step_s is not None else ""
    print(f"time: {result.total_s:.2f} s on {device} ({len(result.step_s)} steps, denoising "
          f"{result.denoise_s:.2f} s{step})")
    print(f"attention: {', '.join(methods) or 'dense only'}; {result.stats.summary()}")
    why = explain(result.total_s, result.stats)
    if why is not None:
        print(f"where the time went: {why.sentence()}")
    per_layer = "  ".join(f"{name}={d:.3f}" for name, d in result.per_layer_density().items())
    print(f"density per layer (mean over steps): {per_layer}")
    print(f"peak memory: {format_bytes(result.peak_memory_bytes)} ({result.memory_kind})")
