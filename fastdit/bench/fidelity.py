"""Fidelity: how much of dense attention each sparse method keeps, and how far its output moves, vs density.

Runs every method at several settings on structured synthetic q/k/v (smooth per-head spatio-temporal fields,
projected, with 3D RoPE; see fastdit/bench/synthetic.py) and compares each against exact dense attention:

  density   share of the dense attention work the layout computes (a pyramid block at level l counts 2**-l)
  recall    share of the dense softmax mass that falls on key blocks the layout reads, at any level
  recall_0  the same, counting only blocks read at full resolution (differs from recall for pyramid only)
  rel_l2    ||out - dense|| / ||dense|| over all heads and tokens

For a pooled pyramid block, recall counts the block's whole mass: the kernel reads all its keys, averaged, and
gives them their full weight through the ln(m) logit bias; what pooling loses shows in rel_l2, and recall_0
bounds the mass read exactly. Dense attention is computed in query chunks (never an S×S tensor); the report
also shows how the dense mass decays with temporal and spatial distance, and what the dynamic methods'
layouts cost next to the dense attention they replace. Writes <name>.json, <name>.md and <name>.png.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fastdit.bench.attention_mass import DenseReference, dense_reference
from fastdit.bench.synthetic import video_qkv
from fastdit.kernels import attention
from fastdit.layout.block import BlockLayout
from fastdit.layout.grid import TokenGrid
from fastdit.methods import build_layout, get_method
from fastdit.runs.report import markdown_table, write_report
from fastdit.runtime.files import atomic_path

DYNAMIC_METHODS = ("pyramid", "vmoba", "svg2", "sol")
# SVG2's published clusters hold about this many tokens each (Wan2.1 720p: 75 600 tokens, 300 query / 1000 key
# centroids); the benchmark scales the cluster counts to its grid so its clusters are as large
SVG2_TOKENS_PER_CLUSTER = (252, 76)


@dataclass(frozen=True)
class Setting:
    """One method configuration to evaluate: ``label`` names the curve, ``setting`` the point on it."""

    label: str
    method: str
    setting: str
    options: dict[str, Any] = field(default_factory=dict)
    tile: tuple[int, int, int] | None = None
    block_size: int | None = None  # the method's published block where it differs from the run's (sol: 64)


def group_shapes(block_size: int) -> list[tuple[int, int, int]]:
    """GRAT groups of one or two kernel blocks spanning 1, 2 or 4 frames with a spatial aspect of at most 2.

    Criss-cross has no knob but its group shape, so its settings are group shapes (the published 4×8×8 among
    them at 128-token blocks).
    """
    groups = []
    for volume in (block_size, 2 * block_size):
        for tt in (1, 2, 4):
            plane = volume // tt
            for th in (1 << i for i in range(plane.bit_length())):
                tw = plane // th
                if tt * th * tw == volume and max(th, tw) <= 2 * min(th, tw):
                    groups.append((tt, th, tw))
    return groups


def svg2_clusters(tokens: int) -> dict[str, int]:
    """SVG2's query and key cluster counts for ``tokens`` video tokens, clusters as large as published."""
    q_size, k_size = SVG2_TOKENS_PER_CLUSTER
    return {"q_clusters": max(1, round(tokens / q_size)), "k_clusters": max(1, round(tokens / k_size))}


def settings(block_size: int, tokens: int = 0) -> list[Setting]:
    """Every method at four or more settings, spanning as much of its density range as its knobs reach.

    Radial's window never drops below one block, so on a short grid its lowest point drops the frame-0 sink.
    SVG2 (``tokens``: the grid's, to scale its clusters; 0 leaves it out) sweeps its top-p.
    """
    out = [Setting("radial", "radial", "decay 0.2, no sink", {"decay_factor": 0.2, "sink": False})]
    out += [Setting("radial", "radial", f"decay {d:g}", {"decay_factor": d}) for d in (0.2, 1, 2, 4, 8)]
    out += [Setting("grat surround", "grat", "radius {}x{}x{}".format(*r), {"mode": "surround", "radius": r})
            for r in ((0, 1, 1), (1, 1, 1), (1, 2, 2), (2, 2, 2), (3, 3, 3))]
    for mode in ("crisscross", "lines"):
        out += [Setting(f"grat {mode}", "grat", "group {}x{}x{}".format(*t), {"mode": mode}, tile=t)
                for t in group_shapes(block_size)]
    out += [Setting("pyramid", "pyramid", "bands " + "/".join(f"{x:g}" for x in taus), {"thresholds": taus})
            for taus in ((0.2, 0.25, 0.3, 0.4), (0.4, 0.5, 0.6, 0.8), (0.6, 0.7, 0.8, 0.9),
                         (0.8, 0.85, 0.9, 0.95), (0.9, 0.95, 0.97, 0.99), (0.95, 0.97, 0.99, 1.0))]
    for kind in ("1d", "2d", "3d"):
        out += [Setting(f"vmoba {kind}", "vmoba", f"threshold {t:g}", {"threshold": t, "partitions": (kind,)})
                for t in (0.1, 0.25, 0.5, 0.75, 0.9)]
    if tokens:
        clusters = svg2_clusters(tokens)
        out += [Setting("svg2", "svg2", "top-p {:g}, {q_clusters}/{k_clusters} clusters".format(p, **clusters),
                        {"top_p": p, **clusters}) for p in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)]
    out += [Setting("sol", "sol", f"tau {t:g}", {"tau": t}, block_size=get_method("sol").block_size)
            for t in (0, 0.5, 1, 1.5, 2, 3)]
    return out


# ---------------------------------------------------------------------------------------------- evaluation
def setting_layout(s: Setting, q: torch.Tensor, k: torch.Tensor, grid: TokenGrid, block_size: int) -> BlockLayout:
    """The layout of one setting (dynamic methods choose it from ``q, k``, model order)."""
    dynamic = get_method(s.method).dynamic
    return build_layout(s.method, grid, block_size=s.block_size or block_size, tile=s.tile,
                        **({"q": q, "k": k} if dynamic else {}), **s.options)


def evaluate(s: Setting, layout: BlockLayout, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             ref: DenseReference) -> dict[str, Any]:
    """Density, recall and output error of one setting's layout against the dense reference."""
    qt, kt, vt = layout.to_layout_order(q), layout.to_layout_order(k, keys=True), layout.to_layout_order(v, keys=True)
    start = time.perf_counter()
    out, lse = attention(qt, kt, vt, layout, backend="torch", return_lse=True)
    attention_seconds = time.perf_counter() - start
    out = layout.from_layout_order(out)
    if layout.selection is not None:  # kept token pairs, finer than any block: a query keeps exp(lse - dense lse)
        kept = torch.exp(layout.from_layout_order(lse.unsqueeze(-1)).squeeze(-1) - ref.lse)
        recall = recall_0 = float(kept.double().mean())
    else:
        levels = layout.to_level_map()
        mass = ref.block_mass[layout.head_order or layout.order]
        recall = float((mass * (levels >= 0)).sum() / mass.sum())
        recall_0 = float((mass * (levels == 0)).sum() / mass.sum())
    return {"method": s.label, "setting": s.setting, "order": layout.order.describe(),
            "density": layout.density(), "recall": recall, "recall_0": recall_0,
            "rel_l2": float((out - ref.out).norm() / ref.out.norm()),
            "attention_s": attention_seconds}


def layout_cost(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: TokenGrid, block_size: int,
                repeats: int) -> list[dict[str, Any]]:
    """Build time of each dynamic method's default layout next to dense SDPA at the same shape (best of runs)."""
    dense = min(_timed(lambda: F.scaled_dot_product_attention(q, k, v)) for _ in range(repeats))
    rows = []
    for method, layer in (("pyramid", 0), ("vmoba", 0), ("vmoba", 1), ("vmoba", 2), ("svg2", 0), ("sol", 0)):
        options = svg2_clusters(grid.video_tokens) if method == "svg2" else {}
        block = get_method(method).block_size or block_size  # sol at its published 64-token blocks
        best = min(_timed(lambda: build_layout(method, grid, block_size=block, q=q, k=k, layer=layer, **options))
                   for _ in range(5 * repeats))
        name = f"vmoba {get_method('vmoba').options().partition(layer)}" if method == "vmoba" else method
        rows.append({"method": name, "tokens": grid.num_tokens, "layout_ms": 1e3 * best, "dense_sdpa_ms": 1e3 * dense,
                     "percent_of_dense": 100 * best / dense})
    return rows


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- comparison
def _interpolate(x: float, xs: list[float], ys: list[float]) -> float | None:
    """Piecewise-linear ``y(x)`` on the sorted points, ``None`` outside their range."""
    points = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


BASELINES = ("radial", "pyramid")  # each dynamic method is compared with every baseline but itself


def compare_with_radial(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each dynamic setting next to static radial (and dynamic pyramid) interpolated at the same density.

    Recall is interpolated linearly, error log-linearly; a baseline whose density range does not contain the
    setting's density gives no value (``None``), and settings outside both ranges are left out.
    """
    out = []
    for r in rows:
        if not r["method"].startswith(DYNAMIC_METHODS):
            continue
        row = {"method": r["method"], "setting": r["setting"], "density": r["density"], "recall": r["recall"]}
        for base in BASELINES:
            points = [x for x in rows if x["method"] == base != r["method"]]
            dens = [x["density"] for x in points]
            row[f"{base} recall"] = _interpolate(r["density"], dens, [x["recall"] for x in points])
        row["rel_l2"] = r["rel_l2"]
        for base in BASELINES:
            points = [x for x in rows if x["method"] == base != r["method"]]
            log_err = _interpolate(r["density"], [x["density"] for x in points],
                                   [math.log(x["rel_l2"]) for x in points])
            row[f"{base} rel_l2"] = None if log_err is None else math.exp(log_err)
        if any(row[f"{base} recall"] is not None for base in BASELINES):
            out.append(row)
    return out


def _verdict(comparison: list[dict[str, Any]]) -> str:
    """One line per dynamic method and baseline: at how many equal-density points it wins on recall and error."""
    lines = []
    for method in dict.fromkeys(c["method"] for c in comparison):
        for base in BASELINES:
            mine = [c for c in comparison if c["method"] == method and c[f"{base} recall"] is not None]
            if not mine:
                continue
            recall_wins = sum(c["recall"] > c[f"{base} recall"] for c in mine)
            error_wins = sum(c["rel_l2"] < c[f"{base} rel_l2"] for c in mine)
            lines.append(f"- **{method}** vs {base}: higher recall at {recall_wins} of {len(mine)} equal-density "
                         f"points, lower output error at {error_wins} of {len(mine)}.")
    if not lines:
        return "No dynamic setting fell inside radial's density range, so there is no equal-density comparison.\n"
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- report
def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_rec) = plt.subplots(1, 2, figsize=(13, 5))
    labels = list(dict.fromkeys(r["method"] for r in rows))
    families = list(dict.fromkeys(label.split()[0] for label in labels))
    for label in labels:  # a method's variants share its colour; static dashed, dynamic solid
        pts = sorted((r["density"], r["rel_l2"], r["recall"]) for r in rows if r["method"] == label)
        d, e, rc = zip(*pts)
        style = "-o" if label.startswith(DYNAMIC_METHODS) else "--s"
        color = plt.get_cmap("tab10")(families.index(label.split()[0]) % 10)
        ax_err.plot(d, e, style, color=color, label=label, markersize=4)
        ax_rec.plot(d, rc, style, color=color, label=label, markersize=4)
    ax_err.set(xlabel="density (share of dense attention work)", ylabel="relative L2 error vs dense (log)",
               yscale="log", title="output error")
    ax_rec.set(xlabel="density (share of dense attention work)", ylabel="recall (dense softmax mass kept)",
               title="attention-mass recall")
    for ax in (ax_err, ax_rec):
        ax.grid(True, alpha=0.3)
    ax_rec.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _profile_table(profile: dict[str, Any], unit: str, heads: list[str]) -> str:
    rows = []
    for i, b in enumerate(profile["bins"]):
        row = {f"distance ({unit})": b, "pair share": profile["pair_share"][i], "mass share": profile["mass_share"][i],
               "mass / uniform": profile["relative_to_uniform"][i]}
        row.update({f"{h} (h{j})": profile["relative_to_uniform_per_head"][j][i] for j, h in enumerate(heads)})
        rows.append(row)
    return markdown_table(rows)


def markdown(data: dict[str, Any], png: str) -> str:
    cfg = data["config"]
    heads = [p["name"] for p in data["heads"]]
    worst = max(r["percent_of_dense"] for r in data["layout_cost"])
    table = markdown_table(data["results"], ["method", "setting", "order", "density", "recall", "recall_0", "rel_l2"])
    return (
        f"Grid {cfg['grid']} (t×h×w, {cfg['tokens']} tokens), {cfg['heads']} heads × head dim {cfg['head_dim']}, "
        f"{cfg['block_size']}-token blocks, each method on its published token order, fp32, seed {cfg['seed']}. "
        "Inputs: "
        "structured synthetic q/k/v (`fastdit/bench/synthetic.py`): per head a smooth random spatio-temporal "
        "field (head profiles " + ", ".join(f"h{j} {h}" for j, h in enumerate(heads)) + "), projected to "
        "q/k/v, with Wan's 3D RoPE. Dense reference computed exactly in query chunks "
        f"({data['dense_seconds']:.1f} s).\n\n"
        "## Dense attention decays with distance\n\n"
        "*mass share*: share of all attention mass on keys at that distance (mean over heads); *pair share*: the "
        "share a uniform attention would put there; *mass / uniform*: their ratio (1 = no preference), overall "
        "and per head.\n\n"
        f"Temporal distance |t_q − t_k| (frames):\n\n{_profile_table(data['temporal_profile'], 'frames', heads)}\n"
        "Spatial distance max(|y_q − y_k|, |x_q − x_k|) (tokens, keys of every frame):\n\n"
        f"{_profile_table(data['spatial_profile'], 'tokens', heads)}\n"
        "## Density, recall, error\n\n"
        "*density*: share of dense attention work (a pyramid block at level l counts 2^-l); *recall*: share of the "
        "dense softmax mass on key blocks the layout reads at any level (a pooled pyramid block counts fully: its "
        "keys are read averaged and weighted by the ln(m) bias; pooling's loss shows in the error); *recall_0*: "
        "mass on blocks read at full resolution; for VMoBA (a per-query selection) density and recall count the "
        "token pairs it keeps, not the blocks around them; *rel_l2*: ‖out − dense‖ / ‖dense‖.\n\n"
        f"{table}\n![density vs error and recall]({png})\n\n"
        "## Dynamic methods vs static radial and dynamic pyramid at equal density\n\n"
        "Static radial (the published rule) and pyramid interpolated at each dynamic setting's density: recall "
        "linearly, error log-linearly; blank where that density is outside the baseline's range (or the baseline "
        "is the method itself), and settings outside every range left out. Sol's recall counts its exact blocks "
        "only: the others enter its softmax as pooled terms, whose effect shows in the error.\n\n"
        f"{markdown_table(data['vs_radial'])}\n{_verdict(data['vs_radial'])}\n"
        "## Layout cost of the dynamic methods\n\n"
        "Time to build the per-head layout from q and k (PSA: sampled scores and bands; VMoBA: per-query chunk "
        "gates and selection; SVG2: k-means of queries and keys, cluster pairs, the per-head orders; then CSR) "
        "against dense "
        f"`scaled_dot_product_attention` at the same shape on this machine (best of runs):\n\n"
        f"{markdown_table(data['layout_cost'], floatfmt='.4g')}\n"
        f"Largest: {worst:.2f}% of the dense attention time (target: below 2% at S ≥ 8k).\n"
    )


DEFAULTS = {"grid": (16, 24, 40), "heads": 4, "head_dim": 64, "block_size": 128, "seed": 0, "repeats": 3,
            "threads": 0}
QUICK = {"grid": (4, 8, 12), "heads": 2, "head_dim": 32, "block_size": 16, "repeats": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", type=int, nargs=3, default=DEFAULTS["grid"], metavar=("T", "H", "W"),
                        help="latent grid, frames × height × width in tokens (default: 16 24 40)")
    parser.add_argument("--heads", type=int, default=DEFAULTS["heads"], help="attention heads (default: 4)")
    parser.add_argument("--head-dim", type=int, default=DEFAULTS["head_dim"], help="head dimension (default: 64)")
    parser.add_argument("--block-size", type=int, default=DEFAULTS["block_size"],
                        help="kernel block in tokens (default: 128)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the synthetic inputs")
    parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"],
                        help="timing repeats for the layout cost, best one kept (default: 3)")
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                        help="torch CPU threads (default 0: torch's own choice); 1 is steadier on a busy machine")
    parser.add_argument("--name", default="fidelity", help="report file name without extension")
    parser.add_argument("--methods", nargs="+", choices=("radial", "grat", "pyramid", "vmoba"), default=None,
                        help="only these methods' settings (default: all; radial is the equal-density baseline)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny grid (4 8 12), 2 heads, head dim 32, 16-token blocks: seconds, for tests")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this report (options left at their defaults omitted)."""
    parts = ["fastdit bench fidelity"] + (["--quick"] if args.quick else [])
    for key, default in DEFAULTS.items():
        value = tuple(getattr(args, key)) if key == "grid" else getattr(args, key)
        if value != (QUICK.get(key, default) if args.quick else default):
            shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            parts.append(f"--{key.replace('_', '-')} {shown}")
    if args.methods:
        parts.append("--methods " + " ".join(args.methods))
    if args.name != "fidelity":  # a report under another name says so, so the command writes the same file
        parts.append(f"--name {args.name}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:  # the suite may run inside a larger process (tests): leave its thread count as it was
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    grid = TokenGrid(*args.grid)
    q, k, v, profiles = video_qkv(grid, args.heads, args.head_dim, seed=args.seed)
    todo = [s for s in settings(args.block_size, grid.video_tokens) if not args.methods or s.method in args.methods]
    layouts = [setting_layout(s, q, k, grid, args.block_size) for s in todo]
    ref = dense_reference(q, k, v, grid, list(dict.fromkeys(layout.head_order or layout.order for layout in layouts)))
    rows = []
    for s, layout in zip(todo, layouts):
        rows.append(evaluate(s, layout, q, k, v, ref))
        r = rows[-1]
        print(f"{r['method']:>16} {r['setting']:<28} density {r['density']:.3f}  recall {r['recall']:.3f}  "
              f"rel_l2 {r['rel_l2']:.4f}", flush=True)
    data = {
        "config": {"grid": "x".join(map(str, args.grid)), "tokens": grid.num_tokens, "heads": args.heads,
                   "head_dim": args.head_dim, "block_size": args.block_size, "seed": args.seed,
                   "orders": len(ref.block_mass)},
        "heads": [vars(p) for p in profiles],
        "dense_seconds": ref.seconds,
        "temporal_profile": ref.temporal,
        "spatial_profile": ref.spatial,
        "results": rows,
        "vs_radial": compare_with_radial(rows),
        "layout_cost": layout_cost(q, k, v, grid, args.block_size, args.repeats),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{args.name}.png"
    plot(rows, png, f"fastdit fidelity: grid {data['config']['grid']}, {args.heads} heads, "
                    f"{args.block_size}-token blocks")
    json_path, md_path = write_report(out, args.name, "Sparse attention fidelity vs dense", data,
                                      markdown(data, png.name), _command(args))
    print(f"wrote {json_path}, {md_path}, {png}")
    return 0
