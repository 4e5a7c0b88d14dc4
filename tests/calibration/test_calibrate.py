"""``fastdit.calibrate`` (issue 15): per-layer and per-head choices, files, targets, and refusals."""

from __future__ import annotations

import json
import math

import pytest

import fastdit
from fastdit.calibration import Calibration, calibrate, load_calibration, measure, select
from fastdit.calibration.measurements import Measurements, MethodMeasure
from fastdit.dummy.wan import dummy_wan_pipeline
from fastdit.layout.grid import TokenGrid
from fastdit.patching.patch import patch_config
from tests.calibration.conftest import CALL, HEAD_DIM, PROMPT, check_follows, generate, stats_with

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def measured(random_pipe) -> Measurements:
    return measure(random_pipe, PROMPT, call=CALL, block_size=16, preset=None)


@pytest.fixture(scope="module")
def static_calibration(random_pipe) -> Calibration:
    """Static methods only: their densities don't depend on the data, so a run reproduces them exactly."""
    return calibrate(random_pipe, PROMPT, target=0.3, methods=("radial", "grat"), call=CALL, block_size=16,
                     preset=None)


def test_local_head_runs_sparse_and_global_head_dense(local_global_pipe):
    # pyramid is left out: its pooled levels average keys, which is exact for a head that attends uniformly
    calibration = calibrate(local_global_pipe, PROMPT, target=0.05, methods=("radial", "grat", "vmoba"),
                            call=CALL, block_size=16, preset=None)
    assert [c.layer for c in calibration.layers] == [0, 1]
    for layer in calibration.layers:
        local, global_ = layer.heads
        assert local.options is not None and local.density < 0.5 and local.error <= 0.05
        assert global_.options is None or global_.density > 0.9
    assert calibration.expected_density < 0.8


def test_file_round_trips_and_applying_it_reproduces_the_recorded_densities(random_pipe, static_calibration,
                                                                           tmp_path):
    calibration = static_calibration
    assert any(c.method != "dense" for c in calibration.layers)
    path = calibration.save(tmp_path / "calibration.json")
    data = json.loads(path.read_text())
    assert data["format"] == "fastdit-calibration/1" and data["grid"] == [3, 8, 8]
    assert data["fingerprint"] == calibration.fingerprint and data["target"] == 0.3
    loaded = load_calibration(path)
    assert loaded.to_dict() == calibration.to_dict()
    assert loaded.plans() == calibration.plans()

    check_follows(stats_with(random_pipe, path), calibration)


def test_loose_target_is_sparser_than_tight_and_zero_error_is_dense(random_pipe, measured):
    loose, tight, zero = select(measured, 0.5), select(measured, 0.05), select(measured, 0.0)
    assert loose.expected_density < tight.expected_density
    assert zero.expected_density == 1.0 and all(c.method == "dense" for c in zero.layers)
    assert zero.dense_steps == 0
    stats = stats_with(random_pipe, zero)
    assert stats.sparse_fraction() == 0 and stats.mean_density() == 1.0


def test_mass_metric_bounds_the_attention_mass_left_out(measured):
    capped = select(measured, 0.02, metric="mass", allocation="cap")
    for layer in capped.layers:
        assert all(h.recall >= 0.98 for h in layer.heads if h.options is not None)
    budget = select(measured, 0.02, metric="mass", allocation="budget")
    losses = [1 - h.recall for layer in budget.layers for h in layer.heads if h.options is not None]
    heads = 2 * len(budget.layers)  # the random pipe has two heads per layer
    assert math.sqrt(sum(x * x for x in losses) / heads) <= 0.02 + 1e-9
    assert budget.expected_density <= capped.expected_density


def test_budget_spends_the_error_where_it_buys_the_most_sparsity():
    m = _synthetic([0.01, 0.2], [0.3, 0.1])
    measure_ = m.layers[("transformer", 0)]["radial"]
    measure_.sq_error[1, 1:, 0] = 0.065**2  # head 0 is nearly within the target at density 0.1
    capped = select(m, 0.05, allocation="cap").layers[0].heads
    assert [h.density for h in capped] == pytest.approx([0.3, 0.3])
    budget = select(m, 0.05, allocation="budget").layers[0].heads
    assert [h.density for h in budget] == pytest.approx([0.1, 0.3])  # head 0 takes more error than the cap allows
    assert math.sqrt((budget[0].error**2 + budget[1].error**2) / 2) <= 0.05


def _synthetic(errors: list[float], densities: list[float]) -> Measurements:
    """One layer, one method with two candidates, three measured steps of a 10-step run: ``errors[c]`` at
    steps 1 and 2, and every candidate far off the target at step 0."""
    m = Measurements.create(("radial",), (0, 4, 8), 10, 16, rows=4)
    m.grid = TokenGrid(3, 8, 8)
    m.options["radial"] = m.options["radial"][:2]
    measure_ = MethodMeasure.empty(2, 3, 2)
    measure_.sq_norm += 1.0
    measure_.calls += 1
    measure_.rows += 4
    measure_.recall += 4.0
    for c, (error, density) in enumerate(zip(errors, densities)):
        measure_.sq_error[c, 0] = 0.5**2
        measure_.sq_error[c, 1:] = error**2
        measure_.density[c] = density
    m.layers[("transformer", 0)] = {"radial": measure_}
    return m


def test_warmup_covers_the_early_steps_that_miss_the_target():
    calibration = select(_synthetic([0.01, 0.2], [0.3, 0.1]), 0.05)
    assert calibration.dense_steps == 4  # steps 0-3 dense: step 0 misses the target by far
    (layer,) = calibration.layers
    assert layer.method == "radial" and all(h.density == pytest.approx(0.3) for h in layer.heads)
    assert calibration.expected_density == pytest.approx(0.4 + 0.6 * 0.3)
    # a target the first step meets too needs no warm-up
    assert select(_synthetic([0.01, 0.2], [0.3, 0.1]), 0.6).dense_steps == 0


def test_shared_heads_take_one_setting_every_head_meets():
    m = _synthetic([0.01, 0.2], [0.3, 0.1])
    m.layers[("transformer", 0)]["radial"].sq_error[1, 1:, 0] = 0.01**2  # head 0 alone meets it sparser
    per_head = select(m, 0.05).layers[0].heads
    assert per_head[0].density == pytest.approx(0.1) and per_head[1].density == pytest.approx(0.3)
    shared = select(m, 0.05, per_head=False).layers[0].heads
    assert shared[0].options == shared[1].options and shared[0].density == pytest.approx(0.3)


def test_another_grid_is_refused_unless_reuse_is_asked(random_pipe, measured):
    calibration = select(measured, 0.5)
    fastdit.apply(random_pipe, calibration=calibration)
    try:
        with pytest.raises(ValueError, match=r"calibrated on a 3x8x8 latent grid, this call's is 3x8x12"):
            generate(random_pipe, width=96)
    finally:
        fastdit.remove(random_pipe)
    fastdit.apply(random_pipe, calibration=calibration, reuse_calibration=True)
    try:
        with pytest.warns(UserWarning, match="re-using them as asked"):
            generate(random_pipe, height=96)
        assert fastdit.stats(random_pipe).sparse_fraction() > 0
    finally:
        fastdit.remove(random_pipe)


def test_calibration_of_another_architecture_is_refused(measured):
    other = dummy_wan_pipeline(num_layers=3, head_dim=HEAD_DIM, patch_size=(1, 1, 1))
    with pytest.raises(ValueError, match="fingerprint"):
        fastdit.apply(other, calibration=select(measured, 0.5))
    assert not fastdit.is_patched(other)


def test_calibration_excludes_method_and_block_size(random_pipe, measured):
    calibration = select(measured, 0.5)
    with pytest.raises(ValueError, match="method"):
        fastdit.apply(random_pipe, "radial", calibration=calibration)
    with pytest.raises(ValueError, match="decay_factor|method options"):
        fastdit.apply(random_pipe, calibration=calibration, decay_factor=0.4)
    with pytest.raises(ValueError, match="block size"):
        fastdit.apply(random_pipe, calibration=calibration, block_size=32)
    assert not fastdit.is_patched(random_pipe)


def test_bad_files_are_refused_clearly(tmp_path, measured):
    with pytest.raises(ValueError, match="does not exist"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not a fastdit calibration"):
        load_calibration(tmp_path / "other.json")
    data = select(measured, 0.5).to_dict()
    sparse = next(c for c in data["layers"] if c["method"] != "dense")
    next(h for h in sparse["heads"] if h["options"])["options"]["colour"] = "red"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown option"):
        load_calibration(tmp_path / "bad.json")


def test_a_local_model_is_named_by_its_folder_not_its_path(tmp_path):
    pipe = dummy_wan_pipeline(num_layers=1, head_dim=HEAD_DIM, patch_size=(1, 1, 1))
    pipe.set_progress_bar_config(disable=True)
    pipe.register_to_config(_name_or_path=str(tmp_path / "models" / "my-wan"))  # as from_pretrained of a folder
    measured = measure(pipe, PROMPT, methods=("radial",), call={**CALL, "num_inference_steps": 1}, block_size=16,
                       preset=None)
    assert measured.model == "my-wan"
    pipe.register_to_config(_name_or_path="Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert measure(pipe, PROMPT, methods=("radial",), call={**CALL, "num_inference_steps": 1}, block_size=16,
                   preset=None).model == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # a hub id is kept


def test_arguments_are_checked_before_generating(random_pipe):
    with pytest.raises(ValueError, match="methods"):
        measure(random_pipe, PROMPT, methods=("dense",), call=CALL)
    with pytest.raises(ValueError, match="steps"):
        measure(random_pipe, PROMPT, steps=(0, 5), call=CALL)
    with pytest.raises(ValueError, match="prompt"):
        measure(random_pipe, [], call=CALL)
    with pytest.raises(ValueError, match="target"):
        calibrate(random_pipe, PROMPT, target=-1, call=CALL)
    assert not fastdit.is_patched(random_pipe)


@pytest.mark.parametrize("kwargs, match", [({"target": float("nan")}, "target must be a finite number"),
                                           ({"metric": "psnr"}, "metric must be one of"),
                                           ({"allocation": "all"}, "allocation must be one of")])
def test_target_and_metric_are_checked_before_the_measuring_generation(random_pipe, kwargs, match):
    calls = []
    handle = random_pipe.transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=match):
            calibrate(random_pipe, PROMPT, call=CALL, **kwargs)
    finally:
        handle.remove()
    assert calls == []


def test_an_existing_patch_is_refused_not_dropped(random_pipe):
    fastdit.apply(random_pipe, "grat", block_size=16)
    try:
        with pytest.raises(ValueError, match=r"patched by fastdit \(grat\).*fastdit.remove"):
            calibrate(random_pipe, PROMPT, call=CALL)
        assert patch_config(random_pipe).method == "grat"
    finally:
        fastdit.remove(random_pipe)
