"""The causal transformer: config validation, padding, KV cache, generation, log-probs, values."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
import torch
from torch import Tensor

from ppo.model import (
    CausalLM,
    CausalTransformer,
    GenerationOutput,
    KVCache,
    ModelConfig,
    generate,
    sequence_log_probs,
)

PAD, BOS, EOS = 0, 1, 2
VOCAB = 51


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> CausalTransformer:
    return CausalTransformer(ModelConfig(vocab_size=VOCAB), seed=0).eval()


def _left_pad(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


PROMPTS = [[BOS, 4, 40, 10, 42], [BOS, 5, 42], [BOS, 12, 40, 12, 42, 7, 8], [BOS]]


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"d_model": 30, "n_heads": 4}, "d_model=30"),
        ({"n_layers": 0}, "n_layers must be >= 1, got 0"),
        ({"vocab_size": 2}, "vocab_size must be >= 3, got 2"),
        ({"max_seq_len": -1}, "max_seq_len must be >= 1, got -1"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"n_heads": 0}, "n_heads must be >= 1, got 0"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(
    kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        attrs.evolve(ModelConfig(vocab_size=VOCAB), **kwargs)


def test_config_rejects_wrong_types() -> None:
    not_an_int: Any = 64.0
    with pytest.raises(TypeError, match="d_model must be an int"):
        ModelConfig(vocab_size=VOCAB, d_model=not_an_int)


def test_default_model_is_about_100k_parameters_and_seeded() -> None:
    cfg = ModelConfig(vocab_size=VOCAB)
    state = torch.random.get_rng_state()
    a, b = CausalTransformer(cfg, seed=3), CausalTransformer(cfg, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state), "seeded init touched global RNG"
    c = CausalTransformer(cfg, seed=4)
    assert 90_000 < a.num_parameters() < 120_000
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if pa.dim() == 2:
            assert not torch.equal(pa, pc), name
    # tied: the LM head is the embedding matrix
    ids = torch.tensor([[BOS, 5]])
    logits, _ = a(ids)
    hidden, _ = a.hidden_states(ids)
    torch.testing.assert_close(logits, hidden @ a.tok_emb.weight.T)


# --- padding, causality, cache --------------------------------------------------------------


def test_left_padding_does_not_change_a_rows_logits(model: CausalTransformer) -> None:
    ids, mask = _left_pad(PROMPTS)
    padded, _ = model(ids, attention_mask=mask)
    for i, row in enumerate(PROMPTS):
        alone, _ = model(torch.tensor([row]))
        torch.testing.assert_close(padded[i, -len(row) :], alone[0], atol=1e-5, rtol=1e-5)


def test_pad_token_values_are_never_attended(model: CausalTransformer) -> None:
    ids, mask = _left_pad(PROMPTS)
    noisy = torch.where(mask.bool(), ids, torch.randint(3, VOCAB, ids.shape))
    a, _ = model(ids, attention_mask=mask)
    b, _ = model(noisy, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)


def test_attention_is_causal(model: CausalTransformer) -> None:
    ids = torch.tensor([[BOS, 4, 5, 6, 7, 8]])
    changed = ids.clone()
    changed[0, 4] = 20
    a, _ = model(ids)
    b, _ = model(changed)
    torch.testing.assert_close(a[0, :4], b[0, :4])
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_incremental_forward_with_cache_matches_full_forward(model: CausalTransformer) -> None:
    ids, mask = _left_pad(PROMPTS)
    extra = torch.tensor([[9, 10], [11, 12], [13, 14], [15, 16]])
    full_logits, _ = model(
        torch.cat((ids, extra), 1), attention_mask=torch.cat((mask, torch.ones_like(extra)), 1)
    )
    logits, cache = model(ids, attention_mask=mask)
    assert isinstance(cache, KVCache)
    assert cache.seq_len == ids.shape[1]
    assert cache.next_positions.tolist() == [len(r) for r in PROMPTS]
    steps = [logits]
    for j in range(extra.shape[1]):
        step_logits, cache = model(extra[:, j : j + 1], kv_cache=cache)
        steps.append(step_logits)
    torch.testing.assert_close(torch.cat(steps, 1), full_logits, atol=1e-5, rtol=1e-5)
    assert len(cache.layers) == model.config.n_layers
    assert cache.layers[0][0].shape == (4, 4, ids.shape[1] + 2, 16)


def test_position_overflow_and_bad_shapes_are_clear_errors(model: CausalTransformer) -> None:
    with pytest.raises(ValueError, match="max_seq_len=64"):
        model(torch.full((1, 65), 5))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4))
    _, cache = model(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="kv_cache holds 2 rows"):
        model(torch.ones(3, 1, dtype=torch.long), kv_cache=cache)


# --- generation -----------------------------------------------------------------------------


def _greedy_without_cache(model: CausalTransformer, row: list[int], steps: int) -> list[int]:
    seq = list(row)
    out: list[int] = []
    for _ in range(steps):
        logits, _ = model(torch.tensor([seq]))
        tok = int(logits[0, -1].argmax())
        out.append(tok)
        if tok == EOS:
            break
        seq.append(tok)
    return out


def test_cached_greedy_generation_equals_uncached_greedy_decoding() -> None:
    # A boosted EOS embedding makes some rows end early (lengths 6, 8, 10) and one not at all.
    model = CausalTransformer(ModelConfig(vocab_size=VOCAB), seed=2)
    with torch.no_grad():
        model.tok_emb.weight[EOS] *= 4.0
    model.eval()
    ids, mask = _left_pad(PROMPTS)
    out = generate(model, ids, mask, max_new_tokens=12, eos_id=EOS, pad_id=PAD, greedy=True)
    lengths = []
    for i, row in enumerate(PROMPTS):
        expected = _greedy_without_cache(model, row, 12)
        lengths.append(len(expected))
        n = len(expected)
        assert out.response[i, :n].tolist() == expected
        assert out.response[i, n:].eq(PAD).all()
        assert out.response_mask[i].tolist() == [1] * n + [0] * (12 - n)
    assert min(lengths) < 12 == max(lengths), f"want a mix of ended/unended rows: {lengths}"


class _Scripted:
    """A fake CausalLM emitting a fixed token per (row, step); counts its calls."""

    def __init__(self, script: list[list[int]]) -> None:
        self.script = script
        self.calls = 0

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor, KVCache]:
        step = self.calls
        self.calls += 1
        b, t = input_ids.shape
        logits = torch.zeros(b, t, VOCAB)
        for i in range(b):
            logits[i, -1, self.script[i][min(step, len(self.script[i]) - 1)]] = 50.0
        mask = torch.ones(b, t, dtype=torch.bool)
        if kv_cache is not None:
            mask = torch.cat((kv_cache.mask, mask), 1)
        return logits, KVCache((), mask, torch.zeros(b, dtype=torch.long))


def test_response_mask_covers_up_to_and_including_eos_and_pads_after() -> None:
    script = [[7, EOS, 9, 9, 9], [7, 8, 9, 10, 11], [EOS, 5, 5, 5, 5]]
    fake = _Scripted(script)
    _: CausalLM = fake
    ids = torch.tensor([[BOS, 5], [BOS, 6], [BOS, 7]])
    out = generate(fake, ids, torch.ones_like(ids), max_new_tokens=5, eos_id=EOS, pad_id=PAD)
    assert isinstance(out, GenerationOutput)
    assert out.response.tolist() == [[7, EOS, 0, 0, 0], [7, 8, 9, 10, 11], [EOS, 0, 0, 0, 0]]
    assert out.response_mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert out.response_lengths.tolist() == [2, 5, 1]
    assert out.sequences.tolist() == [
        [BOS, 5, 7, EOS, 0, 0, 0],
        [BOS, 6, 7, 8, 9, 10, 11],
        [BOS, 7, EOS, 0, 0, 0, 0],
    ]
    assert out.attention_mask[:, 2:].tolist() == out.response_mask.tolist()
    assert out.log_probs[out.response_mask == 0].eq(0).all()
    assert out.log_probs[out.response_mask == 1].gt(-1e-6).all()  # near-certain tokens


def test_generation_stops_early_once_every_row_ended() -> None:
    fake = _Scripted([[5, EOS], [EOS]])
    ids = torch.tensor([[BOS], [BOS]])
    out = generate(fake, ids, torch.ones_like(ids), max_new_tokens=10, eos_id=EOS, pad_id=PAD)
    assert fake.calls == 2  # the prompt, then one step; no forward after the last EOS
    assert out.response.shape == (2, 10)
    assert out.response_mask.sum().item() == 3


def test_generate_rejects_right_padded_prompts_and_bad_arguments(
    model: CausalTransformer,
) -> None:
    ids = torch.tensor([[BOS, 5, PAD]])
    mask = torch.tensor([[1, 1, 0]])
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, ids, mask, max_new_tokens=3, eos_id=EOS, pad_id=PAD)
    good = torch.ones_like(ids)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, ids, good, max_new_tokens=3, temperature=0.0, eos_id=EOS, pad_id=PAD)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, ids, good, max_new_tokens=0, eos_id=EOS, pad_id=PAD)


def test_sampling_is_reproducible_from_the_generator(model: CausalTransformer) -> None:
    ids, mask = _left_pad(PROMPTS)

    def run(seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(
            model, ids, mask, max_new_tokens=8, generator=gen, eos_id=EOS, pad_id=PAD
        ).response

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generate_log_probs_match_sequence_log_probs(
    model: CausalTransformer, temperature: float
) -> None:
    ids, mask = _left_pad(PROMPTS)
    gen = torch.Generator().manual_seed(0)
    out = generate(
        model,
        ids,
        mask,
        max_new_tokens=10,
        temperature=temperature,
        generator=gen,
        eos_id=EOS,
        pad_id=PAD,
    )
    logp, entropy = sequence_log_probs(
        model, out.sequences, out.attention_mask, 10, temperature, with_entropy=True
    )
    torch.testing.assert_close(logp, out.log_probs, atol=1e-4, rtol=0)
    assert logp.requires_grad
    assert entropy is not None
    # entropy against the textbook formula, zero where masked, non-negative
    logits, _ = model(out.sequences, attention_mask=out.attention_mask)
    probs = torch.softmax(logits[:, -11:-1] / temperature, -1)
    naive = -(probs * probs.log()).sum(-1) * out.response_mask
    torch.testing.assert_close(entropy, naive, atol=1e-4, rtol=1e-4)
    assert entropy.ge(0).all()
    assert entropy[out.response_mask == 0].eq(0).all()


def test_sequence_log_probs_carries_gradients_and_validates(model: CausalTransformer) -> None:
    trainable = CausalTransformer(ModelConfig(vocab_size=VOCAB), seed=5)
    ids = torch.tensor([[BOS, 5, 6, 7, EOS]])
    logp, entropy = sequence_log_probs(trainable, ids, torch.ones_like(ids), 2)
    assert entropy is None
    assert logp.shape == (1, 2)
    torch.autograd.backward(logp.sum())
    assert trainable.tok_emb.weight.grad is not None
    assert trainable.tok_emb.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="response_len"):
        sequence_log_probs(model, ids, torch.ones_like(ids), 5)


# --- value head -----------------------------------------------------------------------------


def test_value_head_gives_one_value_per_position_and_respects_padding() -> None:
    critic = CausalTransformer(ModelConfig(vocab_size=VOCAB), value_head=True, seed=0)
    assert critic.has_value_head
    ids, mask = _left_pad(PROMPTS)
    values = critic.values(ids, mask)
    assert values.shape == ids.shape
    assert values.requires_grad
    alone = critic.values(torch.tensor([PROMPTS[1]]))
    torch.testing.assert_close(values[1, -len(PROMPTS[1]) :], alone[0], atol=1e-5, rtol=1e-5)


def test_values_without_a_value_head_is_a_clear_error(model: CausalTransformer) -> None:
    assert not model.has_value_head
    with pytest.raises(RuntimeError, match="value_head=True"):
        model.values(torch.tensor([[BOS]]))
