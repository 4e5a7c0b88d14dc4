"""The demo's session under real use: prompts are bounded, a generation whose client left or that ran past the
time limit stops at its next step (and frees the model), progress names each run, the result states its step
count and entropy scaling, the seed field keeps all 64 bits, and an image-to-video model takes its image."""

from __future__ import annotations

import sys
import time
import types

import numpy as np
import pytest

from fastdit.app.session import MAX_PROMPT_CHARS, DemoRequest, DemoSession, JobStopped
from fastdit.app.ui import _metrics_markdown, parse_seed
from fastdit.dummy.wan import dummy_wan_pipeline, dummy_wan_variant
from fastdit.patching.patch import is_patched
from tests.runs.conftest import FakeLpips

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = {"frames": 5, "height": 64, "width": 64, "steps": 2}


@pytest.fixture(scope="module")
def session():
    return DemoSession("sample")


def test_a_huge_prompt_is_refused_before_the_tokenizer(session):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"20000000 characters long; the demo takes at most {MAX_PROMPT_CHARS}"):
        session.generate(DemoRequest("x" * 20_000_000, "radial", **SIZE))
    with pytest.raises(ValueError, match="negative prompt is"):
        session.check(DemoRequest("a red ball", "radial", negative_prompt="x" * (MAX_PROMPT_CHARS + 1)))
    assert time.perf_counter() - start < 5


def test_a_generation_whose_client_left_stops_at_the_next_step_and_frees_the_model(session):
    seen = []
    with pytest.raises(JobStopped, match="stopped dense at step 1 of 2: its client left"):
        session.generate(DemoRequest("a red ball", "radial", seed=5, **SIZE),
                         on_progress=lambda *a: seen.append(a), client_left=lambda: True)
    assert seen == [("dense", 0, 2)]  # stopped before a second step, and before the sparse run
    assert not session._lock.locked() and not is_patched(session.pipe)
    result = session.generate(DemoRequest("a red ball", "radial", seed=5, **SIZE))  # the next user is served
    assert not result.dense_cached  # the stopped run was not cached as a result


def test_the_time_limit_stops_a_generation(session, monkeypatch):
    monkeypatch.setattr(session, "time_limit_s", 1e-6)
    with pytest.raises(JobStopped, match=r"stopped after 1e-06 s, this demo's time limit .* step 1 of 2"):
        session.generate(DemoRequest("a red ball", "radial", seed=6, **SIZE))
    with pytest.raises(ValueError, match="time_limit_s must be a number of seconds > 0, got nan"):
        DemoSession("sample", time_limit_s=float("nan"))


def test_progress_names_each_run_and_the_result_states_steps_and_entropy_scaling(session):
    seen = []
    result = session.generate(DemoRequest("a red ball", "grat", entropy_scaling=True, seed=7, **SIZE),
                              on_progress=lambda *a: seen.append(a))
    assert seen == [("dense", 0, 2), ("dense", 1, 2), ("dense", 2, 2), ("grat", 0, 2), ("grat", 1, 2),
                    ("grat", 2, 2)]
    assert result.metrics["steps"] == 2 and result.metrics["entropy_scaling"] is True
    table = _metrics_markdown(result.metrics)
    assert "| 5 frames, 64x64, 2 steps, seed 7 |" in table and "| Entropy scaling | on |" in table


def test_the_result_shows_lpips_or_why_it_is_missing(session, monkeypatch):
    from fastdit.runs import compare

    monkeypatch.setattr(compare, "lpips_metric", FakeLpips)  # torchmetrics' stand-in: no weights here
    request = DemoRequest("a red ball", "grat", seed=8, **SIZE)
    result = session.generate(request)
    scored = result.metrics
    expected = np.abs(result.dense.frames / 255.0 - result.sparse.frames / 255.0).mean()
    assert scored["lpips"] == pytest.approx(expected, rel=1e-5, abs=1e-9) and scored["lpips_unavailable"] is None
    assert f"| LPIPS vs dense | {scored['lpips']:.4f} |" in _metrics_markdown(scored)
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # as when not installed
    missing = session.generate(request).metrics
    reason = "LPIPS unavailable: torchmetrics is not installed (pip install 'fastdit[lpips]')"
    assert missing["lpips"] is None and missing["lpips_unavailable"] == reason
    assert f"| LPIPS vs dense | {reason} |" in _metrics_markdown(missing)


def test_the_seed_field_keeps_all_64_bits():
    assert parse_seed("18446744073709551615") == 2**64 - 1  # a browser number would round it to 2**64
    assert parse_seed(" 42 ") == 42 and parse_seed(42) == 42
    for typo in ("18446744073709551616", "1e3", "-1", "4.5", "x" * 10_000):
        with pytest.raises(ValueError, match="seed must be a whole number from 0 to 2\\*\\*64 - 1") as err:
            parse_seed(typo)
        assert len(str(err.value)) < 120  # a long typo is not echoed whole


@pytest.fixture
def i2v_model(tmp_path, monkeypatch):
    """A toy Wan 2.2 image-to-video model folder (the image's latent enters as 20 more input channels; no CLIP
    image encoder), random weights."""
    from diffusers import WanImageToVideoPipeline
    from diffusers.pipelines.wan import pipeline_wan_i2v

    t2v = dummy_wan_pipeline()
    WanImageToVideoPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, vae=t2v.vae,
                            scheduler=t2v.scheduler, transformer=dummy_wan_variant("WanTransformer3DModel",
                                                                                   in_channels=36),
                            boundary_ratio=0.0).save_pretrained(tmp_path)  # boundary 0: one expert for all steps
    # the I2V pipeline cleans prompts with ftfy, which only the real models' users need (not a test dependency)
    if not hasattr(pipeline_wan_i2v, "ftfy"):
        monkeypatch.setattr(pipeline_wan_i2v, "ftfy", types.SimpleNamespace(fix_text=str), raising=False)
    return tmp_path


def test_an_image_to_video_model_asks_for_its_image_and_generates_from_it(i2v_model):
    session = DemoSession(str(i2v_model))
    assert session.image_input == "required"
    with pytest.raises(ValueError, match="WanImageToVideoPipeline makes a video from an image: add one"):
        session.check(DemoRequest("a red ball", "radial", **SIZE))
    red, blue = (np.zeros((64, 64, 3), np.uint8) + np.array(c, np.uint8) for c in ([255, 0, 0], [0, 0, 255]))
    first = session.generate(DemoRequest("a red ball", "radial", image=red, **SIZE))
    assert first.dense.frames.shape == (5, 64, 64, 3) and first.metrics["density"] <= 1
    other = session.generate(DemoRequest("a red ball", "radial", image=blue, **SIZE))
    assert not other.dense_cached and not np.array_equal(first.dense.frames, other.dense.frames)
    with pytest.raises(TypeError, match=r"image must be a PIL image or an \[H, W, 3\] uint8 array"):
        session.generate(DemoRequest("a red ball", "radial", image=np.zeros((8, 8, 3)), **SIZE))
