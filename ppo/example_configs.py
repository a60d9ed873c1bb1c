"""Example configurations shipped with the package (``ppo/configs/<name>.toml``).

``load_config("demo")`` (and ``python -m rlrun --config demo``) finds them by name, so they work
from an installed package as well as from a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_config_names", "example_config_path"]


def _directory() -> Path:
    return Path(str(resources.files("ppo") / "configs"))


def example_config_names() -> list[str]:
    """The names of the shipped example configs, sorted."""
    return sorted(p.stem for p in _directory().glob("*.toml"))


def example_config_path(name: str) -> Path | None:
    """The file of the example config called ``name`` (without ``.toml``), or None."""
    path = _directory() / f"{name}.toml"
    return path if "/" not in name and path.is_file() else None
