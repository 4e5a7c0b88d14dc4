"""``tools/diffusers_suite.py`` and its pytest plugin: the plugin patches every model a test suite builds,
and the runner reads outcomes per mode and lists what passes only unpatched."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three pytest processes

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import diffusers_suite  # noqa: E402

# A stand-in for one of diffusers' model test files: it builds a Wan transformer the way diffusers' tests do
# (the class, random weights) and checks what the plugin did to it.
SUITE = '''
import torch
from diffusers import WanTransformer3DModel

import fastdit


def _model():
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=32, ffn_dim=16, num_layers=1,
                                 rope_max_seq_len=32)


def test_patched_as_asked():
    import os
    assert fastdit.is_patched(_model()) == (os.environ["FASTDIT_SUITE_MODE"] != "unpatched")


def test_forward():
    with torch.no_grad():
        _model()(hidden_states=torch.randn(1, 4, 4, 16, 16), timestep=torch.tensor([500]),
                 encoder_hidden_states=torch.randn(1, 3, 16))


def test_fails_only_when_sparse():
    import os
    assert os.environ["FASTDIT_SUITE_MODE"] != "sparse", "a numeric comparison"
'''


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    checkout = tmp_path_factory.mktemp("checkout")
    (checkout / "tests").mkdir()
    (checkout / "tests" / "test_tiny_wan.py").write_text(textwrap.dedent(SUITE))
    return {mode: diffusers_suite.run_file(checkout, "tests/test_tiny_wan.py", mode, timeout=600, select=None)
            for mode in diffusers_suite.MODES}


def test_the_plugin_patches_every_model_the_suite_builds(report):
    assert all(report[mode]["tests"]["test_tiny_wan::test_patched_as_asked"]["outcome"] == "passed"
               for mode in diffusers_suite.MODES)
    assert report["unpatched"]["attention"] == {"sparse": 0, "dense": 0}
    assert report["dense"]["attention"]["sparse"] == 0 < report["dense"]["attention"]["dense"]
    assert report["sparse"]["attention"]["dense"] == 0 < report["sparse"]["attention"]["sparse"]


def test_differences_are_the_tests_that_pass_only_unpatched(report):
    found = diffusers_suite.differences(report)
    assert found["dense"] == []
    assert [(d["test"], d["outcome"]) for d in found["sparse"]] == [("test_tiny_wan::test_fails_only_when_sparse",
                                                                     "failed")]
    assert "a numeric comparison" in found["sparse"][0]["message"]
    body = diffusers_suite.markdown(dict(diffusers="x", checkout="diffusers@abc", cpu_compile=False,
                                         sparse_options={"method": "grat"}, files={"tests/test_tiny_wan.py": report}))
    assert "test_tiny_wan.py [sparse] `test_tiny_wan::test_fails_only_when_sparse`: failed" in body
