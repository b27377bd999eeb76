"""Fixtures of the peer tests: one tiny world model and its tokenizer, shared by TRL and us."""

import pytest
import torch


@pytest.fixture(scope="module")
def tiny():
    """(tokenizer, causal LM): the world tokenizer (pad ≠ EOS) and a 1-layer, 32-wide Llama-shaped model."""
    from rlhf_lab.config import build_config
    from rlhf_lab.models.lm import build_world_lm
    from rlhf_lab.models.tokenizer import train_world_tokenizer
    from rlhf_lab.world import World

    cfg = build_config({"model": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64}})
    tok = train_world_tokenizer(World(cfg.world).corpus())
    torch.manual_seed(0)
    return tok, build_world_lm(cfg.model, tok).eval()


# Prompt and responses as the run folder stores them (TRL's columns); responses start with a space so that
# TRL's tokenisation of the concatenated prompt + response splits words exactly as ours does.
PAIRS = [
    ("user : what is 2 plus 2 ? assistant :", " 2 plus 2 is 4 .", " i think it is 5 ."),
    ("user : i think 3 plus 1 is 5 . what is 3 plus 1 ? assistant :", " you are right , it is 5 .", " 3 plus 1 is 4 ."),
    ("user : what is 4 minus 1 ? assistant :", " 4 minus 1 is 3 .", " i am not sure ."),
    ("user : what is 1 plus 1 ? assistant :", " 2 .", " 1 plus 1 is 2 , i double checked ."),
]
