"""Shared fixtures. Real sample data lives in ``../shared/data`` beside the checkout; tests that need it skip
with a reason when it is absent (a user's fresh clone does not have it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis profiles (README, "Tests and CI"). A plain local run keeps exploring: each run draws new examples and
# replays earlier failures from .hypothesis/. CI starts from a clean clone, so a random draw there would make a
# submission pass or fail by chance; with CI set, the examples are derandomised (a fixed sequence per test, no
# database) and the same commit always gets the same answer. ``fresh`` draws new examples with no database, for
# hunting rare failures (scripts/hypothesis_stress.py runs every property test many times under it).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("fresh", database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

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
