"""Transformer step time, dense vs each method, at a real model's config with random weights.

The denoiser is built from the model's published config (``fastdit.dummy.configs``), so no download is
needed and the numbers are for the real widths, head counts, depth and token counts; weights don't change
the work done by dense attention or static layouts (dynamic methods such as pyramid and vmoba choose blocks
from q and k, so their density on random weights is only indicative). One "step" is one transformer forward
at batch 1; a denoising step is one such forward for guidance-distilled models and two under classifier-free
guidance (``--list`` gives each model's count, its config's source and its published generation size).

Each method is applied with the model's preset knobs and ``dense_steps=0``, ``dense_layers=0`` (every layer
sparse), so the time is that of a step after the dense warm-up; for a method that carries state from step to step
(svg2's centroids) it is that of a later step, after an untimed one that fills the state (a run's first sparse step,
with SVG2's full k-means, is timed by ``fastdit bench order-cost``). Dense is the stock diffusers attention.
Reported: median (and min) forward time over ``--repeats`` rounds, each timing every method once (so load
from elsewhere on a shared machine hits all methods alike), after ``--warmup`` untimed forwards per method;
speedup = dense median / method median; the mean attention density. Each row also says where the time went
(:mod:`fastdit.runs.breakdown`, from ``fastdit.stats`` of the method's median forward): attention seconds and
their speedup over dense, the attention share of the dense forward, fastdit's overhead share of the sparse
attention, and the bound a perfect kernel at this density could give; the dense attention time is timed on
fastdit's dense path (row ``dense (fastdit)``: the same SDPA the stock attention calls). Each row's forward is also
split into the parts ``stats`` timed (``parts_s``: kernel, layout build, token permutation, bookkeeping of the
attention calls, the model outside attention); ``accounted`` is their sum over the measured forward, and the
report prints whether it is within 5% (the parts add up to the whole). ``--quick``
shrinks the model to 2 layers of 2 heads (head dim, patch and frame size kept) and 5 latent frames, so it
finishes on a CPU in minutes.

Under ``torchrun`` with ``--parallel ulysses=N`` (or ``ring=N``) the model runs under diffusers' context
parallelism; every rank times its own forwards and the report gives each rank's median and, as the step
time, the slowest rank's. On CPUs (gloo) such a run shows that it works, not how fast it would be.

  fastdit bench e2e --quick                                    # CPU
  fastdit bench e2e --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers    # GPU: 480p, 81 frames, 30 layers
  fastdit bench e2e --list                                     # every model, its source, size and CFG
  torchrun --nproc-per-node 4 -m fastdit bench e2e --parallel ulysses=4   # 4 GPUs
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from fastdit.runs.breakdown import explain
from fastdit.runs.report import markdown_table, write_report
from fastdit.runtime.stats import AttentionStats

DEFAULT_MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
QUICK_LATENT_FRAMES = 5  # --quick: 17 frames of Wan, 33 of LTX (one frame for images)
ONCE = " once"  # the row of a method timed with permute_once=True (--permute-once)
ACCOUNTED = 0.05  # the timed parts of a forward add up to its measured time within this share (issue 37)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.cli.common import whole_number
    from fastdit.dummy.configs import MODEL_CONFIGS, QUICK
    from fastdit.methods import available_methods

    sparse = [m for m in available_methods() if m != "dense"]
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODEL_CONFIGS), metavar="MODEL",
                        help=f"one of: {', '.join(MODEL_CONFIGS)} (--list says where each config comes from)")
    parser.add_argument("--list", action="store_true",
                        help="list the models with their config's source, generation size and forwards per step, "
                             "and the supported families without one (and why), then exit")
    parser.add_argument("--methods", nargs="+", default=sparse, choices=sparse, metavar="METHOD",
                        help=f"default: all ({', '.join(sparse)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"scaled-down model ({QUICK} where the class has them) and {QUICK_LATENT_FRAMES} "
                             "latent frames, for CPUs")
    parser.add_argument("--frames", type=whole_number(), help="video frames (default: the model's usual size)")
    parser.add_argument("--height", type=whole_number())
    parser.add_argument("--width", type=whole_number())
    parser.add_argument("--layers", type=whole_number(), help="keep only the first N transformer blocks")
    parser.add_argument("--repeats", type=whole_number(), default=3,
                        help="timed forwards per method (median reported)")
    parser.add_argument("--warmup", type=whole_number(0), default=1, help="untimed forwards per method first")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                        help="auto: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--backend", default="auto", help="kernel backend for the sparse methods")
    parser.add_argument("--name", help="report file name without extension (default: e2e_<device>)")
    parser.add_argument("--permute-once", action="store_true",
                        help="also time each method with permute_once=True (tokens moved into the layout's order "
                             "once per forward), alternating with the default")
    parser.add_argument("--parallel", metavar="KIND=N",
                        help="context parallelism over N torchrun processes: ulysses=N or ring=N")


def _forward_seconds(model: torch.nn.Module, inputs: dict[str, Any], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        model(**inputs, return_dict=False)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _timed(model: torch.nn.Module, inputs: dict[str, Any], method: str | None,
           apply_kwargs: dict[str, Any]) -> tuple[float, AttentionStats | None]:
    """One forward, stock (``method=None``) or patched with ``method`` (``"<method> once"``: with
    ``permute_once=True``): (seconds, its stats; ``None`` stock)."""
    import fastdit

    cuda = next(model.parameters()).is_cuda
    if method is None:
        return _forward_seconds(model, inputs, cuda), None
    from fastdit.methods import get_method
    from fastdit.patching.patch import restart_stats

    name = method.removesuffix(ONCE)
    settings = {"preset": None} if name == "dense" else {**apply_kwargs, "permute_once": method.endswith(ONCE)}
    fastdit.apply(model, method=name, **settings)
    try:
        if get_method(name).stateful:
            # a run's first sparse step is its only cold one (SVG2's full k-means; the others start from the
            # previous step's centroids): a forward first, so the one timed is a later step
            _forward_seconds(model, inputs, cuda)
            restart_stats(model)
        return _forward_seconds(model, inputs, cuda), fastdit.stats(model)
    finally:
        fastdit.remove(model)


def _baseline(model: torch.nn.Module, inputs: dict[str, Any], apply_kwargs: dict[str, Any]) -> str | None:
    """The dense row of a context-parallel run: diffusers' own attention (``None``), or fastdit's dense
    (``"dense"``) when the diffusers backend can't run this kind of parallelism (its native backend has no
    ring attention)."""
    try:
        _timed(model, inputs, None, apply_kwargs)
    except ValueError:
        return "dense"
    return None


def _per_rank(medians: dict[str | None, float]) -> list[dict[str | None, float]] | list[None]:
    """Every rank's medians on rank 0 (``[None]`` elsewhere)."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size() if dist.get_rank() == 0 else []
    dist.gather_object(medians, gathered if dist.get_rank() == 0 else None, dst=0)
    return gathered if dist.get_rank() == 0 else [None]


WHY = ("attention_s", "kernel_s", "overhead_s", "attention_speedup", "attention_share", "overhead_share", "bound")


def _median_run(runs: list[tuple[float, AttentionStats | None]]) -> tuple[float, AttentionStats | None]:
    """The round whose time is the median (the upper one of an even count)."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def _why(method: str | None, runs: dict[str | None, list[tuple[float, AttentionStats | None]]],
         dense: float) -> dict[str, Any]:
    """Where the median forward's time went (attention dense vs sparse, overhead, bound) and how much of the
    measured time ``stats`` accounts for; empty without fastdit's dense run to time dense attention."""
    timed = _median_run(runs["dense"]) if "dense" in runs else (0.0, None)
    seconds, stats = _median_run(runs[method]) if method is not None else timed
    why = explain(seconds, stats, dense, timed[1])
    if why is None:
        return {}
    row = {name: getattr(why, name) for name in WHY}
    if method is None:  # the stock forward: its attention is the same SDPA that fastdit's dense path timed
        row = {"attention_s": why.dense_attention_s, "attention_share": why.attention_share}
    parts = stats.parts_s() if method is not None else None
    if parts is not None:
        row["parts_s"], row["measured_s"] = parts, seconds  # the median round's forward, which stats timed
        row["accounted"] = sum(parts.values()) / seconds
    return row


def parts_line(row: dict[str, Any]) -> str | None:
    """The check that a row's timed parts add up to its measured forward: the parts, their sum, the measured
    median forward and whether they agree within :data:`ACCOUNTED` (``None``: the row has no parts).

    Args:
        row: a report row (``parts_s``: seconds per part of the median round's forward, ``measured_s`` its
            measured time, ``accounted`` the parts' sum over it).

    Returns:
        One line for the report, or ``None``.
    """
    if "parts_s" not in row:
        return None
    parts = " + ".join(f"{name} {seconds:.3f}" for name, seconds in row["parts_s"].items())
    verdict = "ok" if abs(row["accounted"] - 1) <= ACCOUNTED else f"NOT within {ACCOUNTED:.0%}"
    return (f"{row['method']}: {parts} = {sum(row['parts_s'].values()):.3f} s of {row['measured_s']:.3f} s measured "
            f"({row['accounted']:.1%}, {verdict})")


def _rows(configs: list[str | None], runs: dict[str | None, list[tuple[float, AttentionStats | None]]],
          ranks: list[dict[str | None, float]] | None) -> list[dict[str, Any]]:
    """One report row per configuration, the first the dense baseline; under context parallelism a step
    takes as long as its slowest rank (and the breakdown of the time is left out: each rank has its own).
    ``dense_reasons`` says why layers ran dense (e.g. a grid too small to skip any block)."""
    times = {method: [seconds for seconds, _ in found] for method, found in runs.items()}

    def median(method: str | None) -> float:
        return max(r[method] for r in ranks) if ranks else statistics.median(times[method])

    dense = median(configs[0])
    rows: list[dict[str, Any]] = []
    for method in configs:
        label = {None: "dense", "dense": "dense (fastdit)"}.get(method, method)
        stats = runs[method][-1][1]
        row = {"method": label, "median_s": median(method), "min_s": min(times[method]),
               "speedup": dense / median(method), "density": stats.mean_density() if stats else 1.0,
               "dense_reasons": sorted({r.reason for r in stats.records if r.dense}) if stats else []}
        if ranks:
            row["rank_s"] = " / ".join(f"{r[method]:.3f}" for r in ranks)
        else:
            row.update(_why(method, runs, dense))
        rows.append(row)
        bound = f"  bound {row['bound']:.2f}x" if row.get("bound") else ""
        share = f"  attention {row['attention_share']:.0%} of dense" if row.get("attention_share") else ""
        print(f"  {row['method']:<15} {row['median_s']:.3f} s  speedup {row['speedup']:.2f}x{bound}  "
              f"density {row['density']:.3f}{share}" + (f"  per rank {row['rank_s']} s" if ranks else ""))
    return rows


def _check_limits(model_id: str, overrides: dict[str, Any], frames: int, height: int, width: int, device: str,
                  dtype: torch.dtype, *, check_memory: bool) -> None:
    """The model's RoPE table and the device's free memory against the video size, as ``generate`` checks them,
    before the random weights are made: the denoiser is built on the meta device (no memory, no time) for the
    check, under the pipeline's latent compression. Under context parallelism each rank holds a share of the
    tokens, so the whole-call memory estimate does not apply."""
    from types import SimpleNamespace

    from fastdit.dummy.configs import MODEL_CONFIGS, build_denoiser
    from fastdit.models.limits import check_call_limits

    spec = MODEL_CONFIGS[model_id]
    pipe = SimpleNamespace(transformer=build_denoiser(model_id, device="meta", dtype=dtype, **overrides),
                           vae_scale_factor_temporal=spec.size.t_compress, vae_scale_factor_spatial=spec.vae_spatial)
    check_call_limits(pipe, {"num_frames": frames, "height": height, "width": width}, device,
                      check_memory=check_memory)


def _list() -> None:
    """Every model ``--model`` takes (family, size, forwards per step, the config's source), then the supported
    families that have none, with the reason."""
    from fastdit.dummy.configs import MODEL_CONFIGS, NOT_BENCHED

    for model_id, spec in MODEL_CONFIGS.items():
        size = spec.size
        shape = f"{size.width}x{size.height}" + (f", {size.frames} frames" if not spec.image else "")
        print(f"{model_id}  ({spec.denoiser}; {shape}; {spec.cfg} forward{'s' * (spec.cfg > 1)} per step)\n"
              f"    config: {spec.source}")
    if NOT_BENCHED:
        print("\nSupported families without a config here:")
        for family, reason in NOT_BENCHED.items():
            print(f"  {family}: {reason}")


def _video_size(args: argparse.Namespace, spec: Any) -> tuple[int, int, int]:
    """Frames, height and width of the run: the flags, else the published size (``--quick``: 5 latent frames),
    refused with the model's rule when the pipeline couldn't make it."""
    from fastdit.models.loading import check_video_size

    quick_frames = 1 if spec.image else (QUICK_LATENT_FRAMES - 1) * spec.size.t_compress + 1
    frames = args.frames or (quick_frames if args.quick else spec.size.frames)
    height, width = args.height or spec.size.height, args.width or spec.size.width
    if spec.image and frames != 1:
        raise ValueError(f"{args.model} makes images: --frames must be 1, got {frames}")
    check_video_size(args.model, frames, height, width, frame_step=None if spec.image else spec.size.t_compress,
                     multiple=spec.size.s_compress)
    return frames, height, width


def run(args: argparse.Namespace) -> int:
    import fastdit
    from fastdit.cli import CLIError
    from fastdit.cli.common import command_line, resolve_device, resolve_dtype
    from fastdit.dummy.configs import MODEL_CONFIGS, build_denoiser
    from fastdit.dummy.inputs import build_inputs
    from fastdit.patching.families import detect_family
    from fastdit.patching.parallel.launch import is_main_process
    from fastdit.patching.presets import PRESETS, VideoSize

    if args.list:
        _list()
        return 0
    if args.backend not in ("auto", *fastdit.available_backends()):
        raise CLIError(f"unknown backend {args.backend!r}; available: auto, {', '.join(fastdit.available_backends())}")
    if args.parallel:
        from fastdit.patching.parallel.launch import agree, init_distributed, parse_parallel

        try:
            parallel = parse_parallel(args.parallel)
            init_distributed()
            # every flag but where rank 0 writes shapes the forwards all ranks run together
            agree({f"--{k}": v for k, v in vars(args).items()
                   if k not in ("out", "name") and not k.startswith("_") and not callable(v)})
        except (RuntimeError, ValueError) as err:
            raise CLIError(str(err)) from None
    spec = MODEL_CONFIGS[args.model]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    overrides = spec.quick_overrides() if args.quick else {}
    if args.layers is not None:
        overrides["num_layers"] = args.layers
    try:
        frames, height, width = _video_size(args, spec)
        _check_limits(args.model, overrides, frames, height, width, device, dtype, check_memory=not args.parallel)
    except ValueError as err:
        raise CLIError(str(err)) from None

    torch.manual_seed(0)  # the same random weights on every rank of a context-parallel run
    model = build_denoiser(args.model, device=device, dtype=dtype, **overrides)
    if args.parallel:
        from fastdit.patching.parallel.launch import enable_context_parallel

        try:
            enable_context_parallel(model, *parallel)
        except ValueError as err:
            raise CLIError(str(err)) from None
    inputs = build_inputs(spec.inputs, model, spec.latent(frames, height, width), spec.text_tokens, device, dtype)
    token_grid = VideoSize(frames, height, width, spec.size.t_compress, spec.size.s_compress).grid
    grid, tokens = (token_grid.t, token_grid.h, token_grid.w), token_grid.num_tokens
    params = sum(p.numel() for p in model.parameters())
    if is_main_process():
        print(f"{args.model}{' (quick)' if args.quick else ''}: {frames} frames {width}x{height} -> grid {grid} = "
              f"{tokens} tokens, {params / 1e6:,.0f}M parameters, {device} {str(dtype).removeprefix('torch.')}")

    # warm-up per configuration, then rounds of one forward each: load changes on a shared machine then
    # hit every method alike instead of whichever was being timed
    apply_kwargs = {"preset": args.model if args.model in PRESETS else "auto", "dense_steps": 0, "dense_layers": 0,
                    "backend": args.backend}
    preset_name = args.model if args.model in PRESETS else f"{detect_family(model).name} family's default"
    # fastdit's dense path times the dense attention the stock forward can't (the breakdown's dense side)
    baseline = [_baseline(model, inputs, apply_kwargs)] if args.parallel else [None, "dense"]
    methods = [variant for m in args.methods for variant in ((m, m + ONCE) if args.permute_once else (m,))]
    configs: list[str | None] = [*baseline, *methods]
    for method in configs:
        for _ in range(args.warmup):
            _timed(model, inputs, method, apply_kwargs)
    runs: dict[str | None, list[tuple[float, AttentionStats | None]]] = {m: [] for m in configs}
    for _ in range(args.repeats):
        for method in configs:
            runs[method].append(_timed(model, inputs, method, apply_kwargs))
    ranks = None
    if args.parallel:
        ranks = _per_rank({m: statistics.median(seconds for seconds, _ in found) for m, found in runs.items()})
        if ranks[0] is None:  # not rank 0: it reports for all
            return 0
    rows = _rows(configs, runs, ranks)
    checks = [line for line in map(parts_line, rows) if line is not None]
    if checks:
        print("Timed parts of the median forward against its measured time:\n" + "\n".join(f"  {c}" for c in checks))

    name = args.name or f"e2e_{device}"
    config = {**spec.config, **overrides}
    data = {"model": args.model, "denoiser": spec.denoiser, "source": spec.source, "quick": args.quick,
            "config": config, "frames": frames, "height": height, "width": width, "grid": grid, "tokens": tokens,
            "parameters": params, "forwards_per_step": spec.cfg, "dtype": str(dtype), "repeats": args.repeats,
            "warmup": args.warmup, "parallel": args.parallel, "rows": rows}
    body = (f"Model: {args.model} ({spec.denoiser}{', scaled down: --quick ' + str(overrides) if args.quick else ''}; "
            f"config: {spec.source}), random weights, {params / 1e6:,.0f}M parameters; {frames} frames "
            f"{width}x{height} -> token grid {grid} = {tokens} tokens; {str(dtype).removeprefix('torch.')}. "
            f"One forward at batch 1 (a denoising step of this model is {spec.cfg} such forward"
            f"{'s' * (spec.cfg > 1)}); median of {args.repeats} "
            f"rounds (every method once per round) after {args.warmup} warm-up; every layer sparse "
            f"(dense_steps=0, dense_layers=0), knobs from the {preset_name} preset."
            + (f" Context parallelism {args.parallel}: median_s is the slowest rank's median, rank_s each "
               "rank's." if args.parallel else "")
            + (" attention_s: seconds in self-attention per forward (dense: timed on fastdit's dense path); "
               "attention_share: of the dense forward; overhead_share: of the sparse attention, outside the "
               "kernel; bound: the speedup a perfect kernel at this density would give (Amdahl's law)."
               if not args.parallel else "") + "\n\n"
            + markdown_table(rows, ["method", "median_s", "min_s", "speedup"]
                             + (["rank_s", "density"] if args.parallel else
                                ["bound", "attention_s", "attention_speedup", "attention_share", "overhead_share",
                                 "density"]))
            + ("\n\nTimed parts of each method's median forward (kernel, layout build, token permutation, "
               "bookkeeping of the attention calls, the model outside attention) against its measured time:\n\n"
               + "\n".join(f"- {c}" for c in checks) if checks else ""))
    json_path, md_path = write_report(args.out, name, "End-to-end transformer step: dense vs sparse", data, body,
                                      command_line())
    print(f"wrote {json_path} and {md_path}")
    return 0
