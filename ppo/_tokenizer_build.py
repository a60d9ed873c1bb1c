"""Build the tokenizer shipped in ``ppo/assets/tokenizer`` (``python -m ppo._tokenizer_build``).

A character-level ``tokenizers`` WordLevel model: every printable ASCII character and the
newline is one token, after seven special tokens (ids 0-6). Raw prompts get ``<bos>`` in front
(the post-processor); the chat template renders ``<bos><|user|>text<|assistant|>``, ending
assistant turns with ``<eos>``. The output is deterministic: a test rebuilds it and compares.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as RawTokenizer
from transformers import PreTrainedTokenizerFast

__all__ = ["CHARACTERS", "SPECIAL_TOKENS", "build_tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>")
#: Ordinary tokens in id order after the specials: digits, letters, punctuation, space, newline.
CHARACTERS = tuple(
    string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation + " \n"
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The shipped tokenizer, built from scratch."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Any one character, the newline included ("." alone would leave runs of newlines whole).
    raw.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    raw.decoder = decoders.Fuse()
    raw.add_special_tokens(list(SPECIAL_TOKENS))
    raw.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).parent / "assets" / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save_pretrained(str(out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
