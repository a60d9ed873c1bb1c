"""Hugging Face models for the roles, the rollout engine (log-prob parity, seeds, filters), and
model / tokenizer errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from ppo.config import ConfigError, load_config
from ppo.lm import build_critic, build_policy, check_vocab, sequence_log_probs, token_values
from ppo.rollout import HFRolloutEngine, PromptBatch, RolloutEngine, SamplingParams
from ppo.tokenizer import load_tokenizer
from ppo.warmup import encode_prompts
from tests.trainer_support import TINY, save_tiny_model, tiny_policy

TOK = load_tokenizer(None)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _engine(seed: int = 0) -> HFRolloutEngine:
    return HFRolloutEngine(
        tiny_policy(TOK, seed=seed), eos_id=TOK.eos_id, pad_id=TOK.pad_id, shares_weights=True
    )


def _prompts(texts: list[str], seeds: list[int] | None = None) -> PromptBatch:
    ids, mask = encode_prompts(TOK, texts, 16)
    s = torch.tensor(seeds if seeds is not None else list(range(len(texts))))
    return PromptBatch(ids=ids, mask=mask, seeds=s)


def test_the_default_architecture_is_a_small_llama() -> None:
    model = build_policy(
        load_config(None).model,
        vocab_size=TOK.vocab_size,
        special_ids={"eos_token_id": TOK.eos_id, "pad_token_id": TOK.pad_id},
        max_positions=16,
        seed=0,
        device=CPU,
    )
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 80_000 < sum(p.numel() for p in model.parameters()) < 100_000
    assert model.config.eos_token_id == TOK.eos_id


def test_random_init_follows_the_seed_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, c = tiny_policy(TOK, seed=1), tiny_policy(TOK, seed=1), tiny_policy(TOK, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_rollout_log_probs_match_the_training_forward() -> None:
    engine = _engine()
    assert isinstance(engine, RolloutEngine)
    prompts = _prompts(["1+2=", "13+7=", "rev abc=", "9="])
    for temperature in (1.0, 0.7):
        params = SamplingParams(max_new_tokens=6, temperature=temperature)
        out = engine.generate(prompts, params)
        with torch.no_grad():
            train, _ = sequence_log_probs(
                engine.model, out.sequences, out.attention_mask, 6, temperature
            )
        assert out.response_mask.sum() > 4
        assert (train - out.log_probs).abs().max().item() <= 1e-4


def test_each_row_is_sampled_from_its_own_seed_alone() -> None:
    engine = _engine()
    params = SamplingParams(max_new_tokens=5)
    alone = engine.generate(_prompts(["1+2="], [42]), params)
    batched = engine.generate(_prompts(["13+7=", "1+2=", "rev abc="], [5, 42, 6]), params)
    assert torch.equal(alone.responses[0], batched.responses[1])
    again = engine.generate(_prompts(["1+2="], [42]), params)
    other = engine.generate(_prompts(["1+2=", "1+2="], [43, 44]), params)
    assert torch.equal(alone.responses, again.responses)
    assert not torch.equal(other.responses[0], other.responses[1])


def test_top_k_one_is_greedy_and_masks_end_after_eos() -> None:
    engine = _engine()
    prompts = _prompts(["1+2=", "rev abc="])
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=5, greedy=True))
    top1 = engine.generate(prompts, SamplingParams(max_new_tokens=5, top_k=1))
    assert torch.equal(greedy.responses, top1.responses)
    for row, mask in zip(greedy.responses, greedy.response_mask, strict=True):
        eos = (row == TOK.eos_id).nonzero().flatten().tolist()
        if eos:
            assert mask.tolist() == [1] * (eos[0] + 1) + [0] * (5 - eos[0] - 1)
            assert (row[eos[0] + 1 :] == TOK.pad_id).all()


def test_top_p_keeps_samples_inside_the_nucleus() -> None:
    engine = _engine()
    prompts = _prompts(["1+2="] * 16, list(range(16)))
    out = engine.generate(prompts, SamplingParams(max_new_tokens=1, top_p=0.05))
    with torch.no_grad():
        logits = engine.model(input_ids=prompts.ids[:1], attention_mask=prompts.mask[:1]).logits
    probs, order = torch.softmax(logits[0, -1], dim=-1).sort(descending=True)
    size = int((probs.cumsum(0) < 0.05).sum()) + 1  # the smallest set holding 5 % of the mass
    nucleus = set(order[:size].tolist())
    assert set(out.responses[:, 0].tolist()) <= nucleus
    assert size < TOK.vocab_size // 4


def test_engine_that_does_not_share_weights_loads_them() -> None:
    trainer_model, engine = tiny_policy(TOK, seed=1), _engine(seed=0)
    engine.shares_weights = False
    prompts = _prompts(["1+2=", "3+4="])
    params = SamplingParams(max_new_tokens=4, greedy=True)
    engine.load_weights(trainer_model.state_dict().items(), version=7)
    twin = HFRolloutEngine(trainer_model, eos_id=TOK.eos_id, pad_id=TOK.pad_id, shares_weights=True)
    assert engine.weights_version == 7
    assert torch.equal(
        engine.generate(prompts, params).responses, twin.generate(prompts, params).responses
    )


def _critic() -> PreTrainedModel:
    """The tiny config's critic on the test tokenizer (random weights, seed 0)."""
    return build_critic(
        load_config(None, TINY).model,
        None,
        vocab_size=TOK.vocab_size,
        special_ids={"eos_token_id": TOK.eos_id, "pad_token_id": TOK.pad_id},
        max_positions=32,
        seed=0,
        device=CPU,
    )


def test_critic_values_are_one_per_response_token() -> None:
    critic = _critic()
    assert type(critic).__name__ == "LlamaForTokenClassification"
    out = _engine().generate(_prompts(["1+2=", "rev ab="]), SamplingParams(max_new_tokens=3))
    with torch.no_grad():
        values = token_values(critic, out.sequences, out.attention_mask, 3)
    assert values.shape == (2, 3)
    assert values.dtype == torch.float32


def test_critic_in_train_mode_is_deterministic() -> None:
    # A token classifier's head has dropout 0.1 by default; build_critic turns it off, so the
    # values of one input do not change between forward passes (nor with the global RNG).
    critic = _critic()
    critic.train()
    out = _engine().generate(_prompts(["1+2=", "rev ab="]), SamplingParams(max_new_tokens=3))
    with torch.no_grad():
        first = token_values(critic, out.sequences, out.attention_mask, 3)
        torch.manual_seed(123)
        second = token_values(critic, out.sequences, out.attention_mask, 3)
    assert torch.equal(first, second)
    assert all(
        m.p == 0.0 for m in critic.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)
    )


def test_bf16_autocast_runs_and_stays_close() -> None:
    engine = _engine()
    out = engine.generate(_prompts(["1+2="]), SamplingParams(max_new_tokens=3))
    with torch.no_grad():
        fp32, _ = sequence_log_probs(engine.model, out.sequences, out.attention_mask, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = sequence_log_probs(engine.model, out.sequences, out.attention_mask, 3)
    assert bf16.dtype == torch.float32
    assert (fp32 - bf16).abs().max().item() < 0.1


def test_a_saved_model_loads_from_model_path(tmp_path: Path) -> None:
    save_tiny_model(tmp_path)
    section = load_config(None, [f"model.path={str(tmp_path)!r}"]).model
    model = build_policy(
        section,
        vocab_size=TOK.vocab_size,
        special_ids={},
        max_positions=16,
        seed=0,
        device=CPU,
    )
    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert type(model).__name__ == "Qwen2ForCausalLM"
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_model_path_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.path = .*must be a local directory"):
        load_config(None, [f"model.path={str(tmp_path / 'nope')!r}"])
    with pytest.raises(ConfigError, match=r"model\.path = .*has no config\.json"):
        load_config(None, [f"model.path={str(tmp_path)!r}"])
    with pytest.raises(ConfigError, match=r"critic\.model\.path = .*has no config\.json"):
        load_config(None, [f"critic.model.path={str(tmp_path)!r}"])
    with pytest.raises(ConfigError, match=r"model\.config = .*does not build"):
        build_policy(
            load_config(None, ["model.config.model_type='no_such_arch'"]).model,
            vocab_size=10,
            special_ids={},
            max_positions=8,
            seed=0,
            device=CPU,
        )


def test_vocabulary_mismatches_are_config_errors() -> None:
    model = tiny_policy(TOK)
    check_vocab(model, TOK.vocab_size, field="model.path")
    rows = TOK.vocab_size
    with pytest.raises(
        ConfigError, match=rf"embedding table has {rows} rows but the tokenizer has 200"
    ):
        check_vocab(model, 200, field="model.path")
    with pytest.raises(ConfigError, match=rf"{rows} rows but the tokenizer has only 50 tokens"):
        check_vocab(model, 50, field="model.path")
    check_vocab(model, rows - 1, field="model.path")  # alignment padding of a few rows is fine


def test_prompts_must_be_left_padded() -> None:
    ids = torch.tensor([[1, 5, 0]])
    with pytest.raises(ValueError, match="left-padded"):
        PromptBatch(ids=ids, mask=(ids != 0).long(), seeds=torch.tensor([0]))
