"""A toy-world model trained in a few seconds (the ``mini`` recipe), shared by the toy benchmarks' tests."""

from __future__ import annotations

import pytest

from fastdit.toy.recipe import RECIPES
from fastdit.toy.train_sample import Trainer


@pytest.fixture(scope="session")
def mini_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini")
    assert Trainer(out, RECIPES["mini"], progress=False).run()
    return out / "model"
