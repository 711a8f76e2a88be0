"""docs/configuration.md lists every setting with its variable, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

from memvault.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| `(MEMVAULT_\w+)` \|", DOC.read_text("utf-8"), re.MULTILINE)
    return dict(rows)


def test_every_setting_is_documented_with_its_variable() -> None:
    rows = documented()
    missing = [name for name in Settings.model_fields if name not in rows]
    assert not missing, f"add these settings to docs/configuration.md: {missing}"
    for name, variable in rows.items():
        assert variable == f"MEMVAULT_{name.upper()}", name


def test_the_doc_lists_no_setting_that_does_not_exist() -> None:
    stale = sorted(set(documented()) - set(Settings.model_fields))
    assert not stale, f"docs/configuration.md lists settings that no longer exist: {stale}"
