"""The house's line length (``[tool.ruff] line-length`` in pyproject.toml) holds in every Python file we ship or run,
so that a file reads the same in a terminal, a review and the docs."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("src", "scripts", "benchmarks", "tests")


def test_python_lines_fit_the_configured_length():
    limit = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"]
    files = [path for folder in FOLDERS for path in sorted((REPO / folder).rglob("*.py"))]
    assert files, "no Python files found: the test is looking in the wrong place"
    too_long = [f"{path.relative_to(REPO)}:{number} ({len(line)} characters)"
                for path in files
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                if len(line) > limit]
    assert not too_long, f"lines over {limit} characters:\n" + "\n".join(too_long)
