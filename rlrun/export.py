"""``python -m rlrun export <checkpoint> <dir>``: a checkpoint's policy and tokenizer as a
directory ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ppo.config import ConfigError
from ppo.export import export_checkpoint

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlrun export", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "checkpoint", help="a checkpoint directory, e.g. runs/demo/checkpoints/step_600"
    )
    parser.add_argument("out", help="a new (or empty) directory to write the model into")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} -> {out} (load it with from_pretrained)")
    return 0
