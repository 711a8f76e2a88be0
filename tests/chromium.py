"""Headless Chromium for the web UI tests: Debian's browser, driven by Playwright.

Nothing is downloaded at run time: Playwright launches the system Chromium at `CHROMIUM`
(`make test` installs it with apt-get when it can). Without it the browser tests skip, unless
MEMVAULT_REQUIRE_CHROMIUM=1 (CI), which makes them fail, as MEMVAULT_REQUIRE_POSTGRES does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def _chromium_missing() -> str | None:
    """Why the browser tests cannot run, or None when they can."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or make test as root)"
    return None


def require_chromium() -> Path:
    """The browser's path; skips without it, or fails when MEMVAULT_REQUIRE_CHROMIUM=1."""
    reason = _chromium_missing()
    if reason is None:
        return CHROMIUM
    if os.environ.get("MEMVAULT_REQUIRE_CHROMIUM") == "1":
        pytest.fail(reason + " (MEMVAULT_REQUIRE_CHROMIUM=1)", pytrace=False)
    pytest.skip(reason + " (set MEMVAULT_REQUIRE_CHROMIUM=1 to fail instead)")
