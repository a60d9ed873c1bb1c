"""Bad input at the command line: one ``error:`` line, exit status 2, the run directory left as
it was (``python -m rlrun`` in this process on the in-process backend; a subprocess where the
process itself matters: the warning-free ``--help`` and Ctrl-C)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppo.metrics import read_metrics
from rlrun import main
from tests.trainer_support import TINY

REPO = Path(__file__).resolve().parents[1]


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory holding a user's file that no failure may touch."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")
    return run


def _argv(run_dir: Path, *extra: str) -> list[str]:
    return ["--backend", "inprocess", *TINY, f"trainer.run_dir={str(run_dir)!r}", *extra]


CASES: list[tuple[str, list[str], str]] = [
    ("unknown section", ["nope.x=1"], r"unknown config section"),
    ("unknown field", ["actor.nope=1"], r"actor\.nope"),
    ("wrong type", ["trainer.total_steps='many'"], r"trainer\.total_steps = 'many'.*type"),
    ("out of range", ["rollout.n=0"], r"rollout\.n = 0"),
    ("no '='", ["justtext"], r"'justtext' must look like section\.field=value"),
    ("after a flag", ["--verbose", "actor.lr=inf"], r"actor\.lr = inf.*finite"),
    ("through a scalar", ["data.task.name=x"], r"data\.task"),
    ("no cpus", ["resources.cpus_per_process=0"], r"resources\.cpus_per_process = 0"),
    ("unknown task", ["data.task='nope'"], r"data\.task = 'nope'.*registered tasks"),
    ("missing reward module", ["data.reward_fn='nomod:f'"], r"data\.reward_fn = 'nomod:f'"),
    ("rloo with n=1", ["algorithm.adv_estimator='rloo'", "rollout.n=1"], r"rollout\.n = 1"),
    ("prompt too long", ["data.max_prompt_len=3"], r"data\.max_prompt_len = 3.*BOS"),
    ("unknown backend", ["--backend", "nope"], r"--backend.*'nope'.*'ray', 'monarch', 'inprocess'"),
    ("unknown flag", ["--nope"], r"unrecognized arguments: --nope"),
]


@pytest.mark.parametrize(("case", "extra", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_status_2(
    case: str, extra: list[str], match: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(run_dir)
    try:
        status = main(_argv(run_dir, *extra))
    except SystemExit as exc:  # argparse's own exit (usage errors)
        status = int(str(exc.code))
    assert status == 2, case
    assert re.search(match, _error_line(capsys)), case
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json\n", r"train\.jsonl:1: invalid JSON"),
        ('{"prompt": "1+1="}\n', r"train\.jsonl:1: missing key 'answer'"),
        ("\n\n", r"data\.train_jsonl = .*no examples"),
    ],
)
def test_bad_jsonl_files(
    content: str, match: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(content)
    before = _snapshot(run_dir)
    assert main(_argv(run_dir, f"data.train_jsonl={str(data)!r}")) == 2
    assert re.search(match, _error_line(capsys))
    assert _snapshot(run_dir) == before


def test_malformed_toml_names_the_line(
    tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[trainer]\ntotal_steps = 3\nsave_freq = \n")
    assert main(["--config", str(config), *_argv(run_dir)]) == 2
    assert re.search(r"not valid TOML.*line 3", _error_line(capsys))


def test_run_dir_naming_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(_argv(target)) == 2
    assert re.search(r"notes\.txt.*existing file", _error_line(capsys))
    assert target.read_text() == "mine"


@pytest.mark.parametrize(
    ("reward", "match"),
    [
        ("nan_reward", r"reward for sample \d+ \(prompt '.*'\) is nan"),
        ("string_reward", r"reward for sample \d+ \(prompt '.*'\) is '1' of type str"),
        (
            "raising_reward",
            r"raised on sample \d+ \(prompt '.*'.*RuntimeError: reward server unreachable",
        ),
    ],
)
def test_bad_rewards_stop_before_training_on_them(
    reward: str, match: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(run_dir, f"data.reward_fn='tests.bad_rewards:{reward}'")) == 2
    line = _error_line(capsys)
    assert re.search(match, line), line
    assert "(role reward, rank 0)" in line
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == []
    assert (run_dir / "notes.txt").read_text() == "my notes"


def test_help_prints_no_warning() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "rlrun", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert "--log-format" in proc.stdout


@pytest.mark.timeout(180)
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(run_dir: Path) -> None:
    argv = [*_argv(run_dir, "trainer.total_steps=1000", "--log-format", "json")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlrun", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,  # one console line per step: a pipe nobody reads would fill
        stderr=subprocess.PIPE,
        text=True,
    )
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not latest.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert re.fullmatch(
        r"interrupted at step \d+; run the same command again to resume from "
        r".*checkpoints/step_\d+",
        lines[-1],
    ), lines[-1]
    # --log-format json: every log line is one JSON object, the library's lines included
    events = [json.loads(line)["event"] for line in lines[:-1]]
    assert "warm-up done" in events
    assert "checkpoint saved" in events
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert (run_dir / "config.toml").is_file()
    assert (run_dir / "notes.txt").read_text() == "my notes"
