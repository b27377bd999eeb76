"""Tiny chat models for tests that need "any Hugging Face model": a byte-level BPE tokenizer trained on the world in
plain English, with a ChatML chat template and pad ≠ EOS, and a 1-layer Llama built from a config, saved to a
folder as a user's model would be."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import torch

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    from rlhf_lab.config import WorldConfig
    from rlhf_lab.world import World
    from rlhf_lab.world.english import demonstration

    world = World(WorldConfig(), language="english")
    rng = random.Random(0)
    out = []
    for p in world.prompts("train", 300, seed=0):
        out += [c for _, c in world.messages(p)]
        out.append(demonstration(p, "correct_plain", world.knowledge, rng))
    return tuple(out)


def chat_tokenizer(*, template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>")
    if template:
        fast.chat_template = CHATML
    return fast


def save_chat_model(folder: str | Path, *, seed: int = 0, template: bool = True, hidden: int = 32) -> Path:
    """A 1-layer Llama with random weights (seeded) and the chat tokenizer, saved to `folder`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = chat_tokenizer(template=template)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
