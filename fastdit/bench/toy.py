"""Prompt adherence of a toy-world model, dense vs each sparse method: ``fastdit bench toy``.

The bundled model is trained on a procedural world (``fastdit.toy.world``), so a detector can read
its videos and say whether they show what the prompt asked for. On held-out prompts (combinations training
never showed, and seen combinations in new settings), at a fixed seed, every configuration generates the same
video and is scored on:

  colour, shape, size, motion   share of videos showing the prompt's attribute (detector vs the prompt)
  all                           share showing all four
  psnr_db, ssim                 vs the stock dense video of the same prompt, seed and size
  present, area_cv, drift       temporal consistency of the object: share of frames it is found in, variation
                                of its area over frames, mean frame-to-frame change of its colour (0..1)
  density, total_s, speedup     mean attention density, seconds per video, dense time / this time

Configurations: the stock dense attention; each method at the model's preset and (``--alternates``) at two
other settings, at the lengths ``--alternate-scales`` names (default: the training length, where the
density/quality trade-off is read; at longer videos the question is length, asked of the presets); at longer
videos (``--scales``: 2 and 4 mean 2x and 4x the frames) also with entropy scaling for the methods in
``--entropy-for``. At each longer length the findings say whether a preset or entropy scaling keeps the mean
per-attribute adherence closer to dense's training-length figure than dense does, and whether its difference
from dense at that length is more than chance (paired by prompt, an exact sign test: ``fastdit.bench.paired``).
``--quick`` runs 6 prompts at 1x and 2x with presets only, in a few minutes on a CPU.
Writes ``<name>.json`` (every video's row too), ``<name>.md`` and ``<name>.png``.

The full run takes hours on a CPU, so it is resumable: every finished prompt (all its configurations at one
length) is appended to ``<name>.partial.jsonl``, and the same command run again skips what that file already
holds (when model and its weights, seed and call match, and a prompt's configurations at that length are
the ones asked for: a changed plan re-runs only the lengths it changes). The report is written after each
length, marked partial until the last one, so a run spread over several sittings has its shorter lengths'
results early; the progress file is deleted once the report is complete.

  fastdit bench toy --quick
  fastdit bench toy --model samples/tiny-wan --scales 1 2 4
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastdit.bench.paired import paired_hits, paired_signs, sign_test
from fastdit.runs.report import markdown_table, write_report
from fastdit.runtime.files import atomic_path, write_text
from fastdit.toy.world import ATTRIBUTES as OBJECT_ATTRIBUTES
from fastdit.toy.world.score import motion_geometry, single_object_move

# two settings per method besides its preset, one sparser and one denser where the knobs allow
ALTERNATES: dict[str, list[dict[str, Any]]] = {
    "radial": [{"decay_factor": 0.2, "sink": False}, {"decay_factor": 1.0}],
    "grat": [{"mode": "surround", "radius": (1, 1, 1)}, {"mode": "surround", "radius": (2, 1, 1)}],
    "pyramid": [{"thresholds": (0.2, 0.3, 0.4, 0.6)}, {"thresholds": (0.6, 0.7, 0.8, 0.9)}],
    "vmoba": [{"threshold": 0.25}, {"threshold": 0.5}],
    "svg2": [{"top_p": 0.7}, {"top_p": 0.97}],
    "sol": [{"tau": 1.0}, {"tau": 0.0}],
}
QUICK_PROMPTS = 6
ATTRIBUTES = (*OBJECT_ATTRIBUTES, "all")
CONSISTENCY = ("present", "area_cv", "colour_drift")
GAP_ATTRIBUTES = ("colour", "shape", "motion")  # a preset should stay within 5 points of dense on each
TARGETS = {"colour": 0.9, "motion": 0.8}  # dense at the training size (issue: a model worth judging methods on)


@dataclass(frozen=True)
class Config:
    """One way to run the model: ``method`` None is the stock attention (the PSNR reference)."""

    method: str | None
    options: dict[str, Any] = field(default_factory=dict)
    entropy: bool = False

    @property
    def setting(self) -> str:
        """``preset``, ``alternate`` (other knobs) or ``entropy`` (preset with entropy scaling)."""
        return "entropy" if self.entropy else "alternate" if self.options else "preset"

    @property
    def label(self) -> str:
        name = self.method or "dense (stock)"
        knobs = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return name + (f" ({knobs})" if knobs else "") + (" +entropy" if self.entropy else "")

    def sparse(self, preset: str | None) -> dict[str, Any] | None:
        """``fastdit.apply`` arguments (``None`` for the stock attention)."""
        if self.method is None:
            return None
        return {"method": self.method, "preset": preset, "entropy_scaling": self.entropy, **self.options}


DENSE_LABEL = Config(None).label  # the reference every sparse configuration is paired against


def configs(methods: list[str], scale: int, alternates: bool, entropy_for: list[str]) -> list[Config]:
    """The stock dense first, then every method at its preset (and alternates), then the entropy variants
    (only beyond the training length, where the scaling factor differs from 1)."""
    out = [Config(None)]
    for method in methods:
        out.append(Config(method))
        out += [Config(method, options) for options in ALTERNATES.get(method, []) if alternates]
    if scale > 1:
        out += [Config(method, entropy=True) for method in entropy_for]
    return out


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--lora``, ``--preset`` and ``--entropy-for``: what the toy benchmarks share."""
    from fastdit.cli.common import add_lora_argument

    parser.add_argument("--model", default="sample", help="'sample' (the bundled model) or a toy-world model folder")
    add_lora_argument(parser)
    parser.add_argument("--preset", default="auto", help="fastdit preset for the methods (default: by model)")
    parser.add_argument("--entropy-for", nargs="*", default=["dense", "radial"], metavar="METHOD",
                        help="methods also run with entropy scaling beyond 1x (default: dense radial)")


def check_model_arguments(args: argparse.Namespace) -> None:
    """One-line errors for ``--scales`` below 1 and unknown ``--entropy-for`` methods, before the model loads."""
    from fastdit.cli import CLIError
    from fastdit.methods import available_methods

    if any(s < 1 for s in args.scales):
        raise CLIError(f"--scales must be >= 1, got {args.scales}")
    unknown = [m for m in args.entropy_for if m not in available_methods()]
    if unknown:
        raise CLIError(f"--entropy-for: unknown method(s) {', '.join(unknown)}")


def load_model(args: argparse.Namespace) -> tuple[Any, Any, str | None]:
    """``(pipe, source, preset)`` of ``--model`` with ``--lora`` on the CPU (a load failure is a one-line
    error); ``preset`` is ``None`` for ``--preset none``."""
    from fastdit.cli import CLIError
    from fastdit.models.loading import ModelError, load_pipeline, resolve_model

    try:
        source = resolve_model(args.model)
        pipe = load_pipeline(source, "cpu", lora=args.lora)
    except ModelError as err:
        raise CLIError(str(err)) from None
    return pipe, source, None if args.preset == "none" else args.preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.cli.common import whole_number
    from fastdit.methods import available_methods
    from fastdit.runs.run import MAX_SEED

    sparse = [m for m in available_methods() if m != "dense"]
    add_model_arguments(parser)
    parser.add_argument("--methods", nargs="*", default=sparse, choices=sparse, metavar="METHOD",
                        help=f"default: all ({', '.join(sparse)}); none: the stock attention only (e.g. to "
                             "score a LoRA tuned dense)")
    parser.add_argument("--prompts", type=whole_number(), help="use the first N held-out prompts, spread over the set "
                                                    f"(default: all; --quick: {QUICK_PROMPTS})")
    parser.add_argument("--scales", type=int, nargs="+", help="frame multiples of the training length "
                                                              "(default: 1 2 4; --quick: 1 2)")
    parser.add_argument("--alternates", action=argparse.BooleanOptionalAction, default=None,
                        help="also run each method at two other settings (default: on; --quick: off)")
    parser.add_argument("--alternate-scales", type=int, nargs="+", default=[1], metavar="SCALE",
                        help="lengths (of --scales) at which the alternates run (default: 1, the training length)")
    parser.add_argument("--steps", type=whole_number(), help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PROMPTS} prompts, scales 1 2, presets only")
    parser.add_argument("--name", help="report file name without extension (default: toy, or toy_quick)")


def _prompts(count: int | None) -> list[str]:
    """``count`` held-out prompts spread evenly over the set (it is ordered by combination)."""
    from fastdit.toy.world import HELD_OUT_PROMPTS

    if count is None or count >= len(HELD_OUT_PROMPTS):
        return list(HELD_OUT_PROMPTS)
    return [HELD_OUT_PROMPTS[i] for i in np.linspace(0, len(HELD_OUT_PROMPTS) - 1, count).round().astype(int)]


def _check(args: argparse.Namespace) -> None:
    from fastdit.cli.common import check_method

    check_model_arguments(args)
    for method in args.methods:
        for options in ALTERNATES.get(method, []) if args.alternates else []:
            check_method(method, options)


def _video_row(prompt: str, kind: str, scale: int, config: Config, run: Any, dense: Any) -> dict[str, Any]:
    from fastdit.runs.metrics import psnr, ssim
    from fastdit.toy.world import parse_prompt
    from fastdit.toy.world.score import score_video

    same = run is dense
    return {"prompt": prompt, "kind": kind, "scale": scale, "frames": int(run.frames.shape[0]),
            "config": config.label, "method": config.method or "dense", "setting": config.setting,
            **score_video(parse_prompt(prompt), run.frames),
            "psnr_db": None if same else psnr(dense.frames, run.frames),
            "ssim": 1.0 if same else ssim(dense.frames, run.frames),
            "density": run.stats.mean_density() if run.stats else 1.0, "total_s": run.total_s}


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def pooled_psnr(values: list[float | None]) -> float | None:
    """PSNR of all videos together (from their mean squared error): ``inf`` only when all are identical, and
    one very different video weighs as its error says, not as its dB."""
    errors = [10 ** (-v / 10) for v in values if v is not None]
    if not errors:
        return None
    mean = float(np.mean(errors))
    return float("inf") if mean == 0 else -10 * float(np.log10(mean))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scale, configuration): shares of videos per attribute and means of everything else."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["scale"], row["config"])].append(row)
    dense_time = {scale: _mean([r["total_s"] for r in group]) for (scale, label), group in groups.items()
                  if label == DENSE_LABEL}
    out = []
    for (scale, label), group in groups.items():
        first = group[0]
        summary: dict[str, Any] = {"scale": scale, "frames": first["frames"], "config": label,
                                   "method": first["method"], "setting": first["setting"], "videos": len(group)}
        summary.update({a: _mean([r[a] for r in group]) for a in ATTRIBUTES})
        summary["psnr_db"] = pooled_psnr([r["psnr_db"] if r["psnr_db"] is not None else float("inf")
                                          for r in group]) if label != DENSE_LABEL else None
        summary.update({k: _mean([r[k] for r in group]) for k in ("ssim", *CONSISTENCY, "density", "total_s")})
        summary["speedup"] = dense_time[scale] / summary["total_s"] if summary["total_s"] else None
        out.append(summary)
    return out


def motion_hits(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """``{motion: (videos showing it, videos asking for it)}`` over ``rows``, in the grammar's order (the
    first object's motion): which motions a model draws, which it ignores."""
    from fastdit.toy.world import parse_prompt
    from fastdit.toy.world.grammar import MOTIONS

    counts = {motion: [0, 0] for motion in MOTIONS}
    for row in rows:
        count = counts[parse_prompt(row["prompt"]).objects[0].motion]
        count[0] += bool(row["motion"])
        count[1] += 1
    return {motion: (hits, asked) for motion, (hits, asked) in counts.items() if asked}


def _travel(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{config: {prompt: pixels travelled the asked way}}`` over the one-object straight-motion videos."""
    along: dict[str, dict[str, float]] = {}
    for row in rows:
        move = single_object_move(row)
        if move is not None and move[0] == "straight":
            along.setdefault(row["config"], {})[row["prompt"]] = move[1] * move[2]
    return along


def _travel_finding(scale: int, rows: list[dict[str, Any]], trained: dict[str, float]) -> list[str]:
    """How far objects asked to move straight go the asked way at a longer length, each configuration paired
    by prompt against dense (sign test on farther/shorter): a model can lose a motion the detector no longer
    calls right while one configuration still keeps more of it than another."""
    along = _travel(rows)
    dense = along.get(DENSE_LABEL)
    if not dense:
        return []
    parts = [f"{DENSE_LABEL} {np.mean(list(dense.values())):.0f} px"]
    for label, values in along.items():
        if label != DENSE_LABEL:
            wins, losses = paired_signs(values, dense)
            parts.append(f"{label} {np.mean(list(values.values())):.0f} px (farther than dense on {wins}, "
                         f"shorter on {losses}, p={sign_test(wins, losses):.2f})")
    reference = f" (dense at 1x: {np.mean(list(trained.values())):.0f} px)" if trained else ""
    return [f"At {scale}x frames, single objects asked to move straight ({len(dense)} videos) go the asked way, "
            f"first to last frame found{reference}: " + ", ".join(parts) + "."]


def vae_ceiling(pipe: Any, prompts: list[str], call: dict[str, Any], seed: int) -> dict[str, float]:
    """Adherence of rendered clips of ``prompts`` (``call``'s length and square size) after a round trip through
    the model's VAE: what the detector reads when the transformer draws the prompt perfectly, so the ceiling of
    every configuration (in expectation: the clips' start positions differ from a generated video's), and
    which attribute misses are the VAE's rather than the transformer's or attention's."""
    import torch

    from fastdit.toy.training import video_frames, video_tensor
    from fastdit.toy.world import parse_prompt
    from fastdit.toy.world.render import render_scene
    from fastdit.toy.world.score import score_video

    hits = defaultdict(list)
    for index, prompt in enumerate(prompts):
        clip = render_scene(parse_prompt(prompt), np.random.default_rng([seed, index]), call["num_frames"],
                            call["height"])
        with torch.no_grad():
            video = pipe.vae.decode(pipe.vae.encode(video_tensor([clip])).latent_dist.mean).sample[0]
        for attribute, hit in score_video(clip.scene, video_frames(video)).items():
            if attribute in ATTRIBUTES:
                hits[attribute].append(hit)
    return {attribute: float(np.mean(values)) for attribute, values in hits.items()}


def findings(summary: list[dict[str, Any]], rows: list[dict[str, Any]],
             ceiling: dict[str, float] | None = None) -> list[str]:
    """The targets, as sentences with the measured numbers (and the VAE's ceiling, when given)."""
    by = {(s["scale"], s["config"]): s for s in summary}
    lines = []
    base = by.get((1, DENSE_LABEL))
    if base:
        verdicts = [f"{a} {base[a]:.0%} (target {t:.0%}: {'met' if base[a] >= t else 'not met'})"
                    for a, t in TARGETS.items()]
        lines.append("Dense at the training length: " + ", ".join(verdicts) + ".")
        if ceiling:
            lines.append("Through the VAE alone (rendered clips of the same prompts, encoded and decoded), what a "
                         "perfect transformer would score: " + ", ".join(f"{a} {ceiling[a]:.0%}" for a in ATTRIBUTES)
                         + ".")
        for kind in ("unseen", "seen"):
            picked = [r for r in rows if r["scale"] == 1 and r["config"] == DENSE_LABEL and r["kind"] == kind]
            if picked:
                lines.append(f"Dense, {kind} combinations ({len(picked)} prompts): " + ", ".join(
                    f"{a} {_mean([r[a] for r in picked]):.0%}" for a in ATTRIBUTES) + ".")
        training_rows = [r for r in rows if r["scale"] == 1]
        dense_rows = [r for r in training_rows if r["config"] == DENSE_LABEL]
        lines.append("Dense motion, videos right per asked motion: " + ", ".join(
            f"{motion} {hits}/{asked}" for motion, (hits, asked) in motion_hits(dense_rows).items()) + ".")
        geometry = motion_geometry(dense_rows)
        if "straight" in geometry:
            videos, distance, cosine = geometry["straight"]
            still = (f"; asked to stay still ({geometry['still'][0]} videos), {geometry['still'][1]:.0f} px"
                     if "still" in geometry else "")
            lines.append(f"Dense, where single objects go (first to last frame found): asked to move straight "
                         f"({videos} videos), {distance:.0f} px, at a mean cosine of {round(cosine, 2) + 0.0:.2f} "
                         f"with the asked direction (1: always that way, 0: no relation){still}.")
        for s in summary:
            if s["scale"] == 1 and s["method"] != "dense" and s["setting"] == "preset":
                gap = max(abs(s[a] - base[a]) for a in GAP_ATTRIBUTES)
                wins, losses = paired_hits(training_rows, s["config"], DENSE_LABEL, GAP_ATTRIBUTES)
                lines.append(f"{s['config']} at its preset: largest adherence gap to dense {gap * 100:.0f} points "
                             f"({'within' if gap <= 0.05 else 'beyond'} 5; hits gained/lost against dense, paired "
                             f"by prompt: +{wins}/-{losses}, sign test p={sign_test(wins, losses):.2f}), "
                             f"PSNR {s['psnr_db']:.1f} dB, density {s['density']:.2f}.")
        lines.append(_motion_finding(summary, training_rows))
        trained = _travel(dense_rows).get(DENSE_LABEL, {})
        for scale in sorted({s["scale"] for s in summary} - {1}):
            compared = [s for s in summary if s["scale"] == scale and s["setting"] != "alternate"]
            scale_rows = [r for r in rows if r["scale"] == scale]
            lines += _length_findings(scale, compared, scale_rows, _adherence(base))
            lines += _travel_finding(scale, scale_rows, trained)
    return lines


def _motion_finding(summary: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """Motion alone, each sparse configuration against dense at the training length, paired by prompt: motion is
    the attribute that needs attention across frames, so it is the first a sparse layout can break, and a gap
    pooled over attributes can hide it."""
    parts = []
    for s in summary:
        if s["scale"] == 1 and s["method"] != "dense":
            wins, losses = paired_hits(rows, s["config"], DENSE_LABEL, ("motion",))
            parts.append(f"{s['config']} +{wins}/-{losses} (p={sign_test(wins, losses):.2f})")
    return ("Motion alone, videos gained/lost against dense at the training length (paired by prompt; sign test "
            "p): " + ", ".join(parts) + ".")


def _adherence(summary_row: dict[str, Any]) -> float:
    """Mean of the per-attribute shares (colour, shape, size, motion): one number per configuration that moves
    with every attribute, unlike the share with all four right, which compounds their misses into a small one."""
    return float(np.mean([summary_row[a] for a in OBJECT_ATTRIBUTES]))


def _length_findings(scale: int, summary: list[dict[str, Any]], rows: list[dict[str, Any]],
                     trained: float) -> list[str]:
    """The question at a longer length: does each preset (and entropy scaling) keep adherence closer to
    the training-length figure ``trained`` (dense at 1x) than dense does at this length, and is its difference
    from dense here more than chance (paired by prompt, sign test)?"""
    change = {s["config"]: (_adherence(s) - trained) * 100 for s in summary}
    if DENSE_LABEL not in change:
        return []
    tests = {label: paired_hits(rows, label, DENSE_LABEL, OBJECT_ATTRIBUTES)
             for label in change if label != DENSE_LABEL}
    pvalues = {label: sign_test(*hits) for label, hits in tests.items()}
    parts = [f"{DENSE_LABEL} {change[DENSE_LABEL]:+.0f}"] + [
        f"{label} {change[label]:+.0f} (+{wins}/-{losses}, p={pvalues[label]:.2f})"
        for label, (wins, losses) in tests.items()]
    closer = [label for label in tests if abs(change[label]) < abs(change[DENSE_LABEL])]
    beyond = [label for label, p in pvalues.items() if p < 0.05]
    if beyond:
        verdict = "different from dense beyond chance (sign test, p < 0.05): " + ", ".join(
            f"{label} ({'closer to' if label in closer else 'further from'} the training-length figure)"
            for label in beyond)
    else:
        verdict = (f"no configuration differs from dense beyond chance (sign test, p < 0.05, "
                   f"{len({r['prompt'] for r in rows})} prompts); nominally closer to the training-length figure "
                   f"than dense: {', '.join(closer) or 'none'}")
    return [f"At {scale}x frames ({summary[0]['frames']}), mean per-attribute adherence vs dense at 1x "
            f"({trained:.0%}), in points (attribute hits gained/lost against dense at {scale}x, paired by prompt, "
            f"and the sign test's p): " + ", ".join(parts) + ".",
            f"At {scale}x frames, {verdict}."]


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Two panels: PSNR vs dense against density, one line per method and length (its preset and alternates,
    entropy variants hollow), which shows the quality each method buys with its sparsity; and the mean of the
    per-attribute adherence shares against video length for the presets and entropy variants (the share with
    all four right compounds four attributes' misses into a small, noisy number that would hide differences)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (quality, length) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(s["method"] for s in summary))}
    scales = sorted({s["scale"] for s in summary})
    markers = dict(zip(scales, "osD^v"))
    for method in colours:
        for scale in scales:
            for entropy in (False, True):
                chosen = sorted((s["density"], s["psnr_db"]) for s in summary
                                if s["method"] == method and s["scale"] == scale and s["psnr_db"] is not None
                                and (s["setting"] == "entropy") == entropy)
                if chosen:
                    quality.plot(*zip(*chosen), "-" if not entropy else ":", marker=markers[scale],
                                 color=colours[method], fillstyle="none" if entropy else "full",
                                 label=f"{method} {scale}x" + (" +entropy" if entropy else ""))
    quality.set(xlabel="attention density", ylabel="PSNR vs dense (dB)",
                title="quality vs sparsity (preset and alternates)")
    for label in dict.fromkeys(s["config"] for s in summary if s["setting"] != "alternate"):
        chosen = [s for s in summary if s["config"] == label]
        points = sorted((s["frames"], float(np.mean([s[a] for a in OBJECT_ATTRIBUTES]))) for s in chosen)
        length.plot(*zip(*points), ":o" if chosen[0]["setting"] == "entropy" else "-o", label=label,
                    color=colours[chosen[0]["method"]], markersize=4)
    length.set(xlabel="frames", ylabel="mean share of videos right per attribute", ylim=(0, 1.02),
               title="prompt adherence vs video length (presets)")
    for ax in (quality, length):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def load_progress(path: Path, settings: dict[str, Any]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """The rows of the (scale, prompt) units an earlier run of the same ``settings`` finished, from ``path``
    (its first line is the settings; a line cut by a kill is dropped; a unit written again replaces the earlier
    one). The file is then rewritten with what was kept, so the next unit appended starts a line of its own
    instead of joining a cut one (which would lose it at the next resume). Another run's file, or one whose
    first line can't be read, is replaced: its rows would not be comparable."""
    done: dict[tuple[int, str], list[dict[str, Any]]] = {}
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    if lines and _json_line(lines[0]) == {"settings": settings}:
        for unit in map(_json_line, lines[1:]):
            if _is_unit(unit):
                done[(unit["scale"], unit["prompt"])] = unit["rows"]
        print(f"resuming from {path}: {len(done)} prompt runs done")
    elif path.exists():
        print(f"{path} holds a run with other settings, or is unreadable: starting over")
    write_text("".join(json.dumps(record) + "\n" for record in [{"settings": settings}, *(
        {"scale": scale, "prompt": prompt, "rows": rows} for (scale, prompt), rows in done.items())]), path)
    return done


def append_unit(path: Path, scale: int, prompt: str, rows: list[dict[str, Any]]) -> None:
    """Add a finished (scale, prompt) unit to the progress file ``path`` (one line, flushed before the next
    unit starts: a kill can cut only the line being written)."""
    with path.open("a") as file:
        file.write(json.dumps({"scale": scale, "prompt": prompt, "rows": rows}) + "\n")


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _is_unit(unit: Any) -> bool:
    """A unit line as :func:`append_unit` writes it (one cut by a kill, or edited, is not)."""
    return (isinstance(unit, dict) and isinstance(unit.get("scale"), int) and isinstance(unit.get("prompt"), str)
            and isinstance(unit.get("rows"), list) and all(isinstance(r, dict) and "config" in r
                                                            for r in unit["rows"]))


def write_results(args: argparse.Namespace, name: str, prompts: list[str], call: dict[str, Any],
                  rows: list[dict[str, Any]], ceiling: dict[str, float], pending: list[int],
                  weights: dict[str, float]) -> dict[str, Any]:
    """Write ``<name>.json``, ``.md`` and ``.png`` from ``rows`` and the VAE's ``ceiling``; ``pending``
    (lengths not run yet) marks the report partial, and ``weights`` (the checksums of the weights that were
    measured) lets a reader such as ``make_sample`` tell whether the report is about the model at hand.
    Returns the findings and the three paths."""
    from fastdit.cli.common import command_line

    out = Path(args.out)
    summary = summarise(rows)
    plot(summary, out / f"{name}.png")
    notes = findings(summary, rows, ceiling)
    columns = ["frames", "config", *ATTRIBUTES, "psnr_db", "ssim", *CONSISTENCY, "density", "total_s", "speedup"]
    lora = f" with LoRA `{args.lora}`" if args.lora else ""
    partial = (f"**Partial report**: the {', '.join(f'{s}x' for s in pending)} lengths have not run yet; the same "
               f"command resumes the run (progress in `{name}.partial.jsonl`).\n\n") if pending else ""
    body = (partial + f"Model `{args.model}`{lora} (preset `{args.preset}`), {len(prompts)} held-out prompts, "
            f"seed {args.seed}, "
            f"{call.get('num_inference_steps')} steps, guidance {call.get('guidance_scale')}, "
            f"{call['width']}x{call['height']}. Adherence columns are shares of videos (detector vs prompt); "
            f"PSNR/SSIM vs the stock dense video of the same prompt and length.\n\n"
            + "".join(f"- {line}\n" for line in notes) + "\n" + markdown_table(summary, columns, floatfmt=".3g")
            + f"\n![PSNR vs density, adherence vs length]({name}.png)\n")
    data = {"model": args.model, "lora": args.lora, "preset": args.preset, "seed": args.seed, "call": call,
            "prompts": prompts, "pending_scales": pending, "vae_ceiling": ceiling, "summary": summary,
            "findings": notes, "weights": weights, "videos": rows}
    json_path, md_path = write_report(out, name, "Toy-world prompt adherence: dense vs sparse", data, body,
                                      command_line())
    return {"findings": notes, "json": json_path, "md": md_path, "png": out / f"{name}.png"}


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from fastdit.models.loading import benchmark_call
    from fastdit.runs.run import run_pipeline
    from fastdit.toy.training import pipeline_checksums, scaled_frames
    from fastdit.toy.world import HELD_OUT_TRIPLES, parse_prompt

    args.scales = args.scales or ([1, 2] if args.quick else [1, 2, 4])
    args.alternates = (not args.quick) if args.alternates is None else args.alternates
    _check(args)
    prompts = _prompts(args.prompts or (QUICK_PROMPTS if args.quick else None))
    pipe, source, preset = load_model(args)
    pipe.set_progress_bar_config(disable=True)
    base = benchmark_call(pipe, source, args.steps)
    step = getattr(pipe, "vae_scale_factor_temporal", 4)
    plan = [(scale, configs(args.methods, scale, args.alternates and scale in args.alternate_scales,
                            args.entropy_for)) for scale in args.scales]
    name = args.name or ("toy_quick" if args.quick else "toy")
    out = Path(args.out)
    progress = out / f"{name}.partial.jsonl"
    # the weights' checksum: a model retrained in place (same name or folder) never resumes the old one's rows
    settings = {"model": args.model, "lora": args.lora, "preset": args.preset, "seed": args.seed, "call": base,
                "weights": pipeline_checksums(pipe)}
    done = load_progress(progress, settings)
    ceiling = vae_ceiling(pipe, prompts, base, args.seed)
    rows: list[dict[str, Any]] = []
    total = len(prompts) * sum(len(c) for _, c in plan)
    with tqdm(total=total, desc="toy bench", dynamic_ncols=True) as bar:
        for index, (scale, scale_configs) in enumerate(plan):
            call = {**base, "num_frames": scaled_frames(base["num_frames"], scale, step)}
            labels = [c.label for c in scale_configs]
            for prompt in prompts:
                if [r["config"] for r in done.get((scale, prompt), [])] == labels:
                    rows += done[(scale, prompt)]
                    bar.update(len(scale_configs))
                    continue
                kind = "unseen" if parse_prompt(prompt).objects[0].triple in HELD_OUT_TRIPLES else "seen"
                dense, unit = None, []
                for config in scale_configs:
                    bar.set_postfix_str(f"{scale}x {config.label}"[:40])
                    result = run_pipeline(pipe, {**call, "prompt": prompt}, seed=args.seed, label=config.label,
                                          sparse=config.sparse(preset))
                    dense = dense or result
                    unit.append(_video_row(prompt, kind, scale, config, result, dense))
                    bar.update()
                rows += unit
                append_unit(progress, scale, prompt, unit)
            pending = [s for s, _ in plan[index + 1:]]
            report = write_results(args, name, prompts, base, rows, ceiling, pending, settings["weights"])
    progress.unlink()
    print("\n".join(report["findings"]))
    print(f"wrote {report['json']}, {report['md']} and {report['png']}")
    return 0
