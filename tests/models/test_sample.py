"""The bundled model: the trained toy-world model, small, portable, documented, loadable, and it draws what it
is asked for."""

from __future__ import annotations

import json

import pytest
import torch

from fastdit.models.loading import sample_dir
from fastdit.toy.recipe import RECIPES
from fastdit.toy.train_sample import NEUTRAL_KEYS

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = RECIPES["full"]


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_sample_is_small_safetensors_with_a_portable_tokenizer():
    folder = sample_dir()
    files = _files(folder)
    assert sum((folder / f).stat().st_size for f in files if f.endswith(".safetensors")) < 30 * 2**20
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    tokenizer_config = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_sample_is_the_trained_recipe_and_says_so():
    folder = sample_dir()
    recipe = {**NEUTRAL_KEYS, **json.loads((folder / "training" / "recipe.json").read_text())}
    assert {k: v for k, v in recipe.items() if k != "seed"} == json.loads(json.dumps(RECIPE.to_dict()))
    assert json.loads((folder / "fastdit.json").read_text()) == RECIPE.settings()
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert {k: config[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim")} == {
        k: RECIPE.transformer[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim")}
    log = [json.loads(line) for line in (folder / "training" / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log if r["phase"] == "transformer") == RECIPE.steps  # the run finished
    readme = (folder / "README.md").read_text()
    assert "trained" in readme and "noise" not in readme


def test_sample_loads_with_diffusers_and_matches_the_preset():
    from diffusers import DiffusionPipeline, WanPipeline

    import fastdit

    pipe = DiffusionPipeline.from_pretrained(sample_dir())
    assert isinstance(pipe, WanPipeline)
    fastdit.apply(pipe)  # preset "auto" finds the sample's own entry by the folder name
    pipe.set_progress_bar_config(disable=True)
    call = dict(RECIPE.settings()["call"], num_inference_steps=3, output_type="latent")
    pipe(prompt="a red ball bouncing in a white room", generator=torch.Generator().manual_seed(0), **call)
    records = fastdit.stats(pipe).records
    assert {r.step for r in records if r.dense} == {0}  # the preset's 4 of 16 warm-up steps: 1 of 3
    assert all(0 < r.density < 1 for r in records if r.step >= 1)  # the default size runs sparse


@pytest.mark.parametrize("prompt", ["a red ball bouncing in a white room", "a big blue square moving up on grass"])
def test_the_bundled_model_draws_the_prompts_colour(prompt):
    from diffusers import WanPipeline

    from fastdit.runs.media import to_uint8
    from fastdit.toy.world import attribute_hits, detect, parse_prompt

    pipe = WanPipeline.from_pretrained(sample_dir())
    pipe.set_progress_bar_config(disable=True)
    video = pipe(prompt, generator=torch.Generator().manual_seed(0), output_type="np",
                 **RECIPE.settings()["call"]).frames[0]
    hits = attribute_hits(parse_prompt(prompt), detect(to_uint8(video)))
    assert hits["colour"][0], hits
