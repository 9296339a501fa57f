"""External tools the tests need, installed by ``make tools`` (scripts/install-tools.sh)."""

from __future__ import annotations

import shutil

import pytest


def require(name: str) -> str:
    """The path of ``name``; fails (never skips) the test when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make tools` "
                    "(scripts/install-tools.sh installs Debian's prometheus, chromium and "
                    "chromium-driver packages)")
    return path
