"""Regenerate the bundled model: ``python -m fastdit.pipelines.make_sample [FOLDER]`` (default samples/tiny-wan).

The sample is a text-to-video ``WanPipeline`` with random weights (about 1 M parameters), saved with
``save_pretrained`` as safetensors with its own tokenizer, so ``fastdit generate`` and ``fastdit compare`` run
offline on any machine. The recipe is seeded, so the same code writes the same weights.

Its size is chosen for sparse attention to matter on a CPU: at the default 17 frames of 128x128 pixels the
latent token grid is 5 x 16 x 16 (patch 1x1x1 instead of Wan's 1x2x2, because the VAE decode of a bigger
video costs far more CPU time than the transformer), and 32-token blocks leave radial and GRAT real sparsity
(see ``fastdit info``). Its generation defaults live in ``fastdit.json`` in the folder (read by
``fastdit.pipelines.loading``); its sparse-attention defaults are the ``fastdit/tiny-wan`` preset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .loading import SETTINGS_FILE, sample_dir
from .tiny import build_tiny_wan_pipeline

__all__ = ["SAMPLE_MODEL", "SAMPLE_SETTINGS", "build_sample_pipeline", "save_sample"]

# transformer: 4 blocks, 2 heads of 64 (Wan's head dim is 128), patch 1x1x1; VAE and text encoder: the toy ones
SAMPLE_MODEL: dict[str, Any] = {"seed": 0, "num_layers": 4, "heads": 2, "head_dim": 64, "ffn_dim": 256,
                                "patch_size": (1, 1, 1), "rope_max_seq_len": 1024}
SAMPLE_SETTINGS: dict[str, Any] = {
    "call": {"num_frames": 17, "height": 128, "width": 128, "num_inference_steps": 8, "guidance_scale": 5.0,
             "max_sequence_length": 64},
    "fps": 8,
}

README = """\
# tiny-wan: fastdit's bundled offline model

**Random weights. Its output is noise, not video.** This is not a trained model: it exists so that
`fastdit generate`, `fastdit compare` and the web demo run offline on any machine, and so that timings,
densities and PSNR/SSIM between dense and sparse attention can be shown without downloading anything.

- Architecture: diffusers `WanPipeline` (text-to-video) with a `WanTransformer3DModel` of 4 blocks, 2 heads
  of 64 channels, patch 1x1x1 (Wan2.1 uses 1x2x2), a toy UMT5 text encoder, a toy Wan VAE (4x temporal, 8x
  spatial compression) and a 256-token BPE tokenizer trained on a few prompts.
- Loads with `WanPipeline.from_pretrained("samples/tiny-wan")` or `DiffusionPipeline.from_pretrained(...)`;
  the tokenizer class is written as `PreTrainedTokenizerFast` so transformers 4.x loads it too.
- Generation defaults (17 frames, 128x128, 8 steps, guidance 5, 8 fps) are in `fastdit.json`; sparse-attention
  defaults (radial, 32-token blocks, 2 dense warm-up steps) are the `fastdit/tiny-wan` entry of
  `fastdit/presets.py`, matched by this folder's name.
- Regenerate it with `python -m fastdit.pipelines.make_sample samples/tiny-wan` (seeded: same weights).
"""


def build_sample_pipeline() -> Any:
    """The bundled model's pipeline, built in memory from :data:`SAMPLE_MODEL`."""
    return build_tiny_wan_pipeline(**SAMPLE_MODEL)


def _portable_tokenizer_class(folder: Path) -> None:
    """transformers 5 saves the tokenizer as ``TokenizersBackend``, a class transformers 4.x lacks; the
    ``PreTrainedTokenizerFast`` it wraps loads under both."""
    index_path, config_path = folder / "model_index.json", folder / "tokenizer" / "tokenizer_config.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def save_sample(folder: str | Path) -> Path:
    """Write the sample to ``folder`` (replacing it), via a temporary folder so a failure leaves no half."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        build_sample_pipeline().save_pretrained(tmp, safe_serialization=True)
        _portable_tokenizer_class(tmp)
        (tmp / SETTINGS_FILE).write_text(json.dumps(SAMPLE_SETTINGS, indent=2) + "\n")
        (tmp / "README.md").write_text(README)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdit.pipelines.make_sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=str(sample_dir()), help="where to write it")
    folder = save_sample(parser.parse_args(argv).folder)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
