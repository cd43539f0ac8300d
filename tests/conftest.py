"""Shared test setup: quiet TensorFlow, the real BreakHis sample location."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BREAKHIS_SAMPLE = REPO_ROOT.parent / "shared" / "breakhis-sample"


@pytest.fixture(scope="session")
def breakhis_sample() -> pathlib.Path:
    """The real 345-image BreakHis sample beside the repository; skips the test when absent."""
    if not BREAKHIS_SAMPLE.is_dir():
        pytest.skip(f"real BreakHis sample not found at {BREAKHIS_SAMPLE}")
    return BREAKHIS_SAMPLE
