"""The mechanical public surface and the "core never imports ray" boundary, tested at runtime.

Static twins: import-linter (pyproject.toml) and ``mypy --config-file mypy-core.ini``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ray_available

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "runtime_ray", "ppo", "rlrun")
CORE_PACKAGES = ("runtime", "ppo")
SURFACE_PACKAGES = ("runtime", "runtime_ray", "ppo")
BANNED = ("ray", "runtime_ray")

# Runs in a fresh interpreter: imports the core and every submodule, and records the import
# stack at the moment any banned top-level module is first looked up.
_PROBE = r"""
import importlib, importlib.abc, json, pkgutil, sys, traceback

CORE, BANNED = {core!r}, {banned!r}
chains, errors = {{}}, {{}}


class _Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BANNED and top not in chains:
            frames = [
                f
                for f in traceback.extract_stack()[:-1]
                if f.filename != "<string>" and "importlib" not in f.filename
            ]
            chains[top] = "".join(traceback.format_list(frames))
        return None


sys.meta_path.insert(0, _Watch())


def _load(name):
    try:
        return importlib.import_module(name)
    except BaseException:
        errors[name] = traceback.format_exc()
        return None


names = [*CORE, "runtime.testing"]
for pkg in CORE:
    module = _load(pkg)
    path = getattr(module, "__path__", None)
    if path is not None:
        for info in pkgutil.walk_packages(path, prefix=pkg + ".", onerror=_load):
            if not info.name.endswith(".__main__"):
                names.append(info.name)
for name in names:
    _load(name)

loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & set(BANNED))
print(json.dumps({{"errors": errors, "banned_loaded": loaded, "chains": chains}}))
"""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _public_modules(packages: tuple[str, ...]) -> list[str]:
    """Public modules (no ``_``-prefixed component) found on disk, without importing them."""
    names = {
        _module_name(path)
        for package in packages
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    return sorted(n for n in names if not any(p.startswith("_") for p in n.split(".")))


def _isort_key(name: str) -> tuple[int, list[str | int]]:
    """The order ruff's RUF022 (isort-style) gives ``__all__``: SCREAMING_CASE, then CamelCase,
    then the rest; natural order (digit runs compared as numbers) within each group."""
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    parts = re.split(r"(\d+)", name)
    return group, [int(p) if i % 2 else p for i, p in enumerate(parts)]


def test_core_import_loads_no_ray() -> None:
    """A fresh interpreter importing runtime, runtime.testing, ppo and all their submodules
    never loads ray or runtime_ray."""
    probe = _PROBE.format(core=CORE_PACKAGES, banned=BANNED)
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"probe crashed:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["errors"], "\n".join(
        f"importing {name} failed:\n{tb}" for name, tb in report["errors"].items()
    )
    assert not report["banned_loaded"], (
        f"importing the core loaded {report['banned_loaded']}; where each was first imported:\n"
        + "\n".join(f"-- {top}:\n{chain}" for top, chain in report["chains"].items())
    )


@pytest.mark.parametrize("module_name", _public_modules(SURFACE_PACKAGES))
def test_all_is_sorted_unique_and_resolves(module_name: str) -> None:
    if module_name.partition(".")[0] == "runtime_ray" and not ray_available():
        pytest.skip("runtime_ray needs ray; install it with: pip install '.[ray]'")
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, (list, tuple)), f"{module_name} has no __all__ list"
    assert all(isinstance(name, str) for name in exported), exported
    duplicates = sorted({name for name in exported if exported.count(name) > 1})
    assert not duplicates, f"{module_name}.__all__ repeats {duplicates}"
    expected = sorted(exported, key=_isort_key)
    assert list(exported) == expected, (
        f"{module_name}.__all__ is not in isort-style order (fix: ruff check --select RUF022 "
        f"--fix {module_name.replace('.', '/')}); expected {expected}"
    )
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names {missing}, which do not exist"


@pytest.mark.parametrize("module_name", _public_modules(SURFACE_PACKAGES))
def test_all_is_complete(module_name: str) -> None:
    """Every public class and function *defined* in a public module is exported."""
    if module_name.partition(".")[0] == "runtime_ray" and not ray_available():
        pytest.skip("runtime_ray needs ray; install it with: pip install '.[ray]'")
    module = importlib.import_module(module_name)
    exported = set(getattr(module, "__all__", ()))
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module_name
    }
    assert defined <= exported, f"{module_name}.__all__ lacks {sorted(defined - exported)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_is_typed_and_regular(package: str) -> None:
    """py.typed ships with every package, and every directory of modules is a regular package."""
    root = ROOT / package
    assert (root / "py.typed").is_file(), f"{package}/py.typed is missing"
    module_dirs = {path.parent for path in root.rglob("*.py") if "__pycache__" not in path.parts}
    missing = sorted(
        str(d.relative_to(ROOT)) for d in module_dirs | {root} if not (d / "__init__.py").is_file()
    )
    assert not missing, f"directories without __init__.py (namespace packages): {missing}"


def test_the_runtime_loads_no_model_library() -> None:
    """The runtime is model-agnostic: importing it (and its test backend) in a fresh
    interpreter loads neither transformers nor tokenizers nor safetensors (ppo may)."""
    probe = (
        "import sys, json, runtime, runtime.testing, runtime.errors; "
        "print(json.dumps(sorted(m for m in ('transformers', 'tokenizers', 'safetensors') "
        "if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
