"""What orders computed from q and k cost: SVG2's k-means and permutations next to the dense attention they save.

SVG2 clusters each head's queries and keys at every sparse call and permutes q, k, v into cluster order and
the output back. At ``--tokens`` video tokens (``--heads`` heads of ``--head-dim``, fp32, raster order, random
q, k, v) this times, interleaved and repeated (median kept):

  dense_ms     dense ``scaled_dot_product_attention``
  init_ms      a layer's first call: k-means from a draw, ``kmeans_iters`` (published 50) iterations, the
               centroid mass estimate, top-p and the block layout (``build_layout``)
  step_ms      every later call: the same, warm-started, ``kmeans_iters_step`` (published 2) iterations
  permute_ms   q, k, v into the per-head orders and the output back (what the engine adds around the kernel)

and each as a share of ``dense_ms``. Options: the SVG2 preset for Wan2.1 720p (300 / 1000 clusters, top-p 0.9,
64-token blocks) unless ``--q-clusters`` / ``--k-clusters`` say otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import make_order
from fastdit.methods import get_method, make_layout, parse_options
from fastdit.runs.report import markdown_table, write_report

DEFAULTS = {"tokens": (8192, 32768), "heads": 2, "head_dim": 128, "q_clusters": 300, "k_clusters": 1000,
            "block_size": 64, "repeats": 3, "threads": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULTS["tokens"]),
                        help="video tokens per call, one row each (default: 8192 32768)")
    parser.add_argument("--heads", type=int, default=DEFAULTS["heads"], help="attention heads (default: 2)")
    parser.add_argument("--head-dim", type=int, default=DEFAULTS["head_dim"], help="head dimension (default: 128)")
    parser.add_argument("--q-clusters", type=int, default=DEFAULTS["q_clusters"], help="default: 300")
    parser.add_argument("--k-clusters", type=int, default=DEFAULTS["k_clusters"], help="default: 1000")
    parser.add_argument("--block-size", type=int, default=DEFAULTS["block_size"], help="default: 64")
    parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"], help="timed rounds, median kept")
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="torch CPU threads (0: torch's)")
    parser.add_argument("--name", default="order_cost", help="report file name without extension")


def measure(tokens: int, heads: int, head_dim: int, options: dict[str, Any], block_size: int,
            repeats: int) -> dict[str, Any]:
    """One row of the report (see the module docstring) for ``tokens`` video tokens in one frame."""
    grid = TokenGrid(1, 1, tokens)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, head_dim, generator=g) for _ in range(3))
    spec, order = get_method("svg2"), make_order("raster", grid, block_size)
    opts = parse_options(spec, options)
    warm: dict = {}  # a layer's state after its first call: what every later call starts from
    heads_order = make_layout(spec, order, opts, q=q, k=k, state=warm).head_order
    times: dict[str, list[float]] = {"dense": [], "init": [], "step": [], "permute": []}
    for _ in range(repeats):  # interleaved, so a busy machine slows every part alike
        times["dense"].append(_timed(lambda: F.scaled_dot_product_attention(q, k, v)))
        times["init"].append(_timed(lambda: make_layout(spec, order, opts, q=q, k=k, state={})))
        times["step"].append(_timed(lambda: make_layout(spec, order, opts, q=q, k=k, state=dict(warm))))
        times["permute"].append(_timed(lambda: (heads_order.restore(heads_order.queries(q)), heads_order.keys(k),
                                                heads_order.keys(v))))
    ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    row = {"tokens": tokens, "dense_ms": ms["dense"], "init_ms": ms["init"], "step_ms": ms["step"],
           "permute_ms": ms["permute"]}
    for name in ("init", "step", "permute"):
        row[f"{name}_percent"] = 100 * ms[name] / ms["dense"]
    row["step_plus_permute_percent"] = row["step_percent"] + row["permute_percent"]
    return row


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        options = {"q_clusters": args.q_clusters, "k_clusters": args.k_clusters}
        rows = []
        for tokens in args.tokens:
            rows.append(measure(tokens, args.heads, args.head_dim, options, args.block_size, args.repeats))
            print(", ".join(f"{key} {value:.4g}" for key, value in rows[-1].items()), flush=True)
    finally:
        torch.set_num_threads(threads)
    command = "fastdit bench order-cost " + " ".join(
        f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
        for key, value in vars(args).items() if key in DEFAULTS and value != DEFAULTS[key]
        and not (key == "tokens" and tuple(value) == DEFAULTS[key]))
    body = (f"{args.heads} heads × head dim {args.head_dim}, fp32, SVG2 with {args.q_clusters} / {args.k_clusters} "
            f"clusters, top-p 0.9, {args.block_size}-token blocks; median of {args.repeats} interleaved rounds.\n\n"
            f"{markdown_table(rows, floatfmt='.4g')}\n"
            "*init*: a layer's first call (k-means 50 iterations); *step*: every later call (warm start, 2 "
            "iterations); both include the mass estimate, top-p and the block layout. *permute*: q, k, v into the "
            "per-head orders and the output back. Percentages are of the dense attention time.\n")
    write_report(args.out, args.name, "Per-head order cost (SVG2 k-means and permutation) vs dense attention",
                 {"config": {k: v for k, v in vars(args).items() if k in DEFAULTS}, "results": rows}, body,
                 command.strip())
    return 0
