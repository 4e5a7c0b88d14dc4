"""Benchmarks that write JSON + markdown reports (default folder: out/bench/; the reports a checkout commits are
refreshed only by naming their folder, --out bench/results).

  fastdit bench kernels    block-sparse kernels vs dense SDPA and FlexAttention
  fastdit bench fidelity   density vs attention recall and output error, per method
  fastdit bench e2e        transformer step time, dense vs sparse, at a real model's config
  fastdit bench reference  the torch reference backend vs dense SDPA (any device)
  fastdit bench toy        prompt adherence of the bundled toy model, dense vs each method
  fastdit bench toy-loss   the toy model's denoising loss on longer clips, dense vs sparse
  fastdit bench calibrate  calibrated per-layer/per-head sparsity vs uniform settings, PSNR vs density
  fastdit bench compile    torch.compile of a patched model vs unpatched: graphs, recompiles, times
  fastdit bench order-cost SVG2's k-means and per-head permutations vs dense attention
"""

from __future__ import annotations

import argparse

from fastdit.cli import CLIError, add_module_parsers

SUITES = {
    "kernels": ("fastdit.bench.kernels", "block-sparse kernel speed vs dense SDPA and FlexAttention"),
    "fidelity": ("fastdit.bench.fidelity", "attention-mass recall and output error vs density, per method"),
    "e2e": ("fastdit.bench.e2e", "denoising-step time dense vs sparse at a real model config (random weights)"),
    "reference": ("fastdit.bench.reference", "torch reference backend vs dense SDPA (CPU speed target)"),
    "toy": ("fastdit.bench.toy",
            "prompt adherence of the toy-world model, dense vs each method (detector-scored)"),
    "toy-loss": ("fastdit.bench.toy_loss",
                 "denoising loss of the toy-world model on longer clips, dense vs sparse (held-out clips)"),
    "calibrate": ("fastdit.bench.calibrate", "calibrated per-layer/per-head sparsity vs uniform settings: PSNR vs "
                                             "density, calibration cost"),
    "compile": ("fastdit.bench.compile",
                "torch.compile (fullgraph, whole and regional) of a patched model vs unpatched"),
    "order-cost": ("fastdit.bench.order_cost", "SVG2's k-means and per-head permutations vs dense attention"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for module, p in add_module_parsers(sub, SUITES):
        # not bench/results: run from a checkout, the default would overwrite the reports the README cites
        p.add_argument("--out", default="out/bench",
                       help="folder for the JSON and markdown reports (the checkout's own: bench/results)")
        module.add_arguments(p)
        p.set_defaults(_suite=module.run)


def run(args: argparse.Namespace) -> int:
    """Run a suite once its report folder is known to be writable: a benchmark can take minutes, and a bad
    ``--out`` found only when writing the report would throw its results away."""
    from fastdit.runs.media import check_writable
    from fastdit.runs.report import check_report_name

    try:
        check_writable(args.out, directory=True)
    except ValueError as err:
        raise CLIError(f"--out: {err}") from None
    if getattr(args, "name", None) is not None:
        try:
            check_report_name(args.name)
        except ValueError as err:
            raise CLIError(f"--name: {err}") from None
    return int(args._suite(args) or 0)
