"""Token authentication for the local Ray cluster that :class:`RayBackend` starts.

Ray's processes listen on every interface (GCS, raylets and workers bind wildcard addresses;
``ray.init`` offers no loopback-only mode), so the cluster must authenticate its clients. Ray
2.60 does that with a shared token (``RAY_AUTH_MODE=token``). For a cluster it starts,
:func:`enable_token_auth` switches that on with a random token held in ``RAY_AUTH_TOKEN``
(inherited by the cluster's processes; nothing is written to ``$HOME``), and
:meth:`AuthEnv.restore` puts both variables back as they were once the cluster is shut down.

What the user set wins: an explicit ``RAY_AUTH_MODE`` (``disabled`` included, with a warning)
and an existing ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` are respected. One token serves
the whole driver process, because Ray caches the first token it reads.
"""

from __future__ import annotations

import os
import secrets

import attrs
from ray._raylet import Config

from runtime.backend import get_logger

__all__ = ["AUTH_MODE", "AUTH_TOKEN", "AuthEnv", "client_env", "enable_token_auth"]

AUTH_MODE = "RAY_AUTH_MODE"
AUTH_TOKEN = "RAY_AUTH_TOKEN"
_AUTH_TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"

_log = get_logger(component="runtime_ray.auth")
_process_token: str | None = None


def _token() -> str:
    global _process_token
    if _process_token is None:
        _process_token = secrets.token_hex(32)
    return _process_token


@attrs.frozen
class AuthEnv:
    """The values ``RAY_AUTH_MODE`` and ``RAY_AUTH_TOKEN`` had before a local cluster started."""

    saved: dict[str, str | None]

    def restore(self) -> None:
        """Put the saved values back (unset where they were unset)."""
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reload_ray_config()


def _reload_ray_config() -> None:
    """Make this process's Ray core re-read ``RAY_AUTH_MODE`` (it reads its config once, at
    import; Ray's own token set-up does the same refresh)."""
    Config.initialize("")


def enable_token_auth() -> AuthEnv:
    """Turn on Ray's token authentication for a local cluster about to start (see the module
    docstring); returns what :meth:`AuthEnv.restore` needs to undo it."""
    saved = {key: os.environ.get(key) for key in (AUTH_MODE, AUTH_TOKEN)}
    mode = os.environ.get(AUTH_MODE)
    if mode is not None and mode.lower() != "token":
        _log.warning(
            "the local Ray cluster runs without authentication because RAY_AUTH_MODE is set: "
            "anyone who can reach this machine can run code on it; unset RAY_AUTH_MODE to "
            "keep token authentication on",
            RAY_AUTH_MODE=mode,
        )
        return AuthEnv(saved)
    os.environ[AUTH_MODE] = "token"
    if AUTH_TOKEN not in os.environ and _AUTH_TOKEN_PATH not in os.environ:
        os.environ[AUTH_TOKEN] = _token()
    _reload_ray_config()
    return AuthEnv(saved)


def client_env() -> dict[str, str]:
    """The variables another process needs to join a local cluster this process started
    (empty when authentication is off). Give them to that process's environment."""
    mode = os.environ.get(AUTH_MODE)
    if mode is None and _process_token is not None:
        mode = "token"
    if mode is None or mode.lower() != "token":
        return {}
    env = {AUTH_MODE: "token"}
    token = os.environ.get(AUTH_TOKEN, _process_token)
    if token is not None:
        env[AUTH_TOKEN] = token
    path = os.environ.get(_AUTH_TOKEN_PATH)
    if path is not None:
        env[_AUTH_TOKEN_PATH] = path
    return env
