"""The shipped tokenizer, the HF tokenizer adapter, prompts (raw and chat), and tokenizer errors."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from transformers import AutoTokenizer

from ppo._tokenizer_build import CHARACTERS, SPECIAL_TOKENS, build_tokenizer
from ppo.config import ConfigError
from ppo.tokenizer import (
    HFTokenizer,
    PromptCache,
    Tokenizer,
    TokenizerError,
    as_tokenizer,
    default_tokenizer_path,
    load_tokenizer,
)
from ppo.warmup import encode_prompts
from tests.trainer_support import digit_tokenizer

TOK = load_tokenizer(None)


def test_the_shipped_tokenizer_is_what_the_builder_makes(tmp_path: Path) -> None:
    build_tokenizer().save_pretrained(str(tmp_path))
    shipped = default_tokenizer_path()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads(
            (shipped / name).read_text()
        ), f"{name} differs: run `python -m ppo._tokenizer_build` and commit the result"


def test_vocabulary_layout() -> None:
    assert isinstance(TOK, Tokenizer)
    assert TOK.vocab_size == len(SPECIAL_TOKENS) + len(CHARACTERS)
    assert (TOK.pad_id, TOK.hf.bos_token_id, TOK.eos_id) == (0, 1, 2)
    assert TOK.encode_text("0123456789") == list(range(7, 17))
    assert TOK.has_chat_template


def _holds_no_special_token(text: str) -> bool:
    return not any(token in text for token in SPECIAL_TOKENS)


@given(st.text(alphabet=st.sampled_from(CHARACTERS), max_size=40).filter(_holds_no_special_token))
@example("\n\n")  # runs of newlines once came out as one unknown token
@example("a  b")
def test_encode_decode_round_trip(text: str) -> None:
    """Every text without a special token's spelling round-trips one character per token."""
    ids = TOK.encode_text(text)
    assert len(ids) == len(text)
    assert TOK.decode(ids) == text
    assert TOK.decode([*ids, TOK.eos_id, *ids]) == text  # stops at EOS


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_a_special_tokens_spelling_in_text_is_that_special_token(special: str) -> None:
    """As in every Hugging Face tokenizer by default: "<unk>" in text is the one token
    ``<unk>``, not five characters (hypothesis once generated such a text)."""
    ids = TOK.encode_text(f"a{special}b")
    assert ids == [
        *TOK.encode_text("a"),
        TOK.hf.convert_tokens_to_ids(special),
        *TOK.encode_text("b"),
    ]


def test_raw_prompts_get_bos_and_chat_prompts_the_template() -> None:
    bos = TOK.hf.bos_token_id
    assert TOK.encode_prompt("7+5=") == [bos, *TOK.encode_text("7+5=")]
    chat = TOK.encode_prompt([{"role": "user", "content": "7+5="}])
    user, assistant = (TOK.hf.convert_tokens_to_ids(t) for t in ("<|user|>", "<|assistant|>"))
    assert chat == [bos, user, *TOK.encode_text("7+5="), assistant]
    system = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1="}]
    text = TOK.decode(TOK.encode_prompt(system))
    assert text == "be brief1+1="  # role tokens are special: dropped by decode


def test_unknown_characters_become_unk_not_garbage() -> None:
    assert TOK.encode_text("é") == [TOK.hf.unk_token_id]
    assert all(c in string.printable for c in CHARACTERS)


def test_a_tokenizer_without_pad_token_pads_with_eos() -> None:
    tok = as_tokenizer(digit_tokenizer())
    assert tok.pad_id == tok.eos_id == 1
    assert tok.vocab_size == 15


def test_chat_prompts_need_a_chat_template() -> None:
    tok = as_tokenizer(digit_tokenizer())
    assert not tok.has_chat_template
    with pytest.raises(TokenizerError, match=r"prompt_format = 'chat'.*no"):
        tok.encode_prompt([{"role": "user", "content": "1+1="}])


def test_load_tokenizer_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.path = .*missing.*not a directory"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"model\.path = .*holds no loadable tokenizer"):
        load_tokenizer(tmp_path / "empty", field="model.path")


def test_saved_tokenizer_round_trips_through_autotokenizer(tmp_path: Path) -> None:
    TOK.save_pretrained(tmp_path)
    again = HFTokenizer(AutoTokenizer.from_pretrained(str(tmp_path)))
    assert again.encode_prompt("9+9=") == TOK.encode_prompt("9+9=")
    assert again.has_chat_template


def test_as_tokenizer_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="transformers tokenizer or implement"):
        as_tokenizer(object())  # type: ignore[arg-type]  # the wrong type is the point


def test_prompt_cache_returns_the_tokenizers_ids_and_tokenizes_each_prompt_once() -> None:
    cache = PromptCache(TOK)
    chat = [{"role": "user", "content": "7+5="}]
    for prompt in ("7+5=", "1+2=", chat, "7+5=", chat):
        ids = cache(prompt)
        assert ids == TOK.encode_prompt(prompt)
        ids.append(-1)  # callers get their own list; the cached ids stay intact
    assert (cache.misses, cache.hits, len(cache)) == (3, 2, 3)
    assert cache("7+5=") == TOK.encode_prompt("7+5=")


def test_prompt_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = PromptCache(TOK, max_entries=2)
    cache("1+1=")
    cache("2+2=")
    cache("1+1=")  # now the most recent
    cache("3+3=")  # evicts 2+2=
    assert len(cache) == 2
    misses = cache.misses
    cache("1+1=")
    assert cache.misses == misses
    cache("2+2=")
    assert cache.misses == misses + 1
    with pytest.raises(ValueError, match="max_entries >= 1"):
        PromptCache(TOK, max_entries=0)


def test_prompt_cache_does_not_cache_errors() -> None:
    no_template = HFTokenizer(digit_tokenizer())
    cache = PromptCache(no_template)
    chat = [{"role": "user", "content": "1+2="}]
    for _ in range(2):
        with pytest.raises(TokenizerError, match="chat template"):
            cache(chat)
    assert len(cache) == 0
    assert cache.misses == 2


def test_encode_prompts_with_the_cache_equals_without() -> None:
    prompts = ["7+5=", "1+2=", "rev abc=", "7+5="]
    plain = encode_prompts(TOK, prompts, 16)
    cached = encode_prompts(TOK, prompts, 16, encode=PromptCache(TOK))
    assert all(torch.equal(a, b) for a, b in zip(plain, cached, strict=True))
    assert plain[0].dtype == plain[1].dtype == torch.long
