"""The README's documented alternatives run as written: training from code on Ray and on the
in-process backend, and the in-process command line. Each runs in an empty scratch directory
(the run directory ``runs/demo`` lands there; ``"demo"`` is the config shipped in the package);
the command line gets a shorter run appended (``trainer.total_steps``), the code blocks run
unchanged."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests._ray_session import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _section(heading: str) -> str:
    return README.split(heading, 1)[1].split("\n## ", 1)[0]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section("## Training from code"), re.S)


def _scratch(tmp_path: Path) -> Path:
    return tmp_path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def _code_block(backend: str) -> str:
    (code,) = [b for b in _blocks("python") if f"{backend}()" in b]
    return code


def _check_run(cwd: Path, steps: int) -> None:
    rows = [json.loads(x) for x in (cwd / "runs/demo/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == steps
    summary = json.loads((cwd / "runs/demo/summary.json").read_text())
    assert summary["status"] == "completed"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_from_code_in_process_runs_as_written(tmp_path: Path) -> None:
    cwd = _scratch(tmp_path)
    code = _code_block("InProcessBackend")
    proc = _run([sys.executable, "-c", code], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(cwd, 50)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_from_code_on_ray_runs_as_written(tmp_path: Path) -> None:
    cwd = _scratch(tmp_path)
    code = _code_block("RayBackend")
    proc = _run([sys.executable, "-c", code], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(cwd, 50)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_in_process_command_line_runs_as_written(tmp_path: Path) -> None:
    cwd = _scratch(tmp_path)
    (command,) = [
        line for b in _blocks("bash") for line in b.splitlines() if "--backend inprocess" in line
    ]
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "rlrun"]
    proc = _run([sys.executable, *argv[1:], "trainer.total_steps=5"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(cwd, 5)
