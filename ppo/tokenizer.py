"""Tokenizers for the trainer: a :class:`Tokenizer` protocol and a file-free :class:`CharTokenizer`.

The trainer only needs what :class:`Tokenizer` lists: ``encode``/``decode``, ``vocab_size``
and the three special ids. :class:`CharTokenizer` is the built-in implementation: a fixed,
explicitly listed character vocabulary (no files, no downloads), enough for the built-in
tasks in :mod:`ppo.tasks`::

    >>> tok = CharTokenizer()
    >>> tok.encode("12+7=")
    [4, 5, 40, 10, 42]
    >>> tok.decode([4, 5, 40, 10, 42, tok.eos_id, 9])
    '12+7='

Users plug their own tokenizer (e.g. a wrapper around a Hugging Face tokenizer) by providing
the same members; nothing else in the trainer inspects the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "BOS_ID",
    "CHARACTERS",
    "EOS_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "CharTokenizer",
    "Tokenizer",
]


@runtime_checkable
class Tokenizer(Protocol):
    """What the trainer needs from a tokenizer.

    Contract:

    * ``encode(text)`` returns the ids of ``text`` **without** any special tokens (callers add
      BOS/EOS themselves) and raises ``ValueError`` for text it cannot represent.
    * ``decode(ids, skip_special=True)`` reads ``ids`` up to (not past) the first ``eos_id``
      and returns the text; with ``skip_special`` the special tokens are dropped, so
      ``decode(encode(t)) == t`` for any text ``t`` that ``encode`` accepts.
    * ``vocab_size`` bounds every id: ``0 <= id < vocab_size``.
    * ``pad_id``, ``bos_id`` and ``eos_id`` are distinct ids inside the vocabulary.
    """

    @property
    def vocab_size(self) -> int:
        """Number of ids; every id is in ``range(vocab_size)``."""
        ...

    @property
    def pad_id(self) -> int:
        """Id used to pad batches (never attended to)."""
        ...

    @property
    def bos_id(self) -> int:
        """Id prepended to every prompt."""
        ...

    @property
    def eos_id(self) -> int:
        """Id that ends a response."""
        ...

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without special tokens; ``ValueError`` if it cannot be encoded."""
        ...

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of ``ids`` up to the first EOS; special tokens dropped when ``skip_special``."""
        ...


PAD_ID: Final = 0
BOS_ID: Final = 1
EOS_ID: Final = 2

#: Printable names of the special tokens, in id order (used by ``decode(skip_special=False)``).
SPECIAL_TOKENS: Final[tuple[str, ...]] = ("<pad>", "<bos>", "<eos>")

#: The ordinary characters, in id order after the special tokens: digits, lowercase letters,
#: then the punctuation the built-in tasks use. Listed explicitly so ids never change.
CHARACTERS: Final[tuple[str, ...]] = (
    # digits: ids 3..12
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    # lowercase letters: ids 13..38
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m",
    "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z",
    # punctuation: ids 39..50
    " ", "+", "-", "=", "*", ",", ":", "?", "(", ")", "<", ">",
)  # fmt: skip


_PUNCTUATION: Final = "".join(CHARACTERS[36:])


class CharTokenizer:
    """A character-level tokenizer with a fixed vocabulary of 51 ids and no files.

    Ids: ``PAD=0``, ``BOS=1``, ``EOS=2``, then one id per character of :data:`CHARACTERS`
    (digits ``0-9`` are ids 3..12, ``a-z`` 13..38, then ``" +-=*,:?()<>"`` 39..50).
    Instances are stateless and interchangeable.
    """

    __slots__ = ()

    _CHAR_TO_ID: Final[dict[str, int]] = {
        ch: i + len(SPECIAL_TOKENS) for i, ch in enumerate(CHARACTERS)
    }
    _ID_TO_TOKEN: Final[tuple[str, ...]] = SPECIAL_TOKENS + CHARACTERS

    @property
    def vocab_size(self) -> int:
        """51: three special tokens plus 48 characters."""
        return len(self._ID_TO_TOKEN)

    @property
    def pad_id(self) -> int:
        """0."""
        return PAD_ID

    @property
    def bos_id(self) -> int:
        """1."""
        return BOS_ID

    @property
    def eos_id(self) -> int:
        """2."""
        return EOS_ID

    def encode(self, text: str) -> list[int]:
        """One id per character of ``text``; no special tokens are added.

        Raises:
            ValueError: a character is outside the vocabulary (the message names the character
                and its position).
        """
        ids: list[int] = []
        for pos, ch in enumerate(text):
            try:
                ids.append(self._CHAR_TO_ID[ch])
            except KeyError:
                raise ValueError(
                    f"cannot encode character {ch!r} at position {pos} of {text!r}: "
                    f"CharTokenizer knows only digits, lowercase a-z and {_PUNCTUATION!r}"
                ) from None
        return ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``, stopping at the first EOS.

        With ``skip_special`` (the default) PAD and BOS are dropped and EOS ends the text
        without appearing in it. Without it, special tokens are rendered as ``<pad>``, ``<bos>``
        and ``<eos>`` (for debugging; that form does not round-trip through ``encode``), and the
        terminating ``<eos>`` is included.

        Raises:
            ValueError: an id is outside ``range(vocab_size)``.
        """
        n_special = len(SPECIAL_TOKENS)
        out: list[str] = []
        for pos, raw in enumerate(ids):
            i = int(raw)
            if not 0 <= i < len(self._ID_TO_TOKEN):
                raise ValueError(
                    f"cannot decode id {i} at position {pos}: ids must be in "
                    f"range(0, {len(self._ID_TO_TOKEN)})"
                )
            if i == EOS_ID:
                if not skip_special:
                    out.append(self._ID_TO_TOKEN[i])
                break
            if i < n_special and skip_special:
                continue
            out.append(self._ID_TO_TOKEN[i])
        return "".join(out)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


_: type[Tokenizer] = CharTokenizer
