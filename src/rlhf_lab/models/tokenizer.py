"""Tokenizers: the world's word-level tokenizer (trained here, on the world's corpus), or any HF tokenizer.

Prompts are always rendered with the tokenizer's chat template, so the world model and a real instruct
model go through the same code. The world tokenizer carries a template of its own:
    "user : what is 7 plus 5 ? assistant :"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"

WORLD_CHAT_TEMPLATE = (
    "{%- for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor -%}"
    "{%- if add_generation_prompt %}assistant :{% endif -%}"
)


def train_world_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over every word the world can say (pad, eos and unk are ids 0, 1, 2)."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, EOS, UNK], min_frequency=1, show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    fast.chat_template = WORLD_CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def prepare_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make any tokenizer fit for RLHF: left padding for generation, and a pad token distinct from EOS
    (a pad equal to EOS makes "stopped" and "padding" indistinguishable in masks)."""
    tok.padding_side = "left"
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token before using it for RLHF")
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        tok.add_special_tokens({"pad_token": "<|rlhf_lab_pad|>"})
    return tok


def render_prompt(tok: PreTrainedTokenizerBase, messages: Sequence[tuple[str, str]]) -> str:
    """The prompt text the model sees, ending where the assistant's answer begins."""
    msgs = [{"role": r, "content": c} for r, c in messages]
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # No template (a base model): a plain transcript.
    return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"


def encode_prompts(tok: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def encode_response(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Response tokens followed by EOS (the stop token the policy must learn to emit)."""
    lead = "" if text.startswith(" ") or _word_level(tok) else " "
    return tok(lead + text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def decode_response(tok: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """Text of a response, cut at the first EOS, without special tokens."""
    out = []
    for i in ids:
        if i == tok.eos_token_id:
            break
        if i == tok.pad_token_id:
            continue
        out.append(i)
    return tok.decode(out, skip_special_tokens=True).strip()


def _word_level(tok: PreTrainedTokenizerBase) -> bool:
    return getattr(tok, "chat_template", None) == WORLD_CHAT_TEMPLATE
