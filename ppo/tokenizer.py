"""The trainer's view of a Hugging Face tokenizer, and the tokenizer shipped with the package.

Workers and the trainer never touch a ``transformers`` tokenizer directly: they hold a
:class:`Tokenizer` (a small Protocol) whose one implementation, :class:`HFTokenizer`, wraps any
``PreTrainedTokenizerBase`` (``AutoTokenizer.from_pretrained(path)``)::

    tok = load_tokenizer("path/to/model")          # or load_tokenizer(None): the shipped one
    ids = tok.encode_prompt("7+5=")                 # raw text; BOS as the tokenizer adds it
    ids = tok.encode_prompt([{"role": "user", "content": "7+5="}])   # chat template
    tok.decode(response_ids)                        # text before EOS, specials removed

Rules the rest of the trainer relies on:

* **Prompts** are rendered the tokenizer's own way: raw text with ``add_special_tokens=True``
  (a Llama-style tokenizer prepends BOS, a Qwen-style one adds nothing); chat messages through
  the tokenizer's chat template with the generation prompt appended. A tokenizer without a chat
  template cannot encode messages (:class:`TokenizerError`).
* **EOS and padding**: ``eos_id`` ends a response; a tokenizer without a pad token pads with
  EOS (pads are masked out everywhere, so the id only has to exist).
* **Answers** (for the supervised warm-up) are encoded without special tokens.

The shipped tokenizer (:func:`default_tokenizer_path`) is a character-level ``tokenizers``
WordLevel model over printable ASCII with ``<pad> <bos> <eos> <unk>`` and three chat role
tokens, and a chat template; it needs no download. ``python -m ppo._tokenizer_build`` rebuilds
it byte for byte.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ppo.config import ConfigError

__all__ = [
    "HFTokenizer",
    "Message",
    "Prompt",
    "PromptCache",
    "Tokenizer",
    "TokenizerError",
    "as_tokenizer",
    "default_tokenizer_path",
    "load_tokenizer",
]

#: One chat message: ``{"role": "user", "content": "..."}``.
Message = Mapping[str, str]
#: A prompt is raw text or a list of chat messages.
Prompt = str | Sequence[Message]


class TokenizerError(ConfigError):
    """The tokenizer cannot do what the config asks (no chat template, an unknown character)."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the trainer needs from a tokenizer.

    Contract: every id is in ``range(vocab_size)``; ``encode_prompt`` returns the ids the model
    is conditioned on (specials as the tokenizer's convention puts them); ``encode_text`` the
    ids of plain text without specials; ``decode`` reads up to (not past) the first ``eos_id``
    and drops special tokens; ``save_pretrained(dir)`` writes files ``AutoTokenizer`` loads.
    Implementations must pickle (they travel to every worker).
    """

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        ...

    @property
    def pad_id(self) -> int:
        """Id used to pad batches (never attended to)."""
        ...

    @property
    def eos_id(self) -> int:
        """Id that ends a response."""
        ...

    @property
    def has_chat_template(self) -> bool:
        """Whether :meth:`encode_prompt` accepts chat messages."""
        ...

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Ids of a prompt: raw text, or messages rendered with the chat template."""
        ...

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` without any special token."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` up to the first EOS, special tokens dropped."""
        ...

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the tokenizer files into ``directory``."""
        ...


def default_tokenizer_path() -> Path:
    """The directory of the tokenizer shipped with the package."""
    return Path(str(resources.files("ppo") / "assets" / "tokenizer"))


class HFTokenizer:
    """:class:`Tokenizer` over a ``transformers`` tokenizer (fast or slow)."""

    def __init__(self, hf: PreTrainedTokenizerBase) -> None:
        eos = hf.eos_token_id
        if not isinstance(eos, int):
            raise TokenizerError(
                f"tokenizer {type(hf).__name__} has no EOS token; the trainer needs one to end "
                "responses (set eos_token in tokenizer_config.json)"
            )
        pad = hf.pad_token_id
        self.hf = hf
        self._eos = eos
        self._pad = pad if isinstance(pad, int) else eos
        self._vocab = len(hf)

    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def pad_id(self) -> int:
        return self._pad

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return list(self.hf.encode(prompt, add_special_tokens=True))
        if not self.has_chat_template:
            raise TokenizerError(
                "data.prompt_format = 'chat' needs a tokenizer with a chat template, but "
                f"{type(self.hf).__name__} (tokenizer.path) has none; use prompt_format = 'raw' "
                "or a tokenizer whose tokenizer_config.json has a chat_template"
            )
        text = self.hf.apply_chat_template(
            [dict(m) for m in prompt], add_generation_prompt=True, tokenize=False
        )
        if not isinstance(text, str):
            raise TokenizerError(f"the chat template rendered {type(text).__name__}, not text")
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_text(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        if self._eos in ids:
            ids = ids[: ids.index(self._eos)]
        text = self.hf.decode(ids, skip_special_tokens=True)
        return text if isinstance(text, str) else "".join(text)

    def save_pretrained(self, directory: str | Path) -> None:
        self.hf.save_pretrained(str(directory))

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.hf).__name__}, vocab_size={self._vocab})"


class PromptCache:
    """``tokenizer.encode_prompt``, memoized per distinct prompt (the trainer draws the same
    prompts again every epoch, and a small task has few distinct prompts).

    Contract: ``cache(prompt)`` returns exactly ``tokenizer.encode_prompt(prompt)`` (a fresh
    list each call: callers may change it); chat prompts are keyed by their messages' items in
    order. At most ``max_entries`` prompts are kept, the least recently used evicted first, so
    the driver's memory stays bounded on large data sets. Errors are not cached.
    """

    def __init__(self, tokenizer: Tokenizer, max_entries: int = 8192) -> None:
        if max_entries < 1:
            raise ValueError(f"PromptCache needs max_entries >= 1, got {max_entries!r}")
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self._ids: OrderedDict[Hashable, tuple[int, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __call__(self, prompt: Prompt) -> list[int]:
        key: Hashable = (
            prompt if isinstance(prompt, str) else tuple(tuple(m.items()) for m in prompt)
        )
        ids = self._ids.get(key)
        if ids is not None:
            self.hits += 1
            self._ids.move_to_end(key)
            return list(ids)
        self.misses += 1
        fresh = self.tokenizer.encode_prompt(prompt)
        self._ids[key] = tuple(fresh)
        if len(self._ids) > self.max_entries:
            self._ids.popitem(last=False)
        return list(fresh)

    def __len__(self) -> int:
        return len(self._ids)


def load_tokenizer(path: str | Path | None, *, field: str = "tokenizer.path") -> HFTokenizer:
    """``AutoTokenizer.from_pretrained(path)`` wrapped as :class:`HFTokenizer`; the shipped
    tokenizer when ``path`` is None. Local files only (nothing is downloaded).

    Raises:
        ConfigError: ``path`` does not exist or holds no tokenizer (names ``field``).
    """
    where = Path(path) if path is not None else default_tokenizer_path()
    if not where.is_dir():
        raise ConfigError(
            f"config field {field} = {str(where)!r} is not a directory; point it at a "
            "directory with tokenizer files (tokenizer.json or tokenizer.model + "
            "tokenizer_config.json)"
        )
    try:
        hf = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"config field {field} = {str(where)!r} holds no loadable tokenizer: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    return HFTokenizer(hf)


def as_tokenizer(value: Tokenizer | PreTrainedTokenizerBase) -> Tokenizer:
    """Accept a ``transformers`` tokenizer or any :class:`Tokenizer` (user plug-in point)."""
    if isinstance(value, PreTrainedTokenizerBase):
        return HFTokenizer(value)
    if isinstance(value, Tokenizer):
        return value
    raise TypeError(
        f"tokenizer must be a transformers tokenizer or implement ppo.tokenizer.Tokenizer, "
        f"got {type(value).__name__}"
    )
