"""Verifiable tasks with rule-based rewards, generated from a seed, plus user data and plug-ins.

A task makes prompts and scores responses; nothing here knows about models or tokenizers::

    >>> task = get_task("addition")
    >>> ex = task.sample(random.Random(0))
    >>> ex
    TaskExample(prompt='6+6=', answer='12', data_source='addition')
    >>> task.score(" 12 ", ex), task.score("13", ex)
    (1.0, 0.0)

Built-in tasks (all prompts end in ``=``; answers are the text the model must produce before
EOS; every character is in the vocabulary of the shipped tokenizer,
:func:`ppo.tokenizer.load_tokenizer`):

====================  =========================  =============
registry name         prompt                     answer
====================  =========================  =============
``"addition"``        ``12+7=``                  ``19``
``"reverse"``         ``rev abc=``               ``cba``
``"sort_digits"``     ``sort 3142=``             ``1234``
``"count_char"``      ``count a in banana=``     ``3``
====================  =========================  =============

Plug-in points: any object with the :class:`Task` members is a task; :func:`register_task`
makes it available by name to :func:`get_task`; :class:`ExamplesTask` turns a fixed list of
examples (e.g. from :func:`load_jsonl`) into a task, optionally with a user :data:`RewardFn`.
"""

from __future__ import annotations

import json
import os
import random
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = [
    "AdditionTask",
    "CountCharTask",
    "ExamplesTask",
    "ReverseTask",
    "RewardFn",
    "SortDigitsTask",
    "Task",
    "TaskExample",
    "TaskFactory",
    "available_tasks",
    "exact_match_score",
    "get_task",
    "load_jsonl",
    "make_dataset",
    "register_task",
]


def _messages_tuple(
    value: Iterable[Mapping[str, str]] | None,
) -> tuple[Mapping[str, str], ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class TaskExample:
    """One prompt with its reference answer.

    Attributes:
        prompt: the text the model is conditioned on (without BOS).
        answer: the reference the response is checked against.
        data_source: which task or file the example came from (validation accuracy is
            reported per data source).
        messages: the prompt as chat messages (``data.prompt_format = "chat"``), if the data
            gave them; ``prompt`` is then the last user message.
        metadata: anything else the data carries for the scorer (verl's ``extra_info``).
    """

    prompt: str = attrs.field(validator=attrs.validators.instance_of(str))
    answer: str = attrs.field(validator=attrs.validators.instance_of(str))
    data_source: str = attrs.field(validator=attrs.validators.instance_of(str))
    messages: tuple[Mapping[str, str], ...] | None = attrs.field(
        default=None, kw_only=True, converter=_messages_tuple, eq=False
    )
    metadata: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, eq=False)

    def chat(self) -> list[Mapping[str, str]]:
        """The prompt as chat messages: ``messages``, or one user turn holding ``prompt``."""
        if self.messages is not None:
            return list(self.messages)
        return [{"role": "user", "content": self.prompt}]


#: A rule-based reward: ``(decoded response, example) -> score``. The response is the decoded
#: text before EOS, special tokens removed; the score is usually in ``[0, 1]``.
RewardFn = Callable[[str, TaskExample], float]


@runtime_checkable
class Task(Protocol):
    """A source of examples with a verifier.

    Contract: ``sample(rng)`` draws one :class:`TaskExample` using only ``rng`` for
    randomness (so a seed fixes the data); ``score(response, example)`` is a pure function of
    its arguments returning a float reward (1.0 for a correct response for the built-in tasks).
    """

    @property
    def name(self) -> str:
        """Short identifier; also the ``data_source`` of the examples it makes."""
        ...

    def sample(self, rng: random.Random) -> TaskExample:
        """One example drawn with ``rng``."""
        ...

    def score(self, response: str, example: TaskExample) -> float:
        """Reward of ``response`` (decoded text before EOS) for ``example``."""
        ...


def exact_match_score(response: str, answer: str, *, partial_credit: bool = False) -> float:
    """1.0 if ``response`` equals ``answer`` after stripping surrounding whitespace, else 0.0.

    With ``partial_credit`` a wrong response earns ``0.5 * (characters equal at the same
    index) / max(len(response), len(answer))`` (both stripped), so it stays below 1.0 and only
    an exact match reaches it.
    """
    got, want = response.strip(), answer.strip()
    if got == want:
        return 1.0
    if not partial_credit:
        return 0.0
    same = sum(a == b for a, b in zip(got, want, strict=False))
    return 0.5 * same / max(len(got), len(want))


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _alphabet(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} must not repeat characters, got {value!r}")
    bad = [c for c in value if c.isspace() or c in "="]
    if bad:
        raise ValueError(f"{attribute.name} must not contain whitespace or '=', got {value!r}")


def _random_word(rng: random.Random, alphabet: str, min_len: int, max_len: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))


def _check_len_range(min_len: int, max_len: int) -> None:
    if min_len > max_len:
        raise ValueError(f"min_len={min_len!r} must be <= max_len={max_len!r}")


@attrs.frozen
class AdditionTask:
    """``"a+b="`` -> ``str(a + b)``, with ``a, b`` uniform in ``[min_operand, max_operand]``.

    The default (single digits, 100 distinct prompts, sums 0..18) is the demo task. Measured
    with the default 107k-parameter model on one CPU thread: 75 warm-up steps (batch 32,
    lr 3e-3, ~1 s) give ~40 % greedy accuracy (~24 % sampled); a plain on-policy GRPO loop
    (32 prompts x 8 samples, lr 3e-4) then reaches 90+ % in ~300 steps (~45 s). See
    ``benchmarks/bench_task_learnability.py``.
    """

    max_operand: int = attrs.field(default=9, validator=_non_negative)
    min_operand: int = attrs.field(default=0, validator=_non_negative, kw_only=True)
    partial_credit: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.min_operand > self.max_operand:
            raise ValueError(
                f"min_operand={self.min_operand!r} must be <= max_operand={self.max_operand!r}"
            )

    @property
    def name(self) -> str:
        """``"addition"``."""
        return "addition"

    def sample(self, rng: random.Random) -> TaskExample:
        """Two operands drawn with ``rng``."""
        a = rng.randint(self.min_operand, self.max_operand)
        b = rng.randint(self.min_operand, self.max_operand)
        return TaskExample(prompt=f"{a}+{b}=", answer=str(a + b), data_source=self.name)

    def score(self, response: str, example: TaskExample) -> float:
        """Exact match (see :func:`exact_match_score`)."""
        return exact_match_score(response, example.answer, partial_credit=self.partial_credit)


@attrs.frozen
class ReverseTask:
    """``"rev abc="`` -> ``"cba"``: a word of ``min_len..max_len`` letters from ``alphabet``."""

    min_len: int = attrs.field(default=2, validator=_positive)
    max_len: int = attrs.field(default=4, validator=_positive)
    alphabet: str = attrs.field(default=string.ascii_lowercase[:6], validator=_alphabet)
    partial_credit: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_len_range(self.min_len, self.max_len)

    @property
    def name(self) -> str:
        """``"reverse"``."""
        return "reverse"

    def sample(self, rng: random.Random) -> TaskExample:
        """A word drawn with ``rng``."""
        word = _random_word(rng, self.alphabet, self.min_len, self.max_len)
        return TaskExample(prompt=f"rev {word}=", answer=word[::-1], data_source=self.name)

    def score(self, response: str, example: TaskExample) -> float:
        """Exact match (see :func:`exact_match_score`)."""
        return exact_match_score(response, example.answer, partial_credit=self.partial_credit)


@attrs.frozen
class SortDigitsTask:
    """``"sort 3142="`` -> ``"1234"``: ``min_len..max_len`` random digits, sorted ascending."""

    min_len: int = attrs.field(default=2, validator=_positive)
    max_len: int = attrs.field(default=4, validator=_positive)
    partial_credit: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_len_range(self.min_len, self.max_len)

    @property
    def name(self) -> str:
        """``"sort_digits"``."""
        return "sort_digits"

    def sample(self, rng: random.Random) -> TaskExample:
        """Digits drawn with ``rng``."""
        digits = _random_word(rng, string.digits, self.min_len, self.max_len)
        return TaskExample(
            prompt=f"sort {digits}=", answer="".join(sorted(digits)), data_source=self.name
        )

    def score(self, response: str, example: TaskExample) -> float:
        """Exact match (see :func:`exact_match_score`)."""
        return exact_match_score(response, example.answer, partial_credit=self.partial_credit)


@attrs.frozen
class CountCharTask:
    """``"count a in banana="`` -> ``"3"``.

    The word has ``min_len..max_len`` letters of ``alphabet``; the counted letter is drawn from
    ``alphabet`` too (so a count of 0 is possible).
    """

    min_len: int = attrs.field(default=3, validator=_positive)
    max_len: int = attrs.field(default=6, validator=_positive)
    alphabet: str = attrs.field(default="abn", validator=_alphabet)
    partial_credit: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_len_range(self.min_len, self.max_len)

    @property
    def name(self) -> str:
        """``"count_char"``."""
        return "count_char"

    def sample(self, rng: random.Random) -> TaskExample:
        """A word and a letter drawn with ``rng``."""
        word = _random_word(rng, self.alphabet, self.min_len, self.max_len)
        char = rng.choice(self.alphabet)
        return TaskExample(
            prompt=f"count {char} in {word}=", answer=str(word.count(char)), data_source=self.name
        )

    def score(self, response: str, example: TaskExample) -> float:
        """Exact match (see :func:`exact_match_score`)."""
        return exact_match_score(response, example.answer, partial_credit=self.partial_credit)


def _to_examples(examples: Iterable[TaskExample]) -> tuple[TaskExample, ...]:
    return tuple(examples)


@attrs.frozen
class ExamplesTask:
    """A task over a fixed list of examples (e.g. :func:`load_jsonl`), with a pluggable reward.

    ``sample`` draws uniformly from ``examples`` with ``rng``; ``score`` calls ``reward_fn`` if
    given, else exact match against ``example.answer``.
    """

    examples: tuple[TaskExample, ...] = attrs.field(converter=_to_examples)
    task_name: str = attrs.field(default="examples", kw_only=True)
    reward_fn: RewardFn | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not self.examples:
            raise ValueError("ExamplesTask needs at least one example, got none")

    @property
    def name(self) -> str:
        """``task_name``."""
        return self.task_name

    def sample(self, rng: random.Random) -> TaskExample:
        """One of ``examples``, drawn with ``rng``."""
        return rng.choice(self.examples)

    def score(self, response: str, example: TaskExample) -> float:
        """``reward_fn(response, example)``, or exact match when there is none."""
        if self.reward_fn is not None:
            return float(self.reward_fn(response, example))
        return exact_match_score(response, example.answer)


def make_dataset(task: Task, n: int, seed: int) -> list[TaskExample]:
    """``n`` examples from ``task``, the same list for the same ``(task, n, seed)``.

    Uses a private ``random.Random(seed)``; the global ``random`` state is untouched.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    rng = random.Random(seed)
    return [task.sample(rng) for _ in range(n)]


def load_jsonl(
    path: str | os.PathLike[str], *, default_data_source: str | None = None
) -> list[TaskExample]:
    """Read examples from a JSON-lines file: one object per line.

    Each line is ``{"prompt": str, "answer": str | int}`` or ``{"messages": [{"role": ...,
    "content": ...}, ...], "answer": ...}`` (chat; ``prompt`` then defaults to the last user
    message), with optional ``data_source`` (default: ``default_data_source`` or the file's
    stem) and ``metadata`` (an object handed to the scorer, verl's ``extra_info``); other keys
    are ignored; blank lines are skipped.

    Raises:
        ConfigError: a line is not valid JSON, not an object, lacks ``prompt``/``messages`` or
            ``answer``, has malformed messages or a value of the wrong type; the message names
            the file, the 1-based line number and the key.
        FileNotFoundError: no such file.
    """
    p = Path(path)
    source_default = default_data_source if default_data_source is not None else p.stem
    examples: list[TaskExample] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                examples.append(_parse_row(line, f"{p}:{lineno}", source_default))
    return examples


def _parse_row(line: str, where: str, source_default: str) -> TaskExample:
    from ppo.config import ConfigError

    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: invalid JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise ConfigError(
            f"{where}: expected a JSON object with keys 'prompt' (or 'messages') and 'answer', "
            f"got {type(obj).__name__}"
        )
    messages = _parse_messages(obj["messages"], where) if "messages" in obj else None
    if "prompt" not in obj and messages is None:
        raise ConfigError(f"{where}: missing key 'prompt' or 'messages' (have {sorted(obj)})")
    if "answer" not in obj:
        raise ConfigError(
            f"{where}: missing key 'answer' (have {sorted(obj)}; need 'prompt' or 'messages', "
            "'answer', and optionally 'data_source' and 'metadata')"
        )
    prompt = obj.get("prompt")
    if prompt is None and messages is not None:
        users = [m["content"] for m in messages if m["role"] == "user"]
        prompt = users[-1] if users else messages[-1]["content"]
    answer, data_source = obj["answer"], obj.get("data_source", source_default)
    metadata = obj.get("metadata", {})
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}: 'prompt' must be a string, got {prompt!r}")
    if isinstance(answer, int) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        raise ConfigError(f"{where}: 'answer' must be a string or int, got {answer!r}")
    if not isinstance(data_source, str):
        raise ConfigError(f"{where}: 'data_source' must be a string, got {data_source!r}")
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where}: 'metadata' must be an object, got {metadata!r}")
    return TaskExample(
        prompt=prompt,
        answer=answer,
        data_source=data_source,
        messages=messages,
        metadata=metadata,
    )


def _parse_messages(value: Any, where: str) -> tuple[dict[str, str], ...]:
    from ppo.config import ConfigError

    if not isinstance(value, list) or not value:
        raise ConfigError(
            f'{where}: \'messages\' must be a non-empty list of {{"role": ..., "content": ...}} '
            f"objects, got {value!r}"
        )
    out: list[dict[str, str]] = []
    for i, m in enumerate(value):
        ok = (
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
        )
        if not ok:
            raise ConfigError(
                f"{where}: messages[{i}] = {m!r} is malformed; each message is "
                '{"role": "system" | "user" | "assistant", "content": "<text>"}'
            )
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


#: Builds a task from keyword arguments (a task class itself is a factory).
TaskFactory = Callable[..., Task]

_REGISTRY: dict[str, TaskFactory] = {
    "addition": AdditionTask,
    "reverse": ReverseTask,
    "sort_digits": SortDigitsTask,
    "count_char": CountCharTask,
}


def register_task(name: str, factory: TaskFactory, *, overwrite: bool = False) -> None:
    """Make ``get_task(name, **kwargs)`` return ``factory(**kwargs)``.

    Raises:
        ValueError: ``name`` is empty, or already registered and ``overwrite`` is false.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"task name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"task {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def get_task(name: str, **kwargs: Any) -> Task:
    """Build the task registered under ``name`` with ``kwargs``.

    Raises:
        KeyError: unknown name; the message lists the registered names.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown task {name!r}; registered tasks: {', '.join(available_tasks())} "
            f"(add yours with ppo.tasks.register_task)"
        ) from None
    return factory(**kwargs)


def available_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_REGISTRY)


_task_checks: Sequence[type[Task]] = (
    AdditionTask,
    ReverseTask,
    SortDigitsTask,
    CountCharTask,
    ExamplesTask,
)
