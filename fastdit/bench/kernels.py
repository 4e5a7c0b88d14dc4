"""Kernel speed: fastdit's Triton block-sparse attention vs dense SDPA and FlexAttention, on one CUDA GPU.

For each model shape (Wan2.1-1.3B 480p, Wan2.1-14B 720p, HunyuanVideo 720p 129 frames; B = 1, D = 128) and
each layout (radial, grat, pyramid, sol, tuned to densities 0.1-0.5 on the shape's token grid; sol at its own
64-token blocks, its time including the pooled tail merged by log-sum-exp) it times:

  cudnn, flash   dense SDPA on the real (unpadded) sequence in model order, per shape
  flex           compiled FlexAttention on the same layout (pyramid: its kept blocks at full resolution,
                 since FlexAttention cannot pool), block mask built outside the timing
  triton         fastdit.attention(..., backend="triton") (kernel v3); for pyramid this includes pooling K/V
  v1             the v1 kernel (fastdit.bench.triton_v1) on the same inputs
  tma            (Hopper) v3 with Q/K/V through TMA descriptors, the opt-in FASTDIT_TRITON_TMA=1 path
  ws             (Hopper) v3 with its level-0 loop warp-specialized (TMA producer warp, two consumer
                 warpgroups), the opt-in FASTDIT_TRITON_WS=1 path; level-0 layouts only (not pyramid)

Times are triton.testing.do_bench medians in ms. Derived columns:

  TFLOP/s    4 · B · H · D · density · N² on N real tokens / time (triton, and flex for the same work)
  ratio      triton / (density × cudnn); the target is <= 1.25 at density 0.1-0.5
  vs flex    flex / triton; the target is >= 1.5 (radial and grat: pyramid rows do less work than flex)
  rel err    ||out − torch reference|| / ||reference|| of each path (first layout of each method and shape);
             ``failed`` lists the paths beyond 2e-2 (the check carried to the method's later rows), and a row
             whose Triton path failed counts toward no target
  config     the autotuner's choice per Triton path (BLOCK_MxBLOCK_N warps stages)

``--quick``: the Wan2.1-1.3B shape, densities 0.1 0.3 0.5 (a target whose layout repeats one already timed,
as radial's 0.1 and 0.3 at its density floor of about 0.31, is replaced by the next density not asked for),
shorter do_bench runs.

Density counts real tokens: the share of the real query-key pairs the layout attends (padding left out on
both sides; ``density_padded`` is the layout's own share of the padded block grid). ``padding`` is the work
the Triton kernel spends on padding, query-key pairs computed over real pairs attended minus 1 (tiles of
padding only are skipped), work dense SDPA does not do.

``--compile-only`` needs no GPU: it compiles the forward for sm_90 and sm_80 with Triton's real compiler, for
level 0 without and with padding, for pyramid levels and for 64-token blocks with padding (sol's, and svg2's
per-head layouts), at every autotune config (and the warp-specialized level-0 loop's on sm_90), and tabulates
registers, spills, shared memory, CTAs per SM, K/V buffers in the pipelined loops, wgmma, ptxas' warnings that it
serialized wgmma, from the SASS the hot loops' instructions, MUFU per HGMMA, barriers, wgmma wait depth and MUFU
ops issued while a wgmma group is in flight per tile, setmaxnreg,
and the consumer partitions' query rows (default report name: kernels_compile); it exits 1 when a build is not
green or the padded build's full-tile loop is not the unpadded one's.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from fastdit.cli import CLIError
from fastdit.kernels import attention
from fastdit.layout.block import BlockLayout
from fastdit.layout.grid import TokenGrid
from fastdit.methods import available_methods, build_layout
from fastdit.runs.report import markdown_table, write_report


@dataclass(frozen=True)
class Shape:
    """One self-attention call of a model: ``heads`` × the tokens of ``grid``."""

    label: str
    heads: int
    grid: TokenGrid
    head_dim: int = 128


SHAPES = {
    "wan-1.3b-480p": Shape("Wan2.1-1.3B 480p 81f", 12, TokenGrid(21, 30, 52)),      # 32760 tokens
    "wan-14b-720p": Shape("Wan2.1-14B 720p 81f", 40, TokenGrid(21, 45, 80)),        # 75600 tokens
    "hunyuan-720p": Shape("HunyuanVideo 720p 129f", 24, TokenGrid(33, 45, 80)),     # 118800 tokens
}
METHODS = ("radial", "grat", "pyramid", "sol")
DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5)
PUBLISHED_BANDS = (0.4, 0.5, 0.6, 0.8)  # PSA's cumulative-mass bands for levels 0..3 (Wan2.1-14B)
TARGET_RATIO, TARGET_VS_FLEX = 1.25, 1.5
REL_TOL = 2e-2  # relative error of a bf16 kernel against the torch reference (bf16 operands: 1e-3 to 1e-2)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES),
                        help="model shapes to time (default: all)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="layouts to time (default: all)")
    parser.add_argument("--densities", nargs="+", type=float, default=list(DENSITIES),
                        help="target layout densities (default: 0.1 0.2 0.3 0.4 0.5)")
    parser.add_argument("--dtype", choices=list(_DTYPES), default="bf16", help="input dtype (default: bf16)")
    parser.add_argument("--block-size", type=int, default=128, help="kernel block in tokens (default: 128)")
    parser.add_argument("--warmup", type=int, default=100, help="do_bench warm-up, in ms (default: 100)")
    parser.add_argument("--rep", type=int, default=500, help="do_bench timed repetitions, in ms (default: 500)")
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile takes minutes)")
    parser.add_argument("--name", default=None, help="report file name without extension (default: kernels, or "
                        "kernels_compile with --compile-only)")
    parser.add_argument("--compile-only", action="store_true",
                        help="no GPU needed: compile the kernel for sm_90 and sm_80 and tabulate its resources")
    parser.add_argument("--baseline", default=None, metavar="JSON",
                        help="with --compile-only: an earlier compile report's JSON; the report lists the builds "
                        "whose registers, spills, shared memory, SASS per tile or barriers changed since")
    parser.add_argument("--no-v1", action="store_true", help="skip timing the v1 kernel")
    parser.add_argument("--quick", action="store_true",
                        help="Wan2.1-1.3B shape only, densities 0.1 0.3 0.5, shorter timing: a few minutes")


def run(args: argparse.Namespace) -> int:
    if args.compile_only:
        return compile_only(args)
    args.name = args.name or "kernels"
    if not torch.cuda.is_available():
        raise CLIError("the kernel benchmark times CUDA kernels, and this machine has no CUDA GPU "
                       "(torch.cuda.is_available() is False)")
    try:
        import triton.testing
    except ImportError:
        raise CLIError("the kernel benchmark needs triton (pip install triton)") from None
    if args.quick:
        args.shapes, args.densities, args.warmup, args.rep = ["wan-1.3b-480p"], [0.1, 0.3, 0.5], 25, 100
    if "pyramid" in args.methods and "pyramid" not in available_methods():
        print("pyramid layouts skipped: this install has no 'pyramid' method", file=sys.stderr)
        args.methods = [m for m in args.methods if m != "pyramid"]
    _allow_recompiles()
    dtype = _DTYPES[args.dtype]
    timer = functools.partial(triton.testing.do_bench, warmup=args.warmup, rep=args.rep, return_mode="median")
    dense, rows = [], []
    for key in args.shapes:
        shape = SHAPES[key]
        q, k, v = (torch.randn(1, shape.heads, shape.grid.num_tokens, shape.head_dim, dtype=dtype, device="cuda")
                   for _ in range(3))
        dense.append(dense_row(shape, q, k, v, timer))
        print(_line(dense[-1]), flush=True)
        for method in args.methods:
            checked: dict[str, Any] = {}  # the method's first layout is checked; its later rows carry that result
            for target, layout, setting in _distinct_layouts(method, shape.grid, args, q, k):
                qt, kt, vt = (layout.to_layout_order(x) for x in (q, k, v))  # each method's own order
                row = {"shape": shape.label, "method": method, "setting": setting, "target": target,
                       **sparse_timings(layout, qt, kt, vt, dense[-1], timer, flex=not args.no_flex,
                                        check=not checked, v1=not args.no_v1)}
                checked = checked or {key: row[key] for key in row if key.endswith("rel_err")}
                row["failed"] = failed_paths({**row, **checked})
                rows.append(row)
                print(_line(row), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    data = {"dtype": args.dtype, "block_size": args.block_size, "dense": dense, "rows": rows,
            "targets": {"ratio_max": TARGET_RATIO, "vs_flex_min": TARGET_VS_FLEX, "densities": [0.1, 0.5]}}
    command = "fastdit bench kernels" + (" --quick" if args.quick else "")
    json_path, md_path = write_report(args.out, args.name, "Block-sparse attention kernels", data, markdown(data),
                                      command)
    print(f"wrote {json_path} and {md_path}")
    return 0


# ---------------------------------------------------------------- layouts at a target density
def _distinct_layouts(method: str, grid: TokenGrid, args: argparse.Namespace, q: torch.Tensor, k: torch.Tensor):
    """``(target, layout, setting)`` for each target density, each setting once (a method's density floor can
    make two targets one layout). Under ``--quick`` a repeated setting is replaced by the next density of
    ``DENSITIES`` not asked for, so every method gets as many distinct layouts as there are targets."""
    targets = list(args.densities)
    spare = [d for d in DENSITIES if d not in targets] if args.quick else []
    seen = set()
    while targets:
        target = targets.pop(0)
        layout, setting = layout_at_density(method, grid, args.block_size, target, q=q, k=k)
        if setting in seen:
            if spare:
                targets.append(spare.pop(0))
            continue
        seen.add(setting)
        yield target, layout, setting


def layout_at_density(method: str, grid: TokenGrid, block_size: int, target: float, *,
                      q: torch.Tensor | None = None, k: torch.Tensor | None = None) -> tuple[BlockLayout, str]:
    """The layout of ``method`` on ``grid`` whose density (on real tokens) is nearest ``target``, and the
    setting that gave it.

    radial: ``decay_factor`` (bisected on a log scale) with the attention sink, then, if that can't get within
    0.03 of ``target`` (its window never drops below one block), without the sink; grat: ``surround`` radii
    (temporal x spatial grid); pyramid: PSA's published bands scaled by one factor (bisected), on ``q, k``;
    sol: ``tau`` (bisected) on ``q, k``, at its published 64-token blocks whatever ``block_size``.
    """
    if method == "radial":
        best = None
        for sink in (True, False):
            found = _bisect(lambda x: _radial(grid, block_size, x, sink),
                            target, -3.0, 3.0, log=True, describe=lambda x: f"decay_factor={x:.3g} sink={sink}")
            if best is None or abs(_density(found[0]) - target) < abs(_density(best[0]) - target):
                best = found
            if abs(_density(best[0]) - target) <= 0.03:
                break
        return best
    if method == "grat":
        _, rt, rs = min(_grat_settings(grid, block_size), key=lambda c: abs(c[0] - target))
        return (build_layout("grat", grid, block_size=block_size, mode="surround", radius=(rt, rs, rs)),
                f"surround radius=({rt}, {rs}, {rs})")
    if method == "pyramid":
        if q is None or k is None:
            raise ValueError("pyramid layouts are chosen from q and k: pass q= and k=")

        def build(c: float) -> BlockLayout:
            bands = tuple(min(1.0, c * t) for t in PUBLISHED_BANDS)
            return build_layout("pyramid", grid, block_size=block_size, q=q, k=k, thresholds=bands)

        return _bisect(build, target, 0.01, 1.25, log=False,
                       describe=lambda c: "bands " + "/".join(f"{min(1.0, c * t):.3g}" for t in PUBLISHED_BANDS))
    if method == "sol":
        if q is None or k is None:
            raise ValueError("sol layouts are chosen from q and k: pass q= and k=")
        return _bisect(lambda x: build_layout("sol", grid, q=q, k=k, tau=-x), target, -6.0, 2.0, log=False,
                       describe=lambda x: f"tau={-x:.3g}")  # density falls as tau grows
    raise ValueError(f"unknown method {method!r}; the kernel benchmark times {', '.join(METHODS)}")


@functools.lru_cache(maxsize=512)
def _radial(grid: TokenGrid, block_size: int, decay_factor: float, sink: bool) -> BlockLayout:
    """A radial layout, kept: the bisections of different targets start from the same decay factors."""
    return build_layout("radial", grid, block_size=block_size, decay_factor=decay_factor, sink=sink)


@functools.lru_cache(maxsize=8)
def _grat_settings(grid: TokenGrid, block_size: int) -> list[tuple[float, int, int]]:
    """``(density on real tokens, temporal radius, spatial radius)`` of grat surround settings on ``grid`` (radii
    0, 1, 2, 3, then doubling temporally; every spatial radius up to the frame's size in tiles)."""
    nt, nh, nw = build_layout("grat", grid, block_size=block_size).order.tiles
    temporal = sorted({r for r in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if r < nt})
    return [(_density(build_layout("grat", grid, block_size=block_size, mode="surround", radius=(rt, rs, rs))),
             rt, rs) for rt in temporal for rs in range(max(nh, nw))]


_DENSITY: "weakref.WeakKeyDictionary[BlockLayout, float]" = weakref.WeakKeyDictionary()


def _density(layout: BlockLayout) -> float:
    """Density on real tokens, once per layout: the bisections ask up to three times per step, 0.12 s each at
    Wan 480p (with ``_radial``, --quick's radial layouts take 19 s instead of 51 s on this project's 2-core
    CPU)."""
    from fastdit.layout.padding import real_density

    if layout not in _DENSITY:
        _DENSITY[layout] = real_density(layout)
    return _DENSITY[layout]


def _bisect(build: Callable[[float], BlockLayout], target: float, lo: float, hi: float, *, log: bool,
            describe: Callable[[float], str], steps: int = 14) -> tuple[BlockLayout, str]:
    """Bisect a knob that density grows with; the nearest layout seen wins (densities move in steps)."""
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        x = 10 ** mid if log else mid
        layout = build(x)
        if best is None or abs(_density(layout) - target) < abs(_density(best[0]) - target):
            best = layout, describe(x)
        if _density(layout) < target:
            lo = mid
        else:
            hi = mid
    return best


# ---------------------------------------------------------------- timings
def dense_row(shape: Shape, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              timer: Callable[[Callable[[], Any]], float]) -> dict[str, Any]:
    """Dense SDPA through cuDNN and through flash attention (``None`` where this torch/GPU lacks one)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H, S, D = q.shape
    row: dict[str, Any] = {"shape": shape.label, "heads": H, "tokens": S, "head_dim": D}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        def fn(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)

        try:
            row[f"{name}_ms"] = timer(fn)
        except RuntimeError as err:  # backend not built into this torch, or not for this GPU
            print(f"{name} SDPA unavailable: {str(err).splitlines()[0]}", file=sys.stderr)
            row[f"{name}_ms"] = None
    flops = 4 * B * H * S * S * D
    row["cudnn_tflops"] = _tflops(flops, row["cudnn_ms"])
    return row


def failed_paths(row: dict[str, Any]) -> list[str]:
    """The timed paths whose output differs from the torch reference by more than ``REL_TOL`` (or was never
    finite): ``triton``, ``tma``, ``ws``, ``v1``, ``flex``. A row whose Triton path failed counts toward no
    target."""
    paths = {"rel_err": "triton", "tma_rel_err": "tma", "ws_rel_err": "ws", "v1_rel_err": "v1",
             "flex_rel_err": "flex"}
    return [name for key, name in paths.items()
            if row.get(key) is not None and not (row[key] <= REL_TOL)]  # NaN fails too


def _config_label(kernel) -> str | None:
    """The autotuner's choice for the last call: ``BLOCK_MxBLOCK_N w<warps> s<stages>``."""
    config = getattr(kernel, "best_config", None)
    if config is None:
        return None
    return f"{config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']} w{config.num_warps} s{config.num_stages}"


def sparse_timings(layout: BlockLayout, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dense: dict[str, Any],
                   timer: Callable[[Callable[[], Any]], float], *, flex: bool = True,
                   check: bool = True, v1: bool = True) -> dict[str, Any]:
    """Triton (v2 and v1) and FlexAttention on ``layout`` over tile-ordered ``q, k, v``, with the derived columns.

    ``check`` compares each path's output with the torch reference first (``rel_err``, ``tma_rel_err``,
    ``ws_rel_err``, ``v1_rel_err``, ``flex_rel_err``; seconds per layout at these shapes, so the suite checks the
    first layout of each method and shape). ``config`` is the autotuner's choice for each Triton path.
    """
    from fastdit.kernels.triton import forward as triton_attention
    from fastdit.kernels.triton.forward import choose_kv_tile
    from fastdit.layout.padding import kernel_padding, real_density

    B, H, S, D = q.shape
    on_gpu = layout.to(q.device)  # index tensors where the kernels read them, moved once, outside the timing
    density = real_density(layout)
    kv_tile = choose_kv_tile(layout, torch.cuda.get_device_capability(q.device)[0] >= 9, head_dim=D)
    row: dict[str, Any] = {"density": density, "density_padded": layout.density(), "levels": layout.max_level,
                           "heads_in_layout": layout.num_heads, "kv_tile": kv_tile, "blocks": layout.nnz,
                           "padding": kernel_padding(layout, 128, kv_tile)}
    ref = attention(q, k, v, on_gpu, backend="torch") if check else None
    valid = slice(None) if on_gpu.kv_valid is None else on_gpu.kv_valid

    def error(out: torch.Tensor) -> float | None:
        if ref is None:
            return None
        return float((out[:, :, valid].float() - ref[:, :, valid].float()).norm() / ref[:, :, valid].float().norm())

    # each path runs once outside the timing (compiles, autotunes) and is checked against the reference
    row["rel_err"] = error(attention(q, k, v, on_gpu, backend="triton"))
    scale = D ** -0.5
    row["triton_ms"] = timer(lambda: attention(q, k, v, on_gpu, backend="triton"))
    row["config"] = _config_label(triton_attention._block_sparse_fwd)
    major = torch.cuda.get_device_capability(q.device)[0]
    # TMA on Hopper and newer; the warp-specialized loop on Hopper's partitioner, for level-0 layouts only (with
    # pooled levels the kernel keeps the pipelined loop, which the tma row already times)
    opt_in = [("tma", "USE_TMA")] * (major >= 9) + [("ws", "USE_WS")] * (major == 9 and layout.max_level == 0)
    for name, switch in opt_in:
        before = getattr(triton_attention, switch)
        setattr(triton_attention, switch, True)
        try:
            row[f"{name}_rel_err"] = error(attention(q, k, v, on_gpu, backend="triton"))
            row[f"{name}_ms"] = timer(lambda: attention(q, k, v, on_gpu, backend="triton"))
            row[f"{name}_config"] = _config_label(triton_attention._block_sparse_fwd)
        finally:
            setattr(triton_attention, switch, before)
    if v1:
        from fastdit.bench.triton_v1 import triton_block_attention as v1_attention

        row["v1_rel_err"] = error(v1_attention(q, k, v, on_gpu, scale))  # also its autotuning, outside the timing
        row["v1_ms"] = timer(lambda: v1_attention(q, k, v, on_gpu, scale))
    if flex:
        from fastdit.kernels.flex import block_mask_from_layout, compiled_flex_attention

        block_mask = block_mask_from_layout(layout, q.device)
        fn = compiled_flex_attention()
        out = fn(q, k, v, block_mask=block_mask)  # compiles outside the timing
        # pyramid's Flex reads its kept blocks at full resolution: a different function, not checked
        row["flex_rel_err"] = error(out) if layout.max_level == 0 else None
        del out
        row["flex_ms"] = timer(lambda: fn(q, k, v, block_mask=block_mask))
        row["flex_partial_blocks"] = int(block_mask.kv_num_blocks.sum())
        row["flex_full_blocks"] = int(block_mask.full_kv_num_blocks.sum())
    ref = None  # frees the reference output (GPU memory)
    # real work: the real query-key pairs the layout attends (dense SDPA's count is 4·B·H·N²·D on N real tokens)
    n_real = dense["tokens"]
    row["triton_tflops"] = _tflops(4 * B * H * D * density * n_real * n_real, row["triton_ms"])
    row["flex_tflops"] = _tflops(4 * B * H * D * density * n_real * n_real, row["flex_ms"]) if flex else None
    cudnn = dense.get("cudnn_ms")
    row["ratio"] = None if cudnn is None else row["triton_ms"] / (density * cudnn)
    row["speedup_vs_cudnn"] = None if cudnn is None else cudnn / row["triton_ms"]
    row["vs_flex"] = row["flex_ms"] / row["triton_ms"] if flex else None
    row["vs_v1"] = row["v1_ms"] / row["triton_ms"] if v1 else None
    return row


def _tflops(flops: float, ms: float | None) -> float | None:
    return None if ms is None else flops / (ms * 1e-3) / 1e12


def _allow_recompiles() -> None:
    """Each (shape, shared or per-head layout) compiles FlexAttention anew; keep them all compiled."""
    import torch._dynamo.config as dynamo

    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, name, max(getattr(dynamo, name), 64))


def _line(row: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


# ---------------------------------------------------------------- report
def markdown(data: dict[str, Any]) -> str:
    """Dense baselines, then one table per shape, then how many rows meet each target."""
    parts = [f"dtype {data['dtype']}, {data['block_size']}-token blocks, batch 1, head dim 128. "
             "Times: triton.testing.do_bench median, ms.\n", "## Dense SDPA\n",
             markdown_table(data["dense"], ["shape", "heads", "tokens", "cudnn_ms", "flash_ms", "cudnn_tflops"])]
    columns = ["method", "setting", "density", "density_padded", "padding", "kv_tile", "blocks", "config", "triton_ms",
               "tma_ms", "ws_ms", "ws_config", "v1_ms", "flex_ms", "flex_partial_blocks", "flex_full_blocks",
               "triton_tflops", "flex_tflops", "ratio", "vs_flex", "vs_v1", "speedup_vs_cudnn", "rel_err",
               "tma_rel_err", "ws_rel_err", "v1_rel_err", "flex_rel_err", "failed"]
    for shape in dict.fromkeys(r["shape"] for r in data["rows"]):
        parts += [f"## {shape}\n", markdown_table([r for r in data["rows"] if r["shape"] == shape], columns)]
    sound = [r for r in data["rows"] if "triton" not in r.get("failed", [])]  # a wrong kernel's time counts for nothing
    in_band = [r for r in sound if 0.1 - 0.02 <= r["density"] <= 0.5 + 0.02 and r["ratio"] is not None]
    level0 = [r for r in sound if r["levels"] == 0 and r.get("vs_flex") is not None and "flex" not in r["failed"]]
    met_ratio = sum(r["ratio"] <= TARGET_RATIO for r in in_band)
    met_flex = sum(r["vs_flex"] >= TARGET_VS_FLEX for r in level0)
    parts.append(
        "## Targets\n\n"
        f"- time <= {TARGET_RATIO} x density x cuDNN dense, density 0.1-0.5: {met_ratio} of {len(in_band)} rows\n"
        f"- >= {TARGET_VS_FLEX}x faster than FlexAttention on the same layout (radial, grat): "
        f"{met_flex} of {len(level0)} rows\n"
        f"- rows failed (output off the torch reference by more than {REL_TOL:g} relative, a path's check "
        f"carried to its method's later rows): {len(data['rows']) - len(sound)} of {len(data['rows'])}\n\n"
        "ratio = triton / (density x cudnn), density on real tokens; vs_flex = flex / triton; vs_v1 = v1 / "
        "triton; padding = query-key pairs the kernel computes over the real pairs attended, minus 1 (dense SDPA "
        "runs the unpadded sequence); config = the autotuner's choice (BLOCK_MxBLOCK_N warps stages); blocks = "
        "the layout's kept blocks, flex_partial_blocks / flex_full_blocks = Flex's masked and unmasked blocks; "
        "flex_tflops counts the same real work as triton_tflops; pyramid rows include pooling K/V, and their flex "
        "column reads the kept blocks at full resolution (its output not checked); pyramid has no ws row (the "
        "warp-specialized loop is level 0's).\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- compile only (no GPU)
_COMPILE_COLUMNS = ["arch", "variant", "config", "kv_tile", "registers", "spill_bytes", "shared_bytes", "threads",
                    "ctas_per_sm", "kv_buffers", "pooled_buffers", "mma", "serialized", "tma_ops", "device_descriptors",
                    "loop_instructions", "mufu_per_mma", "barriers_per_tile", "wait_depth", "mufu_in_flight",
                    "maxnreg", "partition_rows", "ok", "failures"]


def compile_only(args: argparse.Namespace) -> int:
    """Compile every variant at every autotune config for sm_90 and sm_80 and write the table."""
    import os

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise CLIError("--compile-only runs Triton's real compiler: unset TRITON_INTERPRET")
    try:
        from fastdit.bench.triton_compile import (
            ARCHS,
            SHARED_CAP,
            VARIANTS,
            WS_VARIANTS,
            against,
            compile_kernel,
            configs_for,
            default_config,
            same_code,
        )
    except ImportError as err:
        raise CLIError(f"--compile-only needs triton with its NVIDIA backend ({err})") from None
    rows = []
    for arch in ARCHS:
        for variant in VARIANTS:
            runs = [(config, False, False) for config in configs_for(arch, variant)]
            if arch >= 90:  # the opt-in TMA path (FASTDIT_TRITON_TMA=1) at the variant's first config
                runs.append((default_config(arch, variant), True, False))
            if arch >= 90 and variant in WS_VARIANTS:  # the opt-in warp-specialized loop (FASTDIT_TRITON_WS=1)
                runs += [(config, True, True) for config in configs_for(arch, variant, ws=True)]
            for config, tma, ws in runs:
                row = compile_kernel(arch, variant, config, tma=tma, ws=ws).row()
                rows.append(row)
                print(_line({k: row[k] for k in _COMPILE_COLUMNS}), flush=True)
    data = {"head_dim": 128, "dtype": "bf16", "block": 128, "shared_cap": SHARED_CAP, "rows": rows,
            "same_code": same_code(rows)}
    for row in data["same_code"]:
        print(_line(row), flush=True)
    command = "fastdit bench kernels --compile-only"
    if args.baseline:
        earlier = json.loads(Path(args.baseline).read_text())
        data["baseline"] = {"path": args.baseline, "environment": earlier.get("environment"),
                            "changed": against(rows, earlier["rows"])}
        command += f" --baseline {args.baseline}"
    name = args.name or "kernels_compile"
    json_path, md_path = write_report(args.out, name, "Block-sparse attention kernel: compile-level resources",
                                      data, compile_markdown(data), command)
    print(f"wrote {json_path} and {md_path}")
    failed = [r for r in rows if not r["ok"]] + [r for r in data["same_code"] if r["ok"] is False]
    for row in failed:
        print(f"FAILED: {_line(row)}", file=sys.stderr)
    return 1 if failed else 0


def compile_markdown(data: dict[str, Any]) -> str:
    from fastdit.bench.triton_compile import ARCHS, COMPARED, SAME_CODE_TOLERANCE, VARIANTS

    green = sum(r["ok"] for r in data["rows"])
    same = [r for r in data["same_code"] if r["ok"] is not None]
    parts = [f"The v3 forward compiled by Triton for each target without a GPU (PTX, then ptxas, then cuobjdump's "
             f"SASS), head dim {data['head_dim']}, {data['dtype']}, {data['block']}-token blocks. Variants: "
             + "; ".join(f"`{name}` ({', '.join(f'{k}={v}' for k, v in c.items())})" for name, c in VARIANTS.items())
             + ". Each variant at every autotune config the kernel tries for it on that target; on sm_90 "
             "once more with Q/K/V through TMA descriptors (`tma`: opt-in, FASTDIT_TRITON_TMA=1, until timed on a "
             "GPU; host-side descriptors, kernel parameters: device_descriptors counts those the kernel makes "
             "itself, Q's in the warp-specialized loop), and level 0 at every config of the warp-specialized "
             "loop (`ws`: opt-in, FASTDIT_TRITON_WS=1; w = warps per consumer warpgroup). kv_buffers = K/V "
             "buffers the software pipeliner keeps in the "
             "level-0 loop (pooled_buffers: in the pooled levels' loop, whose keys are gathered); shared memory "
             "against the cap of each target "
             f"({', '.join(f'sm_{a}: {c} B' for a, c in data['shared_cap'].items())}); threads per block and "
             "blocks per multiprocessor (ctas_per_sm: shared memory, registers, threads); serialized = codes of ptxas' "
             "warnings that it serialized the wgmma ops (C7514: other instructions read an in-flight accumulator; "
             "C7515). From the SASS, the hot loops (backward branches around HGMMA/HMMA) in code "
             "order: level 0's full tiles, its partial tiles, the pooled levels (ws: one loop per consumer "
             "warpgroup); loop_instructions = instructions per warp per iteration (one kv tile) of each; "
             "mufu_per_mma = special-function ops (exp2) per matrix instruction in the first loop; "
             "barriers_per_tile = CTA-wide barriers per iteration of the first loop; wait_depth = the deepest "
             "wgmma wait in the loops (0: each GEMM waited on before the next step, no overlap of matrix work and "
             "softmax); mufu_in_flight = MUFU ops (exp2) per iteration of the first loop issued while a wgmma "
             "group of the same warp is in flight (issued, not yet waited on: softmax overlapping matrix work); "
             "maxnreg = setmaxnreg register counts (producer/consumers); partition_rows = query rows of "
             "the tile each consumer partition computes. Green = no spills, within the shared-memory cap, >= 3 "
             "K/V buffers at level 0 (2 in the warp-specialized loop), wgmma on sm_90 (mma.sync on sm_80), no "
             "wgmma serialized by ptxas, no TMA descriptor made on the device but the warp-specialized loop's Q, "
             "the expected hot loops (full tiles unmasked, partial tiles in a loop of their own), a partitioned "
             "loop where `ws` asks for one, its consumers on disjoint rows covering the tile: "
             f"**{green} of {len(data['rows'])} green**.\n"]
    for arch, label in ARCHS.items():
        rows = [r for r in data["rows"] if r["arch"] == arch]
        parts += [f"## {label}\n", markdown_table(rows, [c for c in _COMPILE_COLUMNS if c != "arch"])]
    parts += ["## Full tiles: the same code with padding elsewhere\n",
              f"SASS instructions per iteration of the full-tile loop, `level0-padded` over `level0` at the same "
              f"config; within {SAME_CODE_TOLERANCE:.0%} at the config each target starts from (128-token blocks): "
              f"**{sum(r['ok'] for r in same)} of {len(same)}**. Other configs are listed, not checked (register "
              "allocation differs between the two builds), nor are ws rows (all tiles in one loop with the key "
              "bias).\n",
              markdown_table(data["same_code"], ["arch", "config", "level0", "level0_padded", "ratio", "ok"])]
    if "baseline" in data:
        base = data["baseline"]
        when = (base.get("environment") or {}).get("date", "date unknown")
        changed = [{**{k: r[k] for k in ("arch", "variant", "config")},
                    **{k: f"{r[k][0]} → {r[k][1]}" for k in COMPARED}} for r in base["changed"]]
        parts += ["## Since the baseline\n",
                  f"Builds compiled in both this report and `{base['path']}` ({when}) whose "
                  f"{', '.join(COMPARED)} changed (before → after; bar_sync = `bar.sync` barriers in the PTX): "
                  f"**{len(changed)}**.\n",
                  markdown_table(changed, ["arch", "variant", "config", *COMPARED]) if changed else "None.\n"]
    return "\n".join(parts)
