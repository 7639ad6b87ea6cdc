"""Shared fixtures. Real sample data lives in ``../shared/data`` beside the checkout; tests that need it skip
with a reason when it is absent (a user's fresh clone does not have it)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
POSETRACK18_SAMPLE = SHARED_DATA / "posetrack18_sample"
VIDEO_DIR = SHARED_DATA / "video"
REFERENCE_DIR = SHARED / "reference"


def require(path: Path) -> Path:
    """Skip the calling test unless ``path`` exists."""
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


@pytest.fixture
def posetrack18_sample() -> Path:
    return require(POSETRACK18_SAMPLE)


@pytest.fixture
def reference_dir() -> Path:
    return require(REFERENCE_DIR)


@pytest.fixture
def video_dir() -> Path:
    return require(VIDEO_DIR)
