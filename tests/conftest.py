"""Shared test fixtures: the ../shared assets beside the repository root, and the settings that keep results
independent of the machine and of what else runs on it.

* PyTorch runs every test with one intra-op thread (restored afterwards, whatever the test set): float results do not
  depend on the core count, and two OpenMP threads do not spin-wait against each other on a busy 2-core machine
  (several times slower there). A test that measures something at another thread count sets it itself.
* Hypothesis runs derandomised (the same examples on every run and machine) and without deadlines or the
  "too slow" health check, which measure wall time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

settings.register_profile("posekit", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("POSEKIT_HYPOTHESIS_PROFILE", "posekit"))


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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts with one PyTorch thread; the count in force before it is restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
