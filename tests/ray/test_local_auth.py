"""No open door: a local cluster started by ``RayBackend()`` refuses clients without its token
and leaves the environment as it found it (point 7 of issue 9).

Ray binds its servers to every interface (there is no loopback-only mode), so the listening
addresses are checked to be the ones the token must guard: the test asserts the GCS port is
among them and that a client without the token is refused there.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._ray_session import REPO_ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_local_cluster_keeps_token_auth_and_restores_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ray._auth_driver"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    gcs_port = int(report["address"].rsplit(":", 1)[1])
    listening = report["listening"]
    assert gcs_port in {int(a.rsplit(":", 1)[1]) for a in listening}, listening
    exposed = [
        a
        for a in listening
        if not ipaddress.ip_address(a.rsplit(":", 1)[0].strip("[]")).is_loopback
    ]
    assert exposed, "expected Ray to listen beyond loopback; then the token is what guards it"

    tokenless = report["tokenless"]
    assert not tokenless["joined"]
    assert tokenless["rc"] != 0
    assert tokenless["auth_error"], tokenless
    assert report["with_token"]["joined"], report["with_token"]

    assert report["env_before"] == {"RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN": None}
    assert report["env_set_during"] == {"RAY_AUTH_MODE": True, "RAY_AUTH_TOKEN": True}
    assert report["env_after"] == report["env_before"]
    assert report["home_files"] == []  # the token never touched $HOME
