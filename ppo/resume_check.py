"""Resume refuses what it cannot honour: a checkpoint written under another model, tokenizer
or parallel layout.

The check compares the resolved config stored in the checkpoint's ``meta.json`` with the
current one, generically, by dotted field paths over the config dicts (so it keeps working
when sections gain fields). The fields that must match are :func:`must_match`: everything
under ``model``, ``tokenizer`` and ``critic.model`` (when present; but not ``dtype``,
``gradient_checkpointing`` or ``attn_implementation``, which change how the model runs, not
its weights), ``resources.*_ranks``,
``data.max_prompt_len`` and ``data.max_response_len``, plus ``tokenizer_in_use`` (the class
and vocabulary size of the tokenizer object the trainer uses). It runs before any worker
starts, so a mismatch costs nothing and names every differing field with both values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ppo.config import ConfigError

__all__ = ["ResumeMismatchError", "check_resume", "flatten", "must_match"]

_PREFIXES = ("model.", "tokenizer.", "critic.model.", "tokenizer_in_use.")
_EXACT = frozenset({"data.max_prompt_len", "data.max_response_len"})
_ABSENT = "<absent>"
_HOW_IT_RUNS = frozenset({"dtype", "gradient_checkpointing", "attn_implementation"})


class ResumeMismatchError(ConfigError):
    """The checkpoint to resume was written under an incompatible config."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (leaves are anything that is not a mapping)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def must_match(path: str) -> bool:
    """Whether the dotted field ``path`` must be equal for a checkpoint to be resumable.
    How a model runs (``dtype`` of the forward pass, gradient checkpointing, the attention
    kernel) may change; what it is may not."""
    if path.rsplit(".", 1)[-1] in _HOW_IT_RUNS:
        return False
    if path in _EXACT or path.startswith(_PREFIXES):
        return True
    section, _, field = path.partition(".")
    return section == "resources" and "." not in field and field.endswith("_ranks")


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any], checkpoint: Path) -> None:
    """Raise :class:`ResumeMismatchError` naming each field (old and new value) that differs
    between ``saved`` (from the checkpoint) and ``current``, among :func:`must_match`."""
    old, new = flatten(_plain(saved)), flatten(_plain(current))
    diffs = [
        f"{path}: {old.get(path, _ABSENT)!r} in the checkpoint, {new.get(path, _ABSENT)!r} now"
        for path in sorted(p for p in set(old) | set(new) if must_match(p))
        if old.get(path, _ABSENT) != new.get(path, _ABSENT)
    ]
    if diffs:
        raise ResumeMismatchError(
            f"cannot resume {checkpoint}: it was written with a different model, tokenizer or "
            f"parallel layout ({'; '.join(diffs)}). Use the checkpoint's values (its config is in "
            f"{checkpoint / 'meta.json'}), or start afresh in another trainer.run_dir (or with "
            "trainer.resume='off' and trainer.overwrite=true)"
        )


def _plain(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` as it reads back from JSON (tuples become lists), so both sides compare alike."""
    plain: dict[str, Any] = json.loads(json.dumps(tree, default=str))
    return plain
