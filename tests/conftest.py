"""Shared fixtures: the golden vectors of ../shared/golden produced by the reference code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN = Path(os.environ.get("EMU_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden() -> Path:
    """Path of the golden-vector folder; skips the test where it is absent."""
    if not (GOLDEN / "README.md").is_file():
        pytest.skip(f"golden vectors not found at {GOLDEN} (the ../shared/golden folder beside the repo)")
    return GOLDEN
