"""``fastdit bench e2e`` writes its report with a row per method (timings are never asserted)."""

from __future__ import annotations

import json

from fastdit.cli import main


def test_e2e_quick_report(tmp_path, capsys):
    out = tmp_path / "missing" / "folder"  # created when the report is written
    code = main(["bench", "e2e", "--quick", "--frames", "5", "--height", "128", "--width", "128", "--repeats", "1",
                 "--warmup", "0", "--methods", "grat", "--out", str(out), "--name", "e2e_test"])
    assert code == 0
    data = json.loads((out / "e2e_test.json").read_text())
    assert data["grid"] == [2, 8, 8] and data["config"]["num_layers"] == 2
    assert [r["method"] for r in data["rows"]] == ["dense", "dense (fastdit)", "grat"]
    assert all(r["median_s"] > 0 for r in data["rows"])
    assert "| grat |" in (out / "e2e_test.md").read_text()


def test_e2e_rejects_sizes_the_model_cannot_make(capsys):
    assert main(["bench", "e2e", "--quick", "--frames", "8"]) == 2
    assert "frames = 4k+1" in capsys.readouterr().err


def test_e2e_times_a_stateful_method_on_a_later_step(monkeypatch):
    """svg2's timed forward starts its k-means from the centroids of an untimed one (a run's first sparse step is
    its only cold one), and its record holds that forward alone."""
    import torch

    from fastdit.bench.e2e import _timed
    from fastdit.dummy.configs import MODEL_CONFIGS, build_denoiser
    from fastdit.dummy.inputs import build_inputs
    from fastdit.methods import svg2
    from fastdit.patching.presets import PRESETS

    iterations = []
    kmeans = svg2.kmeans
    monkeypatch.setattr(svg2, "kmeans",
                        lambda x, start, iters: iterations.append((iters, tuple(x.shape))) or kmeans(x, start, iters))
    name = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    spec = MODEL_CONFIGS[name]
    torch.manual_seed(0)
    model = build_denoiser(name, **spec.quick_overrides())
    inputs = build_inputs(spec.inputs, model, spec.latent(9, 128, 128), 8, "cpu", torch.float32)
    options = PRESETS[name].for_method("svg2").options
    seconds, stats = _timed(model, inputs, "svg2", {"preset": name, "dense_steps": 0, "dense_layers": 0,
                                                     "backend": "auto"})
    layers, sides = model.config.num_layers, 2  # queries and keys
    model_calls = [iters for iters, shape in iterations if shape == iterations[-1][1]]  # not apply's own checks
    assert model_calls == [options["kmeans_iters"]] * layers * sides + [options["kmeans_iters_step"]] * layers * sides
    assert seconds > 0 and len(stats.records) == layers  # the timed forward's attention calls only
