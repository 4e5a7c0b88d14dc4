"""The bundled model: small, portable, loadable, and exactly what its script writes."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from fastdit.pipelines.loading import sample_dir
from fastdit.pipelines.make_sample import SAMPLE_SETTINGS, save_sample


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_sample_is_small_safetensors_with_a_portable_tokenizer():
    folder = sample_dir()
    files = _files(folder)
    assert sum((folder / f).stat().st_size for f in files) < 20 * 2**20
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    tokenizer_config = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "noise" in (folder / "README.md").read_text()
    assert json.loads((folder / "fastdit.json").read_text()) == SAMPLE_SETTINGS


def test_sample_loads_with_diffusers_and_matches_the_preset():
    from diffusers import DiffusionPipeline, WanPipeline

    import fastdit

    pipe = DiffusionPipeline.from_pretrained(sample_dir())
    assert isinstance(pipe, WanPipeline)
    fastdit.apply(pipe)  # preset "auto" finds the sample's own entry by the folder name
    pipe.set_progress_bar_config(disable=True)
    call = dict(SAMPLE_SETTINGS["call"], num_inference_steps=3, output_type="latent")
    pipe(prompt="a red ball", generator=torch.Generator().manual_seed(0), **call)
    records = fastdit.stats(pipe).records
    assert {r.step for r in records if r.dense} == {0}  # the preset's 2 of 8 warm-up steps: 1 of 3
    assert all(0 < r.density < 1 for r in records if r.step >= 1)  # the default size runs sparse


def test_make_sample_rewrites_the_shipped_folder_exactly(tmp_path):
    fresh = save_sample(tmp_path / "tiny-wan")
    shipped = sample_dir()
    assert _files(fresh) == _files(shipped)
    for name in _files(shipped):
        if name.endswith(".safetensors"):
            a, b = load_file(fresh / name), load_file(shipped / name)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        else:
            assert (fresh / name).read_text() == (shipped / name).read_text(), name
