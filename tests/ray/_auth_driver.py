"""A local cluster started by ``RayBackend()`` is not an open door (its own process, so that
it starts and stops its own Ray instance).

Run as ``python -m tests.ray._auth_driver``. Starts ``RayBackend(num_cpus=1)``, lists the TCP
ports its Ray processes listen on (from ``/proc``: the descendants of this process), tries to
join the cluster from a client without the token and with it, shuts down, and reports the
environment before and after and what is in ``$HOME`` (the test points it at an empty
directory, so no token file can be found there). Prints one JSON line.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from runtime_ray import RayBackend
from runtime_ray._local_auth import AUTH_MODE, AUTH_TOKEN, client_env

_JOIN = (
    "import os, sys, ray\n"
    "ray.init(address=sys.argv[1])\n"
    "print('JOINED', ray.get(ray.remote(lambda: os.getpid()).remote()))\n"
)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(root: int) -> set[int]:
    kids, out, todo = _children(), set(), [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def _address(hex_addr: str) -> str:
    """``/proc/net/tcp*`` notation (little-endian 32-bit words, hex port) -> ``ip:port``."""
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    return f"[{ip}]:{int(port_hex, 16)}" if ip.version == 6 else f"{ip}:{int(port_hex, 16)}"


def listening(pids: set[int]) -> list[str]:
    """``ip:port`` of every TCP socket in LISTEN state held by ``pids``."""
    inodes = _socket_inodes(pids)
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                out.append(_address(fields[1]))
    return sorted(out)


def _join(address: str, env: dict[str, str]) -> dict[str, object]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _JOIN, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    tail = proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    return {
        "rc": proc.returncode,
        "joined": "JOINED" in proc.stdout,
        "auth_error": "InvalidAuthToken" in proc.stderr or "Authentication" in proc.stderr,
        "s": round(time.monotonic() - start, 1),
        "last_line": tail[0] if tail else "",
    }


def main() -> int:
    keys = (AUTH_MODE, AUTH_TOKEN)
    before = {k: os.environ.get(k) for k in keys}
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base.pop("RAY_ADDRESS", None)
    with RayBackend(num_cpus=1) as backend:
        during = {k: os.environ.get(k) is not None for k in keys}
        address = backend.address
        ports = listening(_descendants(os.getpid()))
        token_env = client_env()
        tokenless = _join(address, {**base, AUTH_MODE: "disabled"})
        with_token = _join(address, {**base, **token_env})
    report = {
        "address": address,
        "listening": ports,
        "env_before": before,
        "env_set_during": during,
        "env_after": {k: os.environ.get(k) for k in keys},
        "tokenless": tokenless,
        "with_token": with_token,
        "home_files": sorted(str(p.relative_to(Path.home())) for p in Path.home().rglob("*")),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
