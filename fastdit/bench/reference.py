"""CPU (or any device) speed of the torch reference backend against dense SDPA.

Target (DESIGN §7): at S >= 8k the reference path is at least 0.7 / density times faster than dense SDPA,
i.e. each kept block costs at most ~1.4x what it costs inside the dense kernel. Two suites: ``blocks``, static
block layouts on random q, k, v; ``vmoba``, VMoBA's per-query selection (published chunks, threshold 0.25, one
case per partition) on structured q, k, v over a Wan-like ``frames x 30 x 52`` grid (``density`` is then the
share of token pairs kept). Dense and sparse runs alternate; the medians are reported. ``--clock cpu`` times
the process's CPU time instead of the wall clock: on a shared machine at one thread (``OMP_NUM_THREADS=1``),
time spent waiting for a core then does not count (with more threads it would add theirs up, so it refuses).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fastdit.runs.report import markdown_table, write_report

CASES = [
    # (label, grid (t, h, w), method, options)
    ("radial", (16, 24, 32), "radial", {}),
    ("radial-no-sink", (16, 24, 32), "radial", {"sink": False}),
    ("grat-surround", (16, 24, 32), "grat", {"mode": "surround", "radius": (1, 1, 1)}),
    ("grat-crisscross", (16, 24, 32), "grat", {"mode": "crisscross"}),
]
VMOBA_LAYERS = (("vmoba-1d", 0), ("vmoba-2d", 1), ("vmoba-3d", 2))  # layer i uses partition i
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.cli.common import whole_number

    parser.add_argument("--heads", type=whole_number(), default=4)
    parser.add_argument("--head-dim", type=whole_number(), default=64)
    parser.add_argument("--repeats", type=whole_number(), default=3,
                        help="timed runs per case (the median is reported)")
    parser.add_argument("--quick", action="store_true", help="a small grid (for tests; not a target measurement)")
    parser.add_argument("--suite", choices=("blocks", "vmoba"), default="blocks",
                        help="static block layouts, or VMoBA's per-query selection")
    parser.add_argument("--frames", type=whole_number(), default=12,
                        help="vmoba suite: latent frames of the frames x 30 x 52 grid (12: 18720 tokens, 21: 32760)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall clock, or the process's CPU time (one thread only: waits for a shared core "
                             "then do not count)")
    parser.add_argument("--name", default=None,
                        help="report file name (without extension; default reference_cpu, or reference_vmoba)")


def _median_time(fn, repeats: int, clock=time.perf_counter) -> float:
    return _alternating([fn], repeats, clock)[0]


def _alternating(fns, repeats: int, clock=time.perf_counter) -> list[float]:
    """Median seconds of each of ``fns`` on ``clock``, run in turn ``repeats`` times after one warm-up each
    (alternating, so that load on a shared machine falls on all of them alike)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = clock()
            fn()
            spent.append(clock() - start)
    return [statistics.median(t) for t in times]


def _cases(args: argparse.Namespace):
    """``(label, grid, method, options, q, k, v)`` per case, q, k, v ``[1, H, S, D]`` in the grid's order."""
    import fastdit
    from fastdit.bench.synthetic import video_qkv

    dtype = DTYPES[args.dtype]
    if args.suite == "blocks":
        for label, shape, method, options in CASES:
            grid = fastdit.TokenGrid(*((4, 8, 16) if args.quick else shape))
            q, k, v = (torch.randn(1, args.heads, grid.num_tokens, args.head_dim, dtype=dtype) for _ in range(3))
            yield label, grid, method, options, q, k, v
        return
    grid = fastdit.TokenGrid(*((4, 8, 16) if args.quick else (args.frames, 30, 52)))
    q, k, v, _ = video_qkv(grid, heads=args.heads, head_dim=args.head_dim)
    for label, layer in VMOBA_LAYERS:
        yield label, grid, "vmoba", {"layer": layer, "threshold": 0.25}, *(x.to(dtype) for x in (q, k, v))


def run(args: argparse.Namespace) -> int:
    import fastdit
    from fastdit.cli import CLIError

    if args.clock == "cpu" and torch.get_num_threads() != 1:
        raise CLIError(f"--clock cpu times one thread (it adds the threads' CPU time up); torch runs "
                       f"{torch.get_num_threads()}: set OMP_NUM_THREADS=1")
    clock = CLOCKS[args.clock]
    rows = []
    for label, grid, method, options, q, k, v in _cases(args):
        block = 32 if args.quick else 128
        data = {"q": q, "k": k} if method == "vmoba" else {}
        layout = fastdit.build_layout(method, grid, block_size=block, **data, **options)
        q, k, v = (layout.to_layout_order(x) for x in (q, k, v))
        build_s = _median_time(lambda: fastdit.methods.clear_layout_cache() or
                               fastdit.build_layout(method, grid, block_size=block, **data, **options), args.repeats,
                               clock)
        dense_s, sparse_s = _alternating([lambda: F.scaled_dot_product_attention(q, k, v),
                                          lambda: fastdit.attention(q, k, v, layout, backend="torch")], args.repeats,
                                         clock)
        density = layout.density()
        speedup = dense_s / sparse_s
        rows.append({"case": label, "grid": f"{grid.t}x{grid.h}x{grid.w}", "tokens": layout.seq_len_q,
                     "density": density, "dense_ms": dense_s * 1e3, "sparse_ms": sparse_s * 1e3,
                     "layout_ms": build_s * 1e3, "speedup": speedup, "target": 0.7 / density,
                     "meets_target": speedup >= 0.7 / density})
        print(f"{label:<16} S={layout.seq_len_q} density {density:.3f}: dense {dense_s * 1e3:.1f} ms, "
              f"sparse {sparse_s * 1e3:.1f} ms, speedup {speedup:.2f}x (target {0.7 / density:.2f}x)", flush=True)
    command = (f"fastdit bench reference --suite {args.suite} --heads {args.heads} --head-dim {args.head_dim} "
               f"--dtype {args.dtype} --repeats {args.repeats}" + (f" --frames {args.frames}" if args.suite == "vmoba"
                                                                   else "") + (" --quick" if args.quick else "")
               + (" --clock cpu" if args.clock == "cpu" else ""))
    body = (f"B=1, H={args.heads}, D={args.head_dim}, {args.dtype}, block 128 (quick: 32); dense and sparse runs "
            f"alternate, medians of the {'CPU time' if args.clock == 'cpu' else 'wall clock'}. `layout_ms` is the "
            "cold build time of the layout (it is cached afterwards). Target: speedup >= 0.7 / density.\n\n"
            + markdown_table(rows))
    name = args.name or ("reference_cpu" if args.suite == "blocks" else "reference_vmoba")
    json_path, md_path = write_report(args.out, name, "Torch reference backend vs dense SDPA",
                                      {"rows": rows, "heads": args.heads, "head_dim": args.head_dim,
                                       "dtype": args.dtype, "suite": args.suite}, body, command)
    print(f"wrote {json_path} and {md_path}")
    return 0
