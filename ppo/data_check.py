"""The trainer's data is checked on the controller before any worker starts.

- :func:`config_field` turns an error raised while building something from a config field (an
  unknown task, bad ``task_kwargs``, a broken JSONL line) into a :class:`ConfigError` that
  names the field;
- :func:`load_examples` reads a JSONL file and refuses one without rows;
- :func:`check_prompt_lengths` refuses a prompt longer than ``data.max_prompt_len`` tokens
  (special tokens and chat template included), naming the example, before any worker starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ppo.config import ConfigError
from ppo.tasks import TaskExample, load_jsonl
from ppo.tokenizer import Tokenizer
from ppo.warmup import example_prompt

__all__ = ["check_prompt_lengths", "config_field", "load_examples"]


@contextmanager
def config_field(field: str, value: object) -> Iterator[None]:
    """Re-raise ``KeyError``/``ValueError``/``TypeError``/``OSError`` inside the block as a
    :class:`ConfigError` naming ``field`` and ``value`` (a ``ConfigError`` passes through)."""
    try:
        yield
    except ConfigError:
        raise
    except (KeyError, ValueError, TypeError, OSError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"config field {field} = {value!r}: {text}") from exc


def load_examples(path: str, field: str) -> list[TaskExample]:
    """Examples from the JSONL file ``path`` (config field ``field``); a missing or malformed
    file, or one without rows, raises :class:`ConfigError`."""
    with config_field(field, path):
        examples = load_jsonl(path)
    if not examples:
        raise ConfigError(
            f"config field {field} = {path!r}: the file has no examples; add lines like "
            '{"prompt": "1+2=", "answer": "3"}'
        )
    return examples


def check_prompt_lengths(
    examples: Sequence[TaskExample],
    tokenizer: Tokenizer,
    max_prompt_len: int,
    prompt_format: str,
    which: str,
) -> None:
    """Raise :class:`ConfigError` for the first example of ``which`` (``"training"`` or
    ``"validation"``) whose prompt, encoded as the trainer encodes it (special tokens such as
    BOS and the chat template included), is longer than ``max_prompt_len`` tokens."""
    lengths: list[int] = []
    for i, example in enumerate(examples):
        try:
            lengths.append(len(tokenizer.encode_prompt(example_prompt(example, prompt_format))))
        except ValueError as exc:
            raise ConfigError(
                f"{which} example {i} (prompt {example.prompt!r}) cannot be tokenized: {exc}"
            ) from exc
    too_long = [i for i, n in enumerate(lengths) if n > max_prompt_len]
    if too_long:
        i = too_long[0]
        raise ConfigError(
            f"config field data.max_prompt_len = {max_prompt_len} is too small: {which} example "
            f"{i} (prompt {examples[i].prompt!r}) is {lengths[i]} tokens, special tokens (BOS) "
            f"and template included; {len(too_long)} {which} prompt(s) are too long, the longest "
            f"needs data.max_prompt_len = {max(lengths)}"
        )
