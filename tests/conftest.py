"""Shared test fixtures: the ../shared assets beside the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test (clear reason) only when ../shared is absent and not in CI."""
    p = SHARED.joinpath(*parts)
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            raise RuntimeError(f"../shared is missing in CI (looked for {SHARED})")
        pytest.skip(f"../shared assets not found at {SHARED}")
    if not p.exists():
        raise FileNotFoundError(f"expected shared asset missing: {p}")
    return p


@pytest.fixture
def shared():
    return shared_path
