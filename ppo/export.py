"""Turn a training checkpoint into a Hugging Face model directory.

A checkpoint's ``actor/`` directory already holds the policy as ``save_pretrained`` wrote it
(``config.json``, ``model.safetensors``, ``generation_config.json``) next to the optimizer state
and the reference weights; ``tokenizer/`` holds the tokenizer. :func:`export_checkpoint` copies
exactly the files ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
need into a new directory (``python -m rlrun export <checkpoint> <dir>``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ppo.config import ConfigError

__all__ = ["export_checkpoint"]

#: Files of a checkpoint's actor directory that belong to training, not to the model.
TRAINING_ONLY = frozenset({"optimizer.pt", "reference.safetensors"})


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Copy the policy and tokenizer of ``checkpoint`` (``run_dir/checkpoints/step_N``) into
    ``out``, which must not exist yet or be empty (nothing is ever overwritten).

    Raises:
        ConfigError: ``checkpoint`` is not a checkpoint with an ``actor/`` model, or ``out``
            holds files.
    """
    src, dst = Path(checkpoint), Path(out)
    actor, tokenizer = src / "actor", src / "tokenizer"
    if not (actor / "config.json").is_file():
        raise ConfigError(
            f"{str(src)!r} is not a checkpoint with a Hugging Face policy (no actor/config.json); "
            "pass a directory like runs/demo/checkpoints/step_600"
        )
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"export target {str(dst)!r} exists and is not empty; choose a new one")
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for part in (actor, tokenizer):
        if not part.is_dir():
            continue
        for f in sorted(part.iterdir()):
            if f.is_file() and f.name not in TRAINING_ONLY:
                shutil.copy2(f, tmp / f.name)
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)
    return dst
