"""The optional comfy-kitchen backend: chosen only for sol layouts it can run, clear refusals otherwise, and (when
comfy-kitchen is installed, which CI does not do) the same output as fastdit's sol. To run the comparison::

    pip install --no-deps --target /tmp/ck_site comfy-kitchen==0.2.40
    PYTHONPATH=.:/tmp/ck_site pytest tests/kernels/test_kitchen.py
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import fastdit
from fastdit import TokenGrid
from fastdit.kernels import backends, select_backend

INSTALLED = importlib.util.find_spec("comfy_kitchen") is not None


def _case(method: str = "sol", text: int = 19, batch: int = 1, **options):
    grid = TokenGrid(3, 8, 12, text_tokens=text)  # 288 video tokens: a partly padded 64-token block
    g = torch.Generator().manual_seed(3)
    pos = torch.arange(grid.num_tokens).float().view(1, 1, -1, 1)
    smooth = torch.sin(pos / 11 * torch.arange(1, 129) ** 0.5) * 3  # head dim 128: comfy-kitchen's only one
    q, k = (smooth + 0.5 * torch.randn(batch, 2, grid.num_tokens, 128, generator=g) for _ in range(2))
    v = torch.randn(batch, 2, grid.num_tokens, 128, generator=g)
    layout = fastdit.build_layout(method, grid, q=q[:1], k=k[:1], **options)
    return layout, [layout.to_layout_order(x) for x in (q, k, v)]


def test_auto_never_picks_kitchen_off_cuda_or_for_other_methods():
    for method in ("sol", "radial"):
        layout, (q, k, v) = _case(method)
        assert select_backend(q, k, v, layout).name == "torch"


def test_kitchen_refuses_other_methods_and_mixed_heads_by_name():
    layout, (q, k, v) = _case("radial")
    with pytest.raises(ValueError, match="Sol-Attn layouts only"):
        fastdit.attention(q, k, v, layout, backend="kitchen")
    reason = backends()["kitchen"].why_not(q, k, v, layout)
    assert "Sol-Attn layouts only" in reason


def test_sol_layout_records_its_rule():
    layout, _ = _case(tau=0.7, topk_ratio=0.0)
    assert layout.routed_by == ("sol", (("tau", 0.7), ("topk_ratio", 0.0), ("tail", True)))
    assert fastdit.build_layout("radial", TokenGrid(2, 8, 8)).routed_by is None


def test_kitchen_needs_head_dim_128():
    layout, (q, k, v) = _case()
    assert "head dim 64" in backends()["kitchen"].why_not(q[..., :64], k[..., :64], v[..., :64], layout)


@pytest.mark.skipif(INSTALLED, reason="comfy-kitchen is installed")
def test_missing_kitchen_is_a_clear_error():
    layout, (q, k, v) = _case()
    with pytest.raises(ValueError, match=r"pip install fastdit\[kitchen\]"):
        fastdit.attention(q, k, v, layout, backend="kitchen")


@pytest.mark.skipif(not INSTALLED, reason="comfy-kitchen is not installed (optional: pip install fastdit[kitchen])")
@pytest.mark.parametrize("options", [{"tau": 1.0}, {"tau": 0.3, "tail": False}, {"topk_ratio": 0.3}])
def test_kitchen_eager_equals_fastdit_sol(options):
    """On CPU comfy-kitchen runs its eager reference: the official output, next to fastdit's."""
    layout, (q, k, v) = _case(**options)
    mine = fastdit.attention(q, k, v, layout, backend="torch")
    theirs = fastdit.attention(q, k, v, layout, backend="kitchen")
    rows = layout.order.valid
    assert float((mine - theirs)[:, :, rows].norm() / theirs[:, :, rows].norm()) <= 1e-4


@pytest.mark.skipif(not INSTALLED, reason="comfy-kitchen is not installed (optional: pip install fastdit[kitchen])")
def test_kitchen_gives_no_lse():
    layout, (q, k, v) = _case()
    with pytest.raises(ValueError, match="no log-sum-exp"):
        fastdit.attention(q, k, v, layout, backend="kitchen", return_lse=True)


@pytest.mark.skipif(not torch.cuda.is_available() or not INSTALLED, reason="needs CUDA and comfy-kitchen")
def test_auto_picks_kitchen_for_sol_on_cuda():
    layout, (q, k, v) = _case()
    q, k, v = (x.cuda().bfloat16() for x in (q, k, v))
    assert select_backend(q, k, v, layout).name == "kitchen"
    out = fastdit.attention(q, k, v, layout)
    ref = fastdit.attention(q, k, v, layout, backend="triton")
    rows = layout.order.valid.cuda()
    cos = torch.nn.functional.cosine_similarity(out[:, :, rows].float().flatten(), ref[:, :, rows].float().flatten(), 0)
    assert float(cos) > 0.99  # comfy-kitchen's kernel scores in INT8


def test_the_comparison_case_is_sparse():
    layout, _ = _case()
    assert 0.3 < layout.density() < 0.9
