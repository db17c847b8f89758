"""Documents generated from the code stay in step with it."""

from __future__ import annotations

from dataclasses import fields

from hfcelery.config import HfConfig
from hfcelery.config_reference import field_docs, reference
from tests.conftest import ROOT


def test_configuration_reference_is_generated_from_the_code() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == reference(), (
        "run: python -m hfcelery.config_reference > docs/configuration.md"
    )


def test_every_setting_is_documented() -> None:
    docs = field_docs()
    assert [f.name for f in fields(HfConfig) if not docs.get(f.name)] == []
