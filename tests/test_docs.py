"""Documents and docstrings refer only to files inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Paths that exist only outside the repository (the team's notes, a workspace).
OUTSIDE = re.compile(r"shared/design|\.\./shared|/work/")


def test_no_document_points_outside_the_repository() -> None:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for package in ("runtime", "runtime_ray", "ppo", "rlrun", "benchmarks", "configs"):
        files += sorted((REPO / package).rglob("*.py")) + sorted((REPO / package).rglob("*.toml"))
    offenders = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []
