"""CPU (or any device) speed of the torch reference backend against dense SDPA.

Target (DESIGN §7): at S >= 8k the reference path is at least 0.7 / density times faster than dense SDPA,
i.e. each kept block costs at most ~1.4x what it costs inside the dense kernel.
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.cli.common import whole_number

    parser.add_argument("--heads", type=whole_number(), default=4)
    parser.add_argument("--head-dim", type=whole_number(), default=64)
    parser.add_argument("--repeats", type=whole_number(), default=3,
                        help="timed runs per case (the median is reported)")
    parser.add_argument("--quick", action="store_true", help="a small grid (for tests; not a target measurement)")
    parser.add_argument("--name", default="reference_cpu", help="report file name (without extension)")


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> int:
    import fastdit

    rows = []
    for label, shape, method, options in CASES:
        if args.quick:
            shape = (4, 8, 16)
        grid = fastdit.TokenGrid(*shape)
        layout = fastdit.build_layout(method, grid, block_size=32 if args.quick else 128, **options)
        q, k, v = (torch.randn(1, args.heads, layout.seq_len_q, args.head_dim) for _ in range(3))
        dense_s = _median_time(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)
        build_s = _median_time(lambda: fastdit.methods.clear_layout_cache() or
                               fastdit.build_layout(method, grid, block_size=layout.block_q, **options), args.repeats)
        sparse_s = _median_time(lambda: fastdit.attention(q, k, v, layout, backend="torch"), args.repeats)
        density = layout.density()
        speedup = dense_s / sparse_s
        rows.append({"case": label, "grid": "x".join(map(str, shape)), "tokens": layout.seq_len_q,
                     "density": density, "dense_ms": dense_s * 1e3, "sparse_ms": sparse_s * 1e3,
                     "layout_ms": build_s * 1e3, "speedup": speedup, "target": 0.7 / density,
                     "meets_target": speedup >= 0.7 / density})
        print(f"{label:<16} S={layout.seq_len_q} density {density:.3f}: dense {dense_s * 1e3:.1f} ms, "
              f"sparse {sparse_s * 1e3:.1f} ms, speedup {speedup:.2f}x (target {0.7 / density:.2f}x)")
    command = "fastdit bench reference" + (" --quick" if args.quick else "")
    body = (f"B=1, H={args.heads}, D={args.head_dim}, fp32, block 128 (quick: 32). `layout_ms` is the cold "
            "build time of the layout (it is cached afterwards). Target: speedup >= 0.7 / density.\n\n"
            + markdown_table(rows))
    json_path, md_path = write_report(args.out, args.name, "Torch reference backend vs dense SDPA",
                                      {"rows": rows, "heads": args.heads, "head_dim": args.head_dim}, body, command)
    print(f"wrote {json_path} and {md_path}")
    return 0
