"""values.yaml is documented key by key, and the README's table is generated from it."""

from __future__ import annotations

import hashlib
import re

import pytest

from tests.chart import values_doc
from tests.chart.chartlib import SCHEMAS


def test_every_values_key_has_a_comment() -> None:
    keys = values_doc.documented_keys(values_doc.VALUES.read_text())
    assert len(keys) > 50
    assert all(k.description for k in keys)


def test_an_undocumented_key_is_caught() -> None:
    text = values_doc.VALUES.read_text() + "\nsneaky: true\n"
    with pytest.raises(values_doc.UndocumentedKeyError, match="sneaky"):
        values_doc.documented_keys(text)


def test_the_readme_values_table_matches_values_yaml() -> None:
    assert values_doc.readme_table() == values_doc.table(), (
        "charts/redrive/README.md is out of date: run "
        "`.venv/bin/python -m tests.chart.values_doc --write`")


def test_copied_schemas_match_the_checksums_in_sources_md() -> None:
    sources = (SCHEMAS / "SOURCES.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `[^`]+` \| (\d+) \| `([0-9a-f]{64})` \|$", sources, re.M)
    assert len(rows) == 10
    for name, size, digest in rows:
        [path] = [p for p in SCHEMAS.rglob(name)]
        data = path.read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(size), digest), name
