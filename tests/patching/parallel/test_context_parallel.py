"""fastdit under diffusers' context parallelism: 2 gloo processes on the CPU (issue 14).

One launch of two ranks (``worker.py``) runs every case; each test reads its case's numbers. A case compares
fastdit's output on a context-parallel model with fastdit's single-process output on the same weights and
inputs (fp32). Grids whose token count is odd split unevenly (diffusers' "anything" variants).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdit import TokenGrid
from fastdit.patching.parallel import hand_back, parallel_attention
from fastdit.patching.parallel.launch import parse_parallel
from fastdit.kernels.common import merge_partial
from fastdit.patching.parallel.shards import model_positions, split_sizes

WORKER = Path(__file__).with_name("worker.py")
EVEN_WAN, ODD_WAN = [4, 4, 8], [5, 5, 7]  # 128 tokens; 175 tokens (87 + 88)
ODD_FLUX = [1, 9, 11]  # 99 image tokens (50 + 49) and 7 text tokens (4 + 3)
ODD_VIDEO = [5, 5, 7]  # 175 video tokens (88 + 87)

CASES = {
    # Wan: dense with even shards (diffusers' plain variants), sparse methods on an uneven split
    "wan-ulysses-dense": {"family": "wan", "kind": "ulysses", "method": "dense", "grid": EVEN_WAN,
                          "anything": False},
    "wan-ulysses-radial": {"family": "wan", "kind": "ulysses", "method": "radial", "grid": ODD_WAN,
                           "apply_first": True, "remove": True},
    "wan-ulysses-pyramid": {"family": "wan", "kind": "ulysses", "method": "pyramid", "grid": ODD_WAN},
    # 3 heads on 2 ranks: diffusers pads the heads (2 + 1); PSA's per-head samples follow the global heads
    "wan-ulysses-pyramid-3-heads": {"family": "wan", "kind": "ulysses", "method": "pyramid", "grid": ODD_WAN,
                                    "heads": 3},
    "wan-ring-dense": {"family": "wan", "kind": "ring", "method": "dense", "grid": ODD_WAN, "apply_first": True},
    "wan-ring-radial": {"family": "wan", "kind": "ring", "method": "radial", "grid": ODD_WAN},
    "wan-ring-pyramid": {"family": "wan", "kind": "ring", "method": "pyramid", "grid": EVEN_WAN,
                         "anything": False, "apply_first": True, "remove": True},
    "wan-ring-grat": {"family": "wan", "kind": "ring", "method": "grat", "grid": EVEN_WAN},
    # a calibration's per-head settings (two pyramid bands and a dense head), which Ulysses slices per rank
    "wan-ulysses-per-head": {"family": "wan", "kind": "ulysses", "method": "per-head", "grid": EVEN_WAN,
                             "heads": 3},
    "wan-ring-per-head": {"family": "wan", "kind": "ring", "method": "per-head", "grid": EVEN_WAN, "heads": 3},
    # Flux: joint attention, text before the image, split separately from it
    "flux-ulysses-dense": {"family": "flux", "kind": "ulysses", "method": "dense", "grid": ODD_FLUX},
    "flux-ulysses-pyramid": {"family": "flux", "kind": "ulysses", "method": "pyramid", "grid": ODD_FLUX,
                             "apply_first": True},
    "flux-ring-dense": {"family": "flux", "kind": "ring", "method": "dense", "grid": ODD_FLUX,
                        "apply_first": True},
    "flux-ring-pyramid": {"family": "flux", "kind": "ring", "method": "pyramid", "grid": ODD_FLUX},
    # generic-path families with diffusers' own _cp_plan: ChronoEdit (video), Qwen-Image (joint attention, the
    # prompt before the image, under a padded prompt mask, which ring refuses) and FLUX.2 (joint, unpadded)
    "chronoedit-ulysses-pyramid": {"family": "chronoedit", "kind": "ulysses", "method": "pyramid",
                                   "grid": ODD_VIDEO},
    "chronoedit-ring-radial": {"family": "chronoedit", "kind": "ring", "method": "radial", "grid": ODD_VIDEO,
                               "apply_first": True},
    "qwen_image-ulysses-pyramid": {"family": "qwen_image", "kind": "ulysses", "method": "pyramid",
                                   "grid": ODD_FLUX, "apply_first": True, "remove": True},
    "flux2-ring-pyramid": {"family": "flux2", "kind": "ring", "method": "pyramid", "grid": ODD_FLUX},
    # MiniMax-H3: its plan splits the packed [text | keyframe | audio | video] sequence in one piece (ring is left
    # out: its unpatched modules need a backend that returns the log-sum-exp, which CPU's native one doesn't)
    "minimax_h3-ulysses-pyramid": {"family": "minimax_h3", "kind": "ulysses", "method": "pyramid",
                                   "grid": ODD_VIDEO},
    # training: diffusers' Ulysses backward calls fastdit's (the forward again, differentiated)
    "wan-ulysses-radial-backward": {"family": "wan", "kind": "ulysses", "method": "radial", "grid": EVEN_WAN,
                                    "train": True},
    # diffusers' UNet processor calls SDPA itself: under a user's cp_plan fastdit refuses instead of
    # letting each rank attend its own tokens
    "unet-refused": {"family": "unet", "error": True},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("cp")
    cases, out = folder / "cases.json", folder / "results.json"
    cases.write_text(json.dumps(CASES))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[3])}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", str(folder / "init"), str(out),
                               str(cases)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not (c.get("error") or c.get("train"))])
def test_context_parallel_output_equals_single_process(results, name):
    case, result = CASES[name], results[name]
    assert "error" not in result, result.get("trace", result.get("error"))
    assert result["diff"] <= 1e-5, result
    if case["method"] == "dense":
        assert result["dense_calls"] > 0 and not result["densities"]
    else:  # the sparse kernel really ran, on a layout that drops blocks
        assert result["densities"] and max(result["densities"]) < 1, result
    if case.get("remove") and case["kind"] == "ulysses":  # the stock processors got the parallel config back
        assert result["removed_diff"] <= 1e-5, result
    elif case.get("remove"):  # ... and with it diffusers' own refusal: its native backend has no ring attention
        assert "return_lse" in result["removed_error"], result


def test_ulysses_gradients_equal_single_process(results):
    result = results["wan-ulysses-radial-backward"]
    assert "error" not in result, result.get("trace")
    assert result["scale"] > 0 and result["diff"] <= 1e-5 * max(1.0, result["scale"]), result


def test_processor_without_context_parallelism_in_diffusers_is_refused(results):
    error = results["unet-refused"].get("error") or ""
    assert "ValueError" in error and "calls SDPA directly" in error, results["unet-refused"]


# ---------------------------------------------------------------- single-process pieces


class _Config:
    def __init__(self, ring: int, ulysses: int) -> None:
        self.context_parallel_config = type("CP", (), {"ring_degree": ring, "ulysses_degree": ulysses})()


class _Processor:
    model_name, layer = "transformer", 3
    original = None
    engine = type("Engine", (), {"observer": None})()


def test_ring_and_ulysses_together_are_refused():
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="ring_degree=2 together with ulysses_degree=2"):
        parallel_attention(_Processor(), q, q, q, None, 0, "after", True, _Config(2, 2))


def test_calibration_under_context_parallelism_is_refused():
    processor = _Processor()
    processor.engine = type("Engine", (), {"observer": print})()
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="calibrate without context parallelism"):
        parallel_attention(processor, q, q, q, None, 0, "after", True, _Config(1, 2))


def test_ring_refuses_masks_and_training():
    from fastdit.patching.parallel.ring import ring_attention

    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="attention mask"):
        ring_attention(_Processor(), q, q, q, torch.ones(1, 4, dtype=torch.bool), 0, "after", _Config(2, 1))
    trained = q.clone().requires_grad_()
    with pytest.raises(ValueError, match="training under ring attention"):
        ring_attention(_Processor(), trained, q, q, None, 0, "after", _Config(2, 1))


def test_merge_partial_equals_attention_over_both_key_sets_and_ignores_empty_rows():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=g) for _ in range(3))
    scale = 8**-0.5

    def part(keys: slice):
        logits = q @ k[:, :, keys].transpose(-1, -2) * scale
        return torch.softmax(logits, -1) @ v[:, :, keys], torch.logsumexp(logits, -1)

    out, lse = merge_partial(*part(slice(0, 2)), *part(slice(2, 5)))
    whole = part(slice(0, 5))
    torch.testing.assert_close(out, whole[0])
    torch.testing.assert_close(lse, whole[1])
    empty = (torch.zeros_like(q), torch.full(lse.shape, float("-inf")))
    out2, lse2 = merge_partial(*empty, *whole)
    torch.testing.assert_close(out2, whole[0])
    torch.testing.assert_close(lse2, whole[1])


def test_ring_sends_and_computes_only_the_chunks_a_rank_keeps_blocks_of():
    from fastdit.methods import build_layout
    from fastdit.patching.parallel.ring import _Ring, _SparseRing
    from fastdit.runtime.engine import Decision

    grid = TokenGrid(4, 4, 8)
    layout = build_layout("grat", grid, block_size=16, mode="surround", radius=0)  # tiles attend themselves
    decision = Decision(0, "transformer", grid.num_tokens, grid, grid, None, order=layout.order, layout=layout)
    ring = _SparseRing(_Ring(None, 2, 0), decision, torch.arange(grid.num_tokens), [64, 64])
    assert ring.needs.tolist() == [[True, False], [False, True]]
    assert sum(ring.send_counts) == 64 and sum(ring.recv_counts) == len(ring.slots)
    radial = build_layout("radial", grid, block_size=16)  # frames 0-1 on rank 0, 2-3 on rank 1
    decision = Decision(0, "transformer", grid.num_tokens, grid, grid, None, order=radial.order, layout=radial)
    needs = _SparseRing(_Ring(None, 2, 0), decision, torch.arange(128), [64, 64]).needs
    assert needs[1, 0]  # Wan's radial keeps key frame 0 for every query frame (the attention sink)


def test_model_positions_put_each_ranks_text_and_video_where_the_model_has_them():
    # rank 0: 2 text + 3 video, rank 1: 1 text + 2 video; model order: 3 text then 5 video, or the reverse
    before = model_positions([2, 1], [3, 2], "before")
    assert before.tolist() == [0, 1, 3, 4, 5, 2, 6, 7]
    after = model_positions([2, 1], [3, 2], "after")
    assert after.tolist() == [0, 1, 2, 5, 6, 3, 4, 7]  # each rank: its video, then its text
    assert split_sizes(7, 2) == [4, 3] and split_sizes(8, 2) == [4, 4]


def test_remove_hands_the_parallel_config_back():
    class Stock:
        _parallel_config = None
        _attention_backend = None

    ours, stock = _Processor(), Stock()
    ours._parallel_config = "config"
    hand_back(ours, stock)
    assert stock._parallel_config == "config" and stock._attention_backend is None


def test_parse_parallel():
    assert parse_parallel("ulysses=4") == ("ulysses", 4)
    assert parse_parallel("ring=2") == ("ring", 2)
    for bad in ("tensor=2", "ring=1", "ulysses", ""):
        with pytest.raises(ValueError, match="ulysses=N or ring=N"):
            parse_parallel(bad)
