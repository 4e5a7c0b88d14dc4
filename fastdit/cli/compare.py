"""Run the same prompt and seed with dense attention and with one or more sparse methods, and compare.

  fastdit compare --prompt "a red ball bouncing in a white room" --methods radial grat --out out/compare

Writes into --out: compare.mp4 (all runs side by side, labelled) and frames.png (six frames of each run, for
a README; compare.png for image models), compare.md and compare.json (total and per-step time, speedup vs
dense, PSNR and SSIM vs dense over all frames, mean attention density). Dense is the pipeline's stock
attention. Method options are METHOD.KEY=VALUE (or KEY=VALUE when one method is compared). One-step
warm-up runs go first so the first timed run isn't billed for one-time costs (--no-warmup skips them);
--repeats N runs everything N times round-robin and keeps each configuration's fastest run, which steadies
timings on a busy machine.

  fastdit compare --prompt "a red ball" --methods radial --cache fbcache --cache-option threshold=0.1

Several prompts (--prompt repeated, or --prompt-file with one per line) make one comparison each, in
--out/1, --out/2... (zero-padded), with the model loaded once.

--cache KIND adds a diffusers step cache (fbcache, pab, taylorseer, magcache, seacache, textkv): the cache
alone, and each method with it, so the table shows each speedup and the combined one against dense.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fastdit.cli import CLIError
from fastdit.cli.common import (add_model_arguments, add_sparse_arguments, cache_spec, call_arguments, check_arguments,
                                check_cacheable, check_method, command_line, json_call, load_model, parse_options,
                                read_images, run_label, sparse_arguments)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.methods import available_methods

    parser.add_argument("--methods", nargs="+", default=["radial"], choices=available_methods(), metavar="METHOD",
                        help=f"methods to compare with dense ({' | '.join(available_methods())}); default: radial")
    parser.add_argument("--out", default="out/compare", help="output folder (created if missing)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the one-step warm-up runs")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every configuration this many times, round-robin, and keep each one's fastest")
    add_model_arguments(parser)
    add_sparse_arguments(parser)


def _method_options(methods: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``radial.decay_factor=0.4`` → ``{"radial": {"decay_factor": 0.4}}``; bare keys need a single method."""
    per_method: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for key, value in options.items():
        method, dot, name = key.partition(".")
        if not dot:
            if len(methods) != 1:
                raise CLIError(f"--option {key}=...: say which method it is for, e.g. {methods[0]}.{key}=...")
            method, name = methods[0], key
        if method not in per_method:
            raise CLIError(f"--option {key}=...: {method!r} is not one of --methods ({', '.join(methods)})")
        per_method[method][name] = value
    return per_method


def run(args: argparse.Namespace) -> int:
    from fastdit.patching.patch import apply, remove
    from fastdit.runs.compare import MethodSpec, compare, write_comparison
    from fastdit.runs.media import check_writable

    if args.repeats < 1:
        raise CLIError(f"--repeats must be >= 1, got {args.repeats}")
    if len(set(args.methods)) != len(args.methods):
        raise CLIError(f"--methods lists a method twice: {' '.join(args.methods)}")
    per_method = _method_options(args.methods, parse_options(args.option))
    check_arguments(args)
    cache = cache_spec(args)
    for method, options in per_method.items():
        check_method(method, options)
    try:
        check_writable(args.out, directory=True)
    except ValueError as err:
        raise CLIError(str(err)) from None

    images = read_images(args)
    source, pipe, device = load_model(args)
    call = call_arguments(args, pipe, source, device, images)
    if cache is not None:
        check_cacheable(pipe)
    shared = sparse_arguments(args)
    calibration = shared.pop("calibration", None)
    reuse = shared.pop("reuse_calibration", False)
    specs = [MethodSpec(m, per_method[m]) for m in args.methods]
    if calibration is not None:  # the calibrated run joins the methods
        specs.append(MethodSpec("calibrated", calibration=calibration))
        shared["reuse_calibration"] = reuse
    for spec in specs:  # every apply() argument is checked before the (long) runs start
        try:
            remove(apply(pipe, **spec.apply_arguments(shared)))
        except (TypeError, ValueError) as err:
            raise CLIError(str(err)) from None

    def progress(label: str) -> None:
        pipe.set_progress_bar_config(desc=label)

    for i, prompt in enumerate(args.prompts, 1):  # several prompts: one comparison each, in out/1, out/2...
        folder = Path(args.out) if len(args.prompts) == 1 else Path(args.out) / run_label(i, len(args.prompts))
        if len(args.prompts) > 1:
            print(f"[{i}/{len(args.prompts)}] {prompt}")
        prompt_call = {**call, "prompt": prompt}
        try:
            result = compare(pipe, specs, prompt_call, seed=args.seed, sparse=shared, warmup=args.warmup,
                             repeats=args.repeats, cache=cache, on_run=progress)
        except ValueError as err:  # the pipeline's own input checks
            raise CLIError(f"{type(pipe).__name__}: {err}") from None
        except ImportError as err:  # a package the pipeline calls is missing (it names it)
            raise CLIError(str(err)) from None
        settings = {"model": source.location, "seed": args.seed, "call": json_call(prompt_call, args),
                    "sparse": shared, "methods": {s.label: s.options for s in specs},
                    "cache": None if cache is None else {"kind": cache.kind, "options": cache.options}}
        paths = write_comparison(result, folder, fps=args.fps or source.fps, command=command_line(),
                                 settings=settings)
        sys.stdout.write(result.markdown())
        print("\n".join(f"wrote {path}" for path in paths.values()))
    return 0
