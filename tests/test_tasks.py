"""Tasks and rewards, JSONL loading, the task registry, and the supervised warm-up."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ppo import tasks
from ppo.rollout import HFRolloutEngine
from ppo.tasks import (
    AdditionTask,
    CountCharTask,
    ExamplesTask,
    ReverseTask,
    RewardFn,
    SortDigitsTask,
    Task,
    TaskExample,
    available_tasks,
    exact_match_score,
    get_task,
    load_jsonl,
    make_dataset,
    register_task,
)
from ppo.tokenizer import load_tokenizer
from ppo.warmup import encode_examples, encode_prompts, evaluate_accuracy, supervised_warmup
from tests.trainer_support import tiny_policy

TOK = load_tokenizer(None)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# --- tasks and scoring ----------------------------------------------------------------------

BUILTINS: list[Task] = [AdditionTask(), ReverseTask(), SortDigitsTask(), CountCharTask()]


def _recompute(ex: TaskExample) -> str:
    """An independent oracle per prompt format."""
    if m := re.fullmatch(r"(\d+)\+(\d+)=", ex.prompt):
        return str(int(m[1]) + int(m[2]))
    if m := re.fullmatch(r"rev ([a-z]+)=", ex.prompt):
        return m[1][::-1]
    if m := re.fullmatch(r"sort (\d+)=", ex.prompt):
        return "".join(sorted(m[1]))
    if m := re.fullmatch(r"count ([a-z]) in ([a-z]+)=", ex.prompt):
        return str(m[2].count(m[1]))
    raise AssertionError(f"unexpected prompt {ex.prompt!r}")


@pytest.mark.parametrize("task", BUILTINS, ids=lambda t: t.name)
def test_builtin_tasks_are_deterministic_correct_and_encodable(task: Task) -> None:
    assert isinstance(task, Task)
    state = random.getstate()
    a = make_dataset(task, 200, seed=7)
    assert random.getstate() == state, "make_dataset touched the global random state"
    assert a == make_dataset(task, 200, seed=7)
    assert a != make_dataset(task, 200, seed=8)
    assert len({ex.prompt for ex in a}) > 20
    for ex in a:
        assert ex.data_source == task.name
        assert ex.answer == _recompute(ex)
        assert TOK.hf.unk_token_id not in TOK.encode_prompt(ex.prompt + ex.answer)
        assert task.score(ex.answer, ex) == 1.0
        assert task.score(f"  {ex.answer}\n", ex) == 1.0
        assert task.score(ex.answer + "0", ex) == 0.0
        assert task.score("", ex) == 0.0


def test_documented_prompt_formats() -> None:
    ex = AdditionTask().sample(random.Random(0))
    assert re.fullmatch(r"\d\+\d=", ex.prompt)
    assert int(ex.answer) <= 18
    assert ReverseTask(3, 3, "abc").sample(random.Random(1)).prompt.startswith("rev ")
    counted = CountCharTask(alphabet="abn").sample(random.Random(2))
    assert re.fullmatch(r"count [abn] in [abn]{3,6}=", counted.prompt)


def test_partial_credit_is_off_by_default_and_stays_below_one() -> None:
    ex = TaskExample("5+9=", "14", "addition")
    assert AdditionTask().score("15", ex) == 0.0
    partial = AdditionTask(partial_credit=True)
    assert partial.score("15", ex) == pytest.approx(0.25)
    assert partial.score("14", ex) == 1.0
    assert partial.score("", ex) == 0.0
    assert exact_match_score("abc", "abd", partial_credit=True) < 1.0


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: AdditionTask(max_operand=-1), "max_operand must be >= 0, got -1"),
        (lambda: AdditionTask(3, min_operand=5), "min_operand=5 must be <= max_operand=3"),
        (lambda: ReverseTask(min_len=5, max_len=2), "min_len=5 must be <= max_len=2"),
        (lambda: ReverseTask(alphabet=""), "alphabet must be a non-empty string"),
        (lambda: CountCharTask(alphabet="aa"), "must not repeat"),
        (lambda: SortDigitsTask(min_len=0), "min_len must be >= 1, got 0"),
    ],
)
def test_task_parameters_are_validated(factory: Callable[[], Task], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        factory()


def test_examples_task_uses_a_plugged_in_reward() -> None:
    examples = [TaskExample("q=", "yes", "mine"), TaskExample("r=", "no", "mine")]
    plain = ExamplesTask(examples, task_name="mine")
    assert plain.name == "mine"
    assert plain.score(" yes", examples[0]) == 1.0
    assert plain.sample(random.Random(0)) in examples

    def contains(response: str, ex: TaskExample) -> float:
        return 1.0 if ex.answer in response else 0.0

    reward: RewardFn = contains
    custom = ExamplesTask(examples, reward_fn=reward)
    assert custom.score("well, yes!", examples[0]) == 1.0
    assert custom.score("nope", examples[0]) == 0.0
    with pytest.raises(ValueError, match="at least one example"):
        ExamplesTask([])


# --- JSONL ----------------------------------------------------------------------------------


def test_load_jsonl_reads_examples(tmp_path: Path) -> None:
    path = tmp_path / "mydata.jsonl"
    path.write_text(
        json.dumps({"prompt": "1+1=", "answer": "2", "data_source": "arith"})
        + "\n\n"
        + json.dumps({"prompt": "2+2=", "answer": 4, "extra": [1]})
        + "\n"
    )
    assert load_jsonl(path) == [
        TaskExample("1+1=", "2", "arith"),
        TaskExample("2+2=", "4", "mydata"),
    ]
    assert load_jsonl(str(path), default_data_source="d")[1].data_source == "d"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "1+1="}', ":2: missing key 'answer'"),
        ('{"answer": "2"}', ":2: missing key 'prompt'"),
        ("{not json", ":2: invalid JSON"),
        ('["prompt", "answer"]', ":2: expected a JSON object"),
        ('{"prompt": 3, "answer": "2"}', ":2: 'prompt' must be a string"),
        ('{"prompt": "a", "answer": null}', ":2: 'answer' must be a string or int"),
        ('{"prompt": "a", "answer": "b", "data_source": 1}', ":2: 'data_source' must be"),
    ],
)
def test_load_jsonl_errors_name_the_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok=", "answer": "1"}\n' + line + "\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_jsonl(path)


# --- registry -------------------------------------------------------------------------------


def test_registry_builds_builtins_and_lists_names_for_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))
    assert available_tasks() == ["addition", "count_char", "reverse", "sort_digits"]
    assert get_task("addition", max_operand=4) == AdditionTask(max_operand=4)
    with pytest.raises(KeyError, match="unknown task 'nope'; registered tasks: addition, "):
        get_task("nope")

    register_task("small_add", lambda **kw: AdditionTask(max_operand=2, **kw))
    small = get_task("small_add", partial_credit=True)
    assert isinstance(small, AdditionTask)
    assert small.max_operand == 2
    with pytest.raises(ValueError, match="already registered"):
        register_task("small_add", AdditionTask)
    register_task("small_add", ReverseTask, overwrite=True)
    assert isinstance(get_task("small_add"), ReverseTask)


# --- warm-up --------------------------------------------------------------------------------


def test_encode_prompts_left_pads_with_bos() -> None:
    ids, mask = encode_prompts(TOK, ["1+2=", "rev ab="], max_len=8)
    bos, pad = TOK.hf.bos_token_id, TOK.pad_id
    assert ids.tolist() == [
        [pad, pad, pad, bos, *TOK.encode_text("1+2=")],
        [bos, *TOK.encode_text("rev ab=")],
    ]
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8]
    with pytest.raises(ValueError, match=r"prompt 1 'rev ab=' is 8 tokens.*data\.max_prompt_len"):
        encode_prompts(TOK, ["1+2=", "rev ab="], max_len=7)


def test_encode_examples_puts_answer_and_eos_in_a_right_padded_block() -> None:
    exs = [TaskExample("1+2=", "3", "a"), TaskExample("9+9=", "18", "a")]
    ids, mask, r = encode_examples(TOK, exs, max_prompt_len=8, max_response_len=3)
    assert r == 3
    three, one, eight = (TOK.encode_text(c)[0] for c in "318")
    eos, pad = TOK.eos_id, TOK.pad_id
    assert ids[:, -3:].tolist() == [[three, eos, pad], [one, eight, eos]]
    assert mask[:, -3:].tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="example 1 answer '18' is 3 tokens"):
        encode_examples(TOK, exs, max_prompt_len=8, max_response_len=2)


def test_thirty_warmup_steps_reduce_the_loss_deterministically() -> None:
    examples = make_dataset(AdditionTask(), 256, seed=0)

    def run() -> tuple[torch.nn.Module, list[float]]:
        model = tiny_policy(TOK)
        losses = supervised_warmup(
            model,
            TOK,
            examples,
            steps=30,
            batch_size=32,
            lr=3e-3,
            seed=0,
            max_prompt_len=8,
            max_response_len=4,
        )
        return model, losses

    model, losses = run()
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert not model.training, "warm-up must restore the model's mode"
    assert run()[1] == losses


def test_evaluate_accuracy_scores_decoded_responses() -> None:
    engine = HFRolloutEngine(
        tiny_policy(TOK), eos_id=TOK.eos_id, pad_id=TOK.pad_id, shares_weights=True
    )
    examples = make_dataset(AdditionTask(), 20, seed=0)
    assert evaluate_accuracy(engine, TOK, examples, max_new_tokens=3) == 0.0
    seen: list[str] = []

    def always(response: str, ex: TaskExample) -> float:
        seen.append(response)
        return 1.0

    acc = evaluate_accuracy(
        engine, TOK, examples, max_new_tokens=3, greedy=False, reward_fn=always, batch_size=7
    )
    assert acc == 1.0
    assert len(seen) == 20
    assert all(len(s) <= 3 for s in seen)
    with pytest.raises(ValueError, match="at least one example"):
        evaluate_accuracy(engine, TOK, [], max_new_tokens=3)
