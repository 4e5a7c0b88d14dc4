"""Training the bundled model: the updates learn, a run resumes exactly, and the result loads with diffusers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fastdit.toy.make_sample import install_sample
from fastdit.toy.recipe import RECIPES, build_components, build_toy_tokenizer
from fastdit.toy.train_sample import FORMAT, Trainer, main
from fastdit.toy.training import (conditioning_gap, draw_batch, flow_loss, object_mask, pipeline_checksums,
                                  shifted_sigmas, vae_loss, video_tensor)
from fastdit.toy.world import training_clip, vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")
MINI = RECIPES["mini"]


def test_every_word_of_the_world_is_one_token():
    tokenizer = build_toy_tokenizer(MINI.max_text_tokens)
    for word in vocabulary():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def _fit(model, loss_fn, steps=15, lr=3e-3):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    before = loss_fn().item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    return before, loss_fn().item()


def test_a_few_vae_steps_lower_the_reconstruction_loss_on_a_fixed_batch():
    vae = build_components(MINI, seed=0)["vae"]
    video = video_tensor([training_clip(0, i, MINI.frames, MINI.side) for i in range(2)])
    before, after = _fit(vae, lambda: vae_loss(vae, video, MINI.vae_kl, torch.Generator().manual_seed(0))[0])
    assert after < 0.8 * before


def test_a_few_transformer_steps_lower_the_flow_matching_loss_on_a_fixed_batch():
    transformer = build_components(MINI, seed=0)["transformer"]
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(4, *MINI.latent_shape(), generator=g)
    text = torch.randn(4, MINI.max_text_tokens, MINI.text_dim, generator=g)
    sigmas, noise = shifted_sigmas(4, MINI.shift, g), torch.randn(latents.shape, generator=g)
    before, after = _fit(transformer, lambda: flow_loss(transformer, latents, text, sigmas, noise))
    assert after < 0.8 * before


def test_the_temporal_loss_counts_only_errors_that_change_from_frame_to_frame():
    g = torch.Generator().manual_seed(0)
    latents, noise = (torch.randn(2, *MINI.latent_shape(), generator=g) for _ in range(2))
    text, sigmas = torch.zeros(2, MINI.max_text_tokens, MINI.text_dim), torch.tensor([0.3, 0.8])
    weight = 1 + torch.rand(2, *MINI.latent_shape()[1:], generator=g)
    frames = latents.shape[2]

    def predicting(error):  # a transformer whose velocity is off by ``error``
        return lambda **_: (noise - latents + error,)

    steady = torch.randn(2, MINI.latent_shape()[0], 1, *MINI.latent_shape()[2:], generator=g).expand_as(latents)
    for w in (None, weight):
        plain = flow_loss(predicting(steady), latents, text, sigmas, noise, w)
        torch.testing.assert_close(flow_loss(predicting(steady), latents, text, sigmas, noise, w, temporal=2.0), plain)
    flicker = torch.ones_like(latents) * torch.tensor([(-1.0) ** f for f in range(frames)]).view(1, 1, -1, 1, 1)
    plain = flow_loss(predicting(flicker), latents, text, sigmas, noise)
    torch.testing.assert_close(plain, torch.tensor(1.0))
    # each frame-to-frame difference is 2, squared 4, weighted 0.5
    torch.testing.assert_close(flow_loss(predicting(flicker), latents, text, sigmas, noise, temporal=0.5),
                               torch.tensor(3.0))


def _cache(clips=6):
    g = torch.Generator().manual_seed(0)
    return {"latents": torch.randn(clips, *MINI.latent_shape(), generator=g),
            "text": torch.randn(2, MINI.max_text_tokens, MINI.text_dim, generator=g),
            "empty": torch.zeros(MINI.max_text_tokens, MINI.text_dim), "prompt_index": torch.arange(clips) % 2}


def test_frame_noise_draws_a_level_per_latent_frame_for_its_share_of_clips():
    frames = MINI.latent_shape()[1]
    one = draw_batch(_cache(), 64, 0.1, 3.0, torch.Generator().manual_seed(0))[3]
    assert one.shape == (64,)
    sigmas = draw_batch(_cache(), 64, 0.1, 3.0, torch.Generator().manual_seed(0), frame_noise=0.5)[3]
    assert sigmas.shape == (64, frames) and ((sigmas >= 0) & (sigmas <= 1)).all()
    independent = (sigmas.max(1).values - sigmas.min(1).values) > 0
    assert 16 < independent.sum() < 48  # about half the clips; the rest keep one level for all frames


def test_per_frame_levels_noise_each_frame_to_its_own_level():
    transformer = build_components(MINI, seed=0)["transformer"].eval()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, *MINI.latent_shape(), generator=g)
    text = torch.randn(2, MINI.max_text_tokens, MINI.text_dim, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    frames = latents.shape[2]
    seen = {}
    transformer.register_forward_pre_hook(lambda _, args, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        per_clip = flow_loss(transformer, latents, text, torch.tensor([0.3, 0.8]), noise)
        same = flow_loss(transformer, latents, text, torch.tensor([[0.3] * frames, [0.8] * frames]), noise)
        levels = torch.linspace(0.0, 1.0, frames).expand(2, -1)
        flow_loss(transformer, latents, text, levels, noise)
    assert torch.allclose(per_clip, same, rtol=1e-5)  # one level per frame is one level per clip
    tokens = frames * latents.shape[3] * latents.shape[4]
    assert seen["timestep"].shape == (2, tokens)
    assert seen["timestep"][0, 0] == 0 and seen["timestep"][0, -1] == 1000
    torch.testing.assert_close(seen["hidden_states"][:, :, 0], latents[:, :, 0])  # frame 0 clean
    torch.testing.assert_close(seen["hidden_states"][:, :, -1], noise[:, :, -1])  # last frame pure noise


def test_the_conditioning_gap_is_zero_for_the_same_prompt_and_not_for_another():
    transformer = build_components(MINI, seed=0)["transformer"]
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, *MINI.latent_shape(), generator=g)
    text, other = torch.randn(2, 2, MINI.max_text_tokens, MINI.text_dim, generator=g)
    sigmas, noise = torch.tensor([0.5, 0.9]), torch.randn(latents.shape, generator=g)
    assert conditioning_gap(transformer, latents, text, text, sigmas, noise) == 0.0
    assert conditioning_gap(transformer, latents, text, other, sigmas, noise) != 0.0


def test_foreground_weights_cover_every_object_in_every_latent_frame():
    clip = training_clip(0, 7, frames=17, side=128)
    weight = 1 + 4.0 * object_mask(clip, (5, 16, 16), temporal=4, spatial=8)
    assert set(weight.unique().tolist()) == {1.0, 5.0}
    for track in clip.tracks:
        for f, (x, y) in enumerate(track.centroids.tolist()):
            assert weight[(f + 3) // 4, int(y // 8), int(x // 8)] == 5.0
    assert (weight == 5.0).float().mean() < 0.3  # objects are a minority of the latents


def test_shifted_sigmas_follow_the_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sigmas = shifted_sigmas(200_000, 3.0, torch.Generator().manual_seed(0))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(1000)
    assert abs(sigmas.median().item() - scheduler.sigmas[:-1].median().item()) < 0.01


def _final_weights(trainer):
    return {k: v.clone() for k, v in trainer.ema.state_dict().items()}


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    straight = Trainer(tmp_path / "straight", MINI, seed=1, progress=False)
    assert straight.run()

    stopped = Trainer(tmp_path / "stopped", MINI, seed=1, progress=False)
    calls = []

    def stop_at_third_step(*_):
        calls.append(1)
        if len(calls) == 3:
            stopped.request_stop()

    stopped.transformer.register_forward_hook(stop_at_third_step)
    assert not stopped.run()
    assert (stopped.phase, stopped.step) == ("transformer", 3)
    gaps = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
            if json.loads(line).get("eval") == "word_gaps"]
    assert gaps and all(isinstance(g["motion"], float) and isinstance(g["colour"], float) for g in gaps)
    resumed = Trainer(tmp_path / "stopped", MINI, seed=1, progress=False)
    resumed.load()
    assert resumed.run()

    a, b = _final_weights(straight), _final_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()
             if json.loads(line)["phase"] == "transformer" and "loss" in json.loads(line)]
    assert steps == sorted(set(steps)), "the log has no step twice after resuming"


def test_the_command_writes_a_pipeline_diffusers_loads(tmp_path):
    from diffusers import WanPipeline

    out = tmp_path / "run"
    assert main([str(out), "--recipe", "mini", "--seed", "2"]) == 0
    pipe = WanPipeline.from_pretrained(out / "model")
    pipe.set_progress_bar_config(disable=True)
    video = pipe("a red ball bouncing in a white room", num_frames=MINI.frames, height=MINI.side, width=MINI.side,
                 num_inference_steps=2, max_sequence_length=MINI.max_text_tokens, output_type="np").frames[0]
    assert video.shape == (MINI.frames, MINI.side, MINI.side, 3)
    assert pipe.vae.config.latents_std != build_components(MINI, 0)["vae"].config.latents_std  # measured
    assert main([str(out), "--recipe", "mini"]) == 2  # an existing run needs --resume
    with pytest.raises(ValueError, match="another recipe or seed"):
        Trainer(out, MINI, seed=3, progress=False).load()

    sample = install_sample(out, tmp_path / "samples" / "toy", report=tmp_path / "no-report.json")
    assert WanPipeline.from_pretrained(sample).transformer.config.num_layers == MINI.transformer["num_layers"]
    assert (sample / "training" / "log.jsonl").read_text() == (out / "log.jsonl").read_text()
    readme = (sample / "README.md").read_text()
    assert f"{MINI.steps} steps of flow matching" in readme and f"{MINI.frames} frames of {MINI.side}x" in readme
    assert ("50% of clips with each latent frame at its own timestep, a loss on the error's frame-to-frame "
            "differences weighted 1") in " ".join(readme.split())  # the mini recipe's motion levers
    assert "Prompt adherence" not in readme  # no report, no line
    dense = {"scale": 1, "method": "dense", "setting": "preset", "videos": 24, "colour": 1.0, "shape": 0.375,
             "size": 0.5, "motion": 0.25, "all": 0.125}
    report = tmp_path / "toy_frames.json"
    weights = pipeline_checksums(pipe)
    stale = {**weights, "transformer": weights["transformer"] + 1.0}  # as if measured before a retrain
    for measured in (None, stale):
        report.write_text(json.dumps({"seed": 0, "lora": None, "summary": [dense], "weights": measured}))
        readme = (install_sample(out, tmp_path / "samples" / "stale", report=report) / "README.md").read_text()
        assert "Prompt adherence" not in readme  # a report about other weights is not quoted
    report.write_text(json.dumps({"seed": 0, "lora": None, "summary": [dense], "weights": weights}))
    readme = (install_sample(out, tmp_path / "samples" / "cited", report=report) / "README.md").read_text()
    assert "24 held-out prompts" in readme and "shape 38%" in readme and "motion 25%" in readme
    assert "bench/results/toy_frames.md" in readme  # the report it was given, not a fixed name
    assert "VAE alone" not in readme  # a report from before the ceiling was measured
    ceiling = {"colour": 1.0, "shape": 0.6667, "size": 0.92, "motion": 1.0, "all": 0.6}
    report.write_text(json.dumps({"seed": 0, "lora": None, "summary": [dense], "vae_ceiling": ceiling,
                                  "weights": weights}))
    readme = (install_sample(out, tmp_path / "samples" / "ceiling", report=report) / "README.md").read_text()
    assert "through this VAE alone" in readme and "shape 67%, size 92%, motion 100%." in readme
    assert "Where a single object goes" not in readme  # a report without its videos
    videos = [{"scale": 1, "method": "dense", "setting": "preset", "prompt": prompt, "tracks": [track]}
              for prompt, track in [("a red ball moving left in a white room", [[60, 60], [30, 60]]),
                                    ("a red ball moving up in a white room", [[60, 60], [60, 70]]),
                                    ("a red ball staying still on grass", [[60, 60], [60, 62]])]]
    report.write_text(json.dumps({"seed": 0, "lora": None, "summary": [dense], "vae_ceiling": ceiling,
                                  "weights": weights, "videos": videos}))
    readme = (install_sample(out, tmp_path / "samples" / "direction", report=report) / "README.md").read_text()
    assert "20 px when asked to\n  move straight, 2 px when asked to stay still, at a mean cosine of 0.00" in readme
    with pytest.raises(FileNotFoundError, match="no exported pipeline"):
        install_sample(tmp_path / "unfinished", tmp_path / "samples" / "other")


@pytest.fixture
def checkpointed(tmp_path):
    """A run folder with a checkpoint of a mini run that has logged a line (nothing trained: a checkpoint of the
    first step is as whole as any)."""
    trainer = Trainer(tmp_path / "run", MINI, seed=1, progress=False)
    trainer.out.mkdir()
    trainer._log({"loss": 1.0})
    trainer.save()
    return trainer


@pytest.mark.parametrize("spoil", [
    lambda path: path.write_bytes(b""),
    lambda path: path.write_bytes(b"\x00garbage" * 100),
    lambda path: path.write_bytes(path.read_bytes()[:path.stat().st_size // 2]),  # half-written
    lambda path: torch.save(torch.zeros(3), path),  # another program's file
    lambda path: torch.save({"format": FORMAT}, path),  # the right format, not its contents
], ids=["empty", "garbage", "half-written", "foreign", "hollow"])
def test_resuming_from_a_spoilt_checkpoint_is_one_line(checkpointed, capsys, spoil):
    spoil(checkpointed.checkpoint_path)
    assert main([str(checkpointed.out), "--recipe", "mini", "--seed", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m fastdit.toy.train_sample: error: --resume: ") and err.count("\n") == 1, err


def test_resuming_after_the_log_was_emptied_pads_nothing(checkpointed):
    checkpointed.log_path.write_text("")
    resumed = Trainer(checkpointed.out, MINI, seed=1, progress=False)
    resumed.load()
    assert checkpointed.log_path.read_bytes() == b""


SAVE_CHECKPOINT = """
import sys
from fastdit.toy.recipe import RECIPES
from fastdit.toy.train_sample import Trainer
trainer = Trainer(sys.argv[1], RECIPES["mini"], seed=1, progress=False)
try:
    trainer.save()
except Exception as err:
    print(type(err).__name__, err)
"""


def test_a_full_disk_while_checkpointing_leaves_no_file(tmp_path, file_size_limit):
    result = subprocess.run([sys.executable, "-c", SAVE_CHECKPOINT, str(tmp_path / "run")], capture_output=True,
                            text=True, timeout=120, preexec_fn=file_size_limit(4096))
    assert result.stdout.startswith("WriteError can't write") and "checkpoint.pt" in result.stdout, result.stderr
    assert list((tmp_path / "run").iterdir()) == []


def test_an_existing_run_without_resume_is_one_line(checkpointed, capsys):
    assert main([str(checkpointed.out), "--recipe", "mini", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"python -m fastdit.toy.train_sample: error: {checkpointed.checkpoint_path} exists: pass --resume "
                   "to continue it, or choose another OUT\n")
