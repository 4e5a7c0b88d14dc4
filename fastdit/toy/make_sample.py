"""Install a trained toy-world model as the bundled sample: ``python -m fastdit.toy.make_sample RUN [FOLDER]``.

``RUN`` is a finished ``python -m fastdit.toy.train_sample RUN`` folder. Its exported pipeline (``RUN/model``)
is copied into ``FOLDER`` (default: the bundled sample, ``fastdit/models/tiny-wan``) with the run's recipe and
loss log under ``training/`` (so the folder says how it was made), and a README written from that log and, when
present, from the prompt-adherence report of ``fastdit bench toy --out bench/results`` (``bench/results/toy.json``)
when that report measured these very weights: rerun this after the benchmark to refresh its numbers. The folder
is replaced through a temporary sibling, so a failure leaves the old one whole.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastdit.models.loading import sample_dir

__all__ = ["install_sample", "training_facts"]

_REPORT = Path("bench/results/toy.json")

README = """\
# tiny-wan: fastdit's bundled toy-world model

A text-to-video `WanPipeline` **trained by fastdit on a procedural world** of coloured shapes moving over
simple backgrounds (`fastdit.toy.world`), small enough to train and run on a CPU. It exists so that
`make demo`, `fastdit generate`, `fastdit compare` and the web demo show real (toy) videos offline, and so
that sparse attention is judged on a model whose attention learned spatio-temporal structure.

- **What it draws**: one or two objects over a background, every attribute from a closed set:
  - shapes: {shapes}; colours: {colours}; sizes: small, medium (no word), big;
  - motions: {motions};
  - backgrounds: {backgrounds}.
  Prompts follow the world's grammar, e.g. "a red ball bouncing in a white room", "a big blue square moving
  up on grass". Words outside it are unknown tokens to the model: it draws nothing else.
- **Size**: {frames} frames of {side}x{side} by default, a {grid} latent token grid ({tokens} tokens).
- **Architecture**: diffusers' `WanTransformer3DModel` ({transformer}), patch 1x1x1; diffusers'
  `AutoencoderKLWan` (4x temporal, 8x spatial, Wan2.2-style 2x2 pixel patchify and residual blocks); a frozen
  random 2-layer `UMT5EncoderModel` over a tokenizer of the world's words; `FlowMatchEulerDiscreteScheduler`
  (shift {shift}).
- **Training** (`python -m fastdit.toy.train_sample RUN --seed {seed}`, then
  `python -m fastdit.toy.make_sample RUN`): the VAE {vae_steps} steps on object crops (reconstruction
  PSNR {vae_psnr} dB on full clips), then the transformer {steps} steps of flow matching (batch {batch},
  {precision} on the CPU) on {cache_clips} cached clips with the latents of objects weighted
  {transformer_weight:g}x{motion_terms}, with an EMA of the weights, and {refine_steps} more at a lower rate
  with objects weighted {object_weight:g}x; {hours:.1f} hours of compute on a 2-core CPU. The recipe and the
  loss log (with the word-gap probe: how much the loss rises when a prompt's motion or colour word is swapped) are in
  `training/`.
{adherence}- Loads with `WanPipeline.from_pretrained("samples/tiny-wan")`; generation defaults are in `fastdit.json`,
  sparse-attention defaults in the `fastdit/tiny-wan` preset (`fastdit info`).
"""

_ADHERENCE = """\
- **Prompt adherence** (`fastdit bench toy`, {prompts} held-out prompts: colour x shape x motion combinations
  training never showed, and seen combinations at new sizes and backgrounds; detector-scored, dense
  attention, seed {seed}): colour {colour:.0%}, shape {shape:.0%}, size {size:.0%}, motion {motion:.0%}, all
  four {all:.0%}.{ceiling}{direction}
  See `bench/results/{name}.md` for the methods and lengths it ran.
"""
_CEILING = """ Rendered clips of the same prompts through this VAE alone (what a perfect transformer would
  score) read colour {colour:.0%}, shape {shape:.0%}, size {size:.0%}, motion {motion:.0%}."""
_DIRECTION = """
  Where a single object goes, from the first to the last frame it is found in: {straight:.0f} px when asked to
  move straight, {still:.0f} px when asked to stay still, at a mean cosine of {cosine:.2f} with the asked
  direction (1: always that way, 0: no relation)."""


def training_facts(run: Path) -> dict[str, Any]:
    """What the README says about a finished run, read from its ``recipe.json`` and ``log.jsonl``."""
    recipe = json.loads((run / "recipe.json").read_text())
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    seconds = max((r["seconds"] for r in records if "seconds" in r), default=0.0)
    psnr = [r["value"] for r in records if r.get("eval") == "vae_psnr"]
    t, vae = recipe["transformer"], recipe["vae"]
    grid = ((recipe["frames"] - 1) // vae["scale_factor_temporal"] + 1,
            *[recipe["side"] // vae["scale_factor_spatial"]] * 2)
    return {**recipe, **_vocabulary(), "grid": " x ".join(map(str, grid)), "tokens": grid[0] * grid[1] * grid[2],
            "vae_psnr": psnr[-1] if psnr else "n/a", "hours": seconds / 3600,
            "object_weight": 1 + recipe.get("foreground_boost", 0.0), "refine_steps": recipe.get("refine_steps", 0),
            "transformer_weight": 1 + recipe.get("transformer_boost", 0.0), "motion_terms": _motion_terms(recipe),
            "precision": ("bf16 autocast" if recipe.get("precision") == "bfloat16"
                          else recipe.get("precision", "float32")),
            "transformer": f"{t['num_layers']} blocks, {t['num_attention_heads']} heads of "
                           f"{t['attention_head_dim']} channels, FFN {t['ffn_dim']}; "
                           f"{_parameters(run / 'model' / 'transformer') / 1e6:.1f}M parameters"}


def _motion_terms(recipe: dict[str, Any]) -> str:
    """The recipe's motion levers (``ToyRecipe.frame_noise`` and ``temporal_loss``) as a README clause."""
    terms = []
    if recipe.get("frame_noise"):
        terms.append(f"{recipe['frame_noise']:.0%} of clips with each latent frame at its own timestep")
    if recipe.get("temporal_loss"):
        terms.append(f"a loss on the error's frame-to-frame differences weighted {recipe['temporal_loss']:g}")
    return "".join(f", {term}" for term in terms)


def _parameters(folder: Path) -> int:
    """Parameter count of a saved diffusers model folder, read from the safetensors headers."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def _vocabulary() -> dict[str, str]:
    from fastdit.toy.world.grammar import BACKGROUNDS, COLOURS, MOTIONS, SHAPES

    return {"shapes": ", ".join(SHAPES), "colours": ", ".join(COLOURS), "motions": ", ".join(MOTIONS.values()),
            "backgrounds": ", ".join(BACKGROUNDS.values())}


def _measured(model: Path, weights: dict[str, float] | None) -> bool:
    """Whether ``weights`` (a toy report's checksums) are those of the pipeline exported in ``model``: a report
    measured on another model, or on this one before it was retrained, must not describe it."""
    from diffusers import DiffusionPipeline

    from fastdit.toy.training import pipeline_checksums

    if not weights:
        return False
    measured = pipeline_checksums(DiffusionPipeline.from_pretrained(model))
    return weights.keys() == measured.keys() and all(
        math.isclose(weights[name], value, rel_tol=1e-9) for name, value in measured.items())


def _adherence(report: Path, model: Path) -> str:
    """The dense, training-length line of the toy benchmark's report on the weights in ``model``, or nothing
    when it has not run on them (with a note on stderr when a report exists but measured other weights)."""
    if not report.is_file():
        return ""
    data = json.loads(report.read_text())
    if not _measured(model, data.get("weights")):
        print(f"note: {report} was not measured on these weights, so the README quotes no adherence; run "
              f"fastdit bench toy on the installed model, then make_sample again", file=sys.stderr)
        return ""
    dense = next((s for s in data["summary"] if s["scale"] == 1 and s["method"] == "dense"
                  and s["setting"] == "preset"), None)
    if dense is None or data.get("lora"):
        return ""
    ceiling = _CEILING.format(**data["vae_ceiling"]) if data.get("vae_ceiling") else ""
    return _ADHERENCE.format(prompts=dense["videos"], seed=data["seed"], name=report.stem, ceiling=ceiling,
                             direction=_direction(data.get("videos", [])), **dense)


def _direction(videos: list[dict[str, Any]]) -> str:
    """Where the dense model moves single objects (``fastdit.toy.world.score.motion_geometry``), or nothing when the
    report has no such videos: a motion share alone can't tell a model that ignores motion words from one that
    moves objects the wrong way."""
    from fastdit.toy.world.score import motion_geometry

    geometry = motion_geometry([r for r in videos if r["scale"] == 1 and r["method"] == "dense"
                                and r["setting"] == "preset"])
    if "straight" not in geometry or "still" not in geometry:
        return ""
    return _DIRECTION.format(straight=geometry["straight"][1], cosine=round(geometry["straight"][2], 2) + 0.0,
                             still=geometry["still"][1])


def install_sample(run: str | Path, folder: str | Path, report: str | Path = _REPORT) -> Path:
    """Copy the finished run ``run`` into ``folder`` (replacing it) with its provenance and README."""
    run, folder = Path(run), Path(folder)
    model = run / "model"
    if not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"{model} holds no exported pipeline: finish the run first "
                                f"(python -m fastdit.toy.train_sample {run} --resume)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        shutil.copytree(model, tmp, dirs_exist_ok=True)
        (tmp / "training").mkdir()
        for name in ("recipe.json", "log.jsonl"):
            shutil.copy2(run / name, tmp / "training" / name)
        (tmp / "README.md").write_text(README.format(adherence=_adherence(Path(report), model), **training_facts(run)))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdit.toy.make_sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished train_sample run folder (with model/, recipe.json, log.jsonl)")
    parser.add_argument("folder", nargs="?", default=str(sample_dir()), help="where to install it")
    parser.add_argument("--report", default=str(_REPORT), help="fastdit bench toy's JSON report, for the README")
    args = parser.parse_args(argv)
    try:
        folder = install_sample(args.run, args.folder, args.report)
    except FileNotFoundError as err:
        parser.error(str(err))
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
