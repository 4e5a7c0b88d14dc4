"""The fidelity benchmark: runs from the CLI, writes its three files, and measures what it says it measures."""

from __future__ import annotations

import json

import torch

from fastdit import TokenGrid
from fastdit.bench import fidelity
from fastdit.bench.attention_mass import dense_reference
from fastdit.bench.synthetic import rope_3d, smooth_field, video_qkv
from fastdit.cli import main


def test_quick_run_writes_json_markdown_and_plot(tmp_path):
    assert main(["bench", "fidelity", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "fidelity.json").read_text())
    assert (tmp_path / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "fidelity.md").read_text()
    assert "| method | setting |" in markdown and "fidelity.png" in markdown
    per_method: dict[str, int] = {}
    for row in data["results"]:
        per_method[row["method"]] = per_method.get(row["method"], 0) + 1
        assert 0 < row["density"] <= 1 and 0 <= row["recall_0"] <= row["recall"] <= 1 + 1e-9
        if row["density"] == 1:  # a full layout keeps every bit of mass and the exact output
            assert abs(row["recall"] - 1) < 1e-9 and row["rel_l2"] < 1e-5
    expected = {"radial", "grat surround", "grat crisscross", "grat lines", "pyramid", "svg2", "sol",
                *(f"vmoba {kind}" for kind in ("1d", "2d", "3d"))}
    assert set(per_method) == expected and min(per_method.values()) >= 4
    for profile in (data["temporal_profile"], data["spatial_profile"]):
        relative = profile["relative_to_uniform"]
        assert relative[0] > 1 > relative[-1]  # the synthetic attention prefers near keys
        assert abs(sum(profile["mass_share"]) - 1) < 1e-6
    assert {r["method"] for r in data["layout_cost"]} == {"pyramid", "vmoba 1d", "vmoba 2d", "vmoba 3d", "svg2",
                                                          "sol"}
    assert "--name" not in data["command"]


def test_recall_is_the_dense_mass_inside_the_layout():
    """Block-level recall from the chunked pass equals the token-level softmax mass under the block mask."""
    grid = TokenGrid(3, 8, 8)
    q, k, v, _ = video_qkv(grid, heads=2, head_dim=16, channels=8)
    setting = fidelity.Setting("pyramid", "pyramid", "test", {"thresholds": (0.3, 0.4, 0.5, 0.6)})
    layout = fidelity.setting_layout(setting, q, k, grid, 16)  # Gilbert order, a partial last block
    ref = dense_reference(q, k, v, grid, [layout.order])
    row = fidelity.evaluate(setting, layout, q, k, v, ref)

    order = layout.order
    qt, kt = order.to_order(q), order.to_order(k)
    probs = torch.softmax(qt[0] @ kt[0].transpose(-1, -2) * 16**-0.5 + torch.log(order.valid.float()), dim=-1)
    token_mask = (layout.to_level_map() >= 0).repeat_interleave(16, 1).repeat_interleave(16, 2)
    valid = order.valid.view(1, -1, 1)
    expected = float((probs * token_mask * valid).sum() / (probs * valid).sum())
    assert abs(row["recall"] - expected) < 1e-5
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ref.out, dense, atol=1e-5, rtol=1e-5)


def test_recall_of_a_per_head_order_is_the_dense_mass_on_its_token_pairs():
    """SVG2's layout lives in per-head query and key orders: its recall is the dense mass on the token pairs its
    permuted blocks hold, and its output is the masked attention over them."""
    grid = TokenGrid(3, 8, 8)
    q, k, v, _ = video_qkv(grid, heads=2, head_dim=16, channels=8)
    setting = fidelity.Setting("svg2", "svg2", "test", {"top_p": 0.7, "q_clusters": 4, "k_clusters": 12})
    layout = fidelity.setting_layout(setting, q, k, grid, 16)
    ref = dense_reference(q, k, v, grid, [layout.head_order])
    row = fidelity.evaluate(setting, layout, q, k, v, ref)
    S = grid.num_tokens
    heads = layout.head_order
    slot_q = torch.empty_like(heads.query_source[0]).scatter_(1, heads.query_source[0], torch.arange(S).expand(2, -1))
    slot_k = torch.empty_like(heads.key_source[0]).scatter_(1, heads.key_source[0], torch.arange(S).expand(2, -1))
    blocks = layout.to_dense_block_mask()
    token_mask = blocks[torch.arange(2)[:, None, None], slot_q[:, :, None] // 16, slot_k[:, None, :] // 16]
    probs = torch.softmax(q[0] @ k[0].transpose(-1, -2) * 16**-0.5, dim=-1)
    assert 0.1 < row["density"] < 0.9
    assert abs(row["recall"] - float((probs * token_mask).sum() / S / 2)) < 1e-5
    masked = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=token_mask[None])
    assert abs(row["rel_l2"] - float((masked - ref.out).norm() / ref.out.norm())) < 1e-4


def test_rope_depends_on_relative_position_only():
    grid = TokenGrid(4, 5, 6)
    x = torch.randn(1, 16)
    rotated = rope_3d(x.expand(grid.num_tokens, -1), grid)
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (4, 5, 6)), indexing="ij"), -1).view(-1, 3)
    shift = torch.tensor([1, 2, 3])
    index = lambda c: int((c[0] * 5 + c[1]) * 6 + c[2])  # noqa: E731
    a, b = coords[0], coords[0] + shift
    c, d = torch.tensor([2, 1, 1]), torch.tensor([2, 1, 1]) + shift
    assert torch.allclose(rotated[index(a)] @ rotated[index(b)], rotated[index(c)] @ rotated[index(d)], atol=1e-5)
    assert torch.allclose(rotated.norm(dim=-1), x.norm().expand(grid.num_tokens), atol=1e-5)


def test_smooth_field_correlation_falls_with_distance():
    field = smooth_field((8, 16, 16), 64, (2.0, 2.0, 2.0), torch.Generator().manual_seed(0))
    assert field.shape == (8, 16, 16, 64)
    corr = [float((field[:, :, : 16 - d] * field[:, :, d:]).mean()) for d in (0, 1, 3, 8)]
    assert corr[0] > corr[1] > corr[2] > corr[3] and abs(corr[0] - 1) < 0.05 and abs(corr[3]) < 0.2
