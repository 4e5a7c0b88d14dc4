"""The README's model table is ``fastdit info --models``, made from the families' own data; every class fastdit
refuses is named beside it with the refusal."""

from __future__ import annotations

from pathlib import Path

from fastdit.cli.info import models_table
from fastdit.patching.families import UNSUPPORTED, families

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_one_the_families_make():
    text = README.read_text()
    table = text[text.index("| family | model classes |"):text.index("**Not supported**")].strip() + "\n"
    assert table == models_table(), "README's model table is stale: paste `fastdit info --models` there"


def test_every_family_describes_itself():
    for name, family in families().items():
        assert family.models and family.sparsified and family.grid_rule, name


def test_every_refused_class_is_named_in_the_readme():
    text = README.read_text()
    refused = text[text.index("**Not supported**"):]
    refused = refused[:refused.index("\n\n")]  # its paragraph
    assert all(f"`{cls}`" in refused for cls in UNSUPPORTED)
