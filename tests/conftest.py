"""Shared pytest fixtures. Keep each fixture small and documented; expensive ones are session-scoped."""

from __future__ import annotations

from pathlib import Path

import pytest

from levit_edge.fixture.cache import ensure_fixture
from levit_edge.fixture.common import DatasetPaths, FixtureResult

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def trained_fixture() -> tuple[DatasetPaths, FixtureResult, Path]:
    """The offline dataset + a LeViT trained on it: ``(dataset, result, checkpoint_path)``.

    Built with the library defaults on first use (about two minutes on 2 cores) and cached under
    ``<repo>/.cache/fixture/<key>/``, so later sessions, and concurrent ones, reuse it.
    """
    return ensure_fixture(REPO_ROOT / ".cache" / "fixture")
