"""Finding models by name, and the size rules checked before a long run starts."""

from __future__ import annotations

import json
import shutil

import pytest

from fastdit.models.loading import (ModelError, check_video_size, load_pipeline, resolve_model, sample_dir,
                                    video_size_rule)


def test_tiny_is_the_default_and_carries_its_settings():
    for name in (None, "sample", "tiny"):
        source = resolve_model(name)
        assert source.local and source.location == str(sample_dir())
        assert source.settings["call"]["num_frames"] == 17 and source.fps == 8


def test_local_folder_and_hub_id(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    (tmp_path / "fastdit.json").write_text(json.dumps({"call": {"height": 64}, "fps": 12}))
    source = resolve_model(str(tmp_path))
    assert source.local and source.settings["call"] == {"height": 64} and source.fps == 12
    hub = resolve_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert not hub.local and hub.settings == {} and hub.fps == 16


@pytest.mark.parametrize("name, message", [
    ("no-such-model", "unknown model"),
    ("./missing/folder", "unknown model"),
    ("pyproject.toml", "is a file"),
])
def test_unknown_models(name, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    with pytest.raises(ModelError, match=message):
        resolve_model(name)


def test_folder_without_a_pipeline(tmp_path):
    with pytest.raises(ModelError, match="no model_index.json"):
        resolve_model(str(tmp_path))


def test_missing_hub_weights_offline_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load_pipeline(resolve_model("some-org/not-downloaded-model"))
    message = str(info.value)
    assert "\n" not in message
    assert "'some-org/not-downloaded-model'" in message and "hf download some-org/not-downloaded-model" in message


def test_video_size_rule_of_the_bundled_model():
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(sample_dir())
    assert video_size_rule(pipe) == (4, 16)  # VAE 4x in time; WanPipeline wants multiples of 16


def _bare_pipeline(name: str, **components):
    """A diffusers pipeline class built with no components but those given: its size attributes are the ones
    it sets from its VAE's defaults, which is all the rule reads."""
    import inspect

    import diffusers

    cls = getattr(diffusers, name)
    params = [p for p, v in inspect.signature(cls.__init__).parameters.items()
              if p != "self" and v.default is inspect.Parameter.empty]
    return cls(**{**dict.fromkeys(params), **components})


def test_each_video_family_has_its_own_frame_rule():
    from fastdit.dummy.video import dummy_ltx_transformer, dummy_mochi_transformer

    ltx = _bare_pipeline("LTXPipeline", transformer=dummy_ltx_transformer())
    assert video_size_rule(ltx) == (8, 32)  # LTX-Video: 8x in time, 32x in space (patch 1)
    with pytest.raises(ValueError, match="LTXPipeline needs frames = 8k\\+1 .* got 10, try 9 or 17"):
        check_video_size("LTXPipeline", 10, 512, 704, frame_step=8, multiple=32)
    assert video_size_rule(_bare_pipeline("MochiPipeline", transformer=dummy_mochi_transformer())) == (6, 16)
    assert video_size_rule(_bare_pipeline("EasyAnimatePipeline"))[0] == 4
    # Allegro's 88 frames and Helios's 132 are their defaults: they take any count
    assert video_size_rule(_bare_pipeline("AllegroPipeline"))[0] is None
    assert video_size_rule(_bare_pipeline("HeliosPipeline"))[0] is None


@pytest.mark.parametrize("frames, height, width, message", [
    (10, 64, 64, "frames = 4k\\+1 .* got 10, try 9 or 13"),
    (9, 100, 64, "divisible by 16; got height 100, try 96 or 112"),
    (9, 64, 8, "got width 8, try 16 or 32"),
])
def test_check_video_size_names_the_rule(frames, height, width, message):
    with pytest.raises(ValueError, match=message):
        check_video_size("WanPipeline", frames, height, width, frame_step=4, multiple=16)


def test_check_video_size_accepts_valid_and_unknown_rules():
    check_video_size("WanPipeline", 81, 480, 832, frame_step=4, multiple=16)
    check_video_size("SomePipeline", 10, 100, 100, frame_step=None, multiple=None)


def test_text_length_is_bounded_by_the_folders_tokenizer(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(sample_dir(), folder, ignore=shutil.ignore_patterns("*.safetensors", "training"))
    settings = json.loads((folder / "fastdit.json").read_text())
    settings["call"]["max_sequence_length"] = 33
    (folder / "fastdit.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError, match="max_sequence_length 33 is more than the 32 text tokens"):
        resolve_model(str(folder))
