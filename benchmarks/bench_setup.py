"""Build the shared inputs of one benchmark size into a folder, so that ours and the peer start from the same
weights, tokenizer, prompts and preference pairs:

    policy/          HF causal LM + tokenizer (the SFT policy and π_ref of both sides)
    reward/          our reward model (ScalarHeadModel on the policy's backbone)
    reward_seqcls/   the same network as an HF sequence classifier (TRL's reward and value model)
    prompts.json     the rendered prompts of every rollout (one completion each / k completions each)
    pairs.json       preference pairs (prompt, chosen, rejected) for DPO and reward-model training
    bench.json       the size's settings (bench_shapes.SIZES)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1] / "src"))  # a checkout without `pip install -e .`
from bench_shapes import SIZES


def bpe_tokenizer(corpus: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer with `vocab_size` entries, trained on the world's corpus; pad ≠ EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    fast.padding_side = "left"
    return fast


def build_policy(spec: dict, tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_lab.config import ModelConfig
    from rlhf_lab.models.lm import build_world_lm

    m = spec["model"]
    if m["arch"] == "llama":
        cfg = ModelConfig(hidden_size=m["hidden_size"], layers=m["layers"], heads=m["heads"],
                          intermediate_size=m["intermediate_size"], max_positions=512)
        return build_world_lm(cfg, tok)
    return GPT2LMHeadModel(GPT2Config(n_layer=m["layers"], n_embd=m["hidden_size"], n_head=m["heads"],
                                      vocab_size=len(tok), n_positions=1024, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def sequence_classifier(policy, rm):
    """Our reward model as an HF AutoModelForSequenceClassification (num_labels=1) with the same weights."""
    from transformers import AutoModelForSequenceClassification

    config = policy.config.__class__.from_dict({**policy.config.to_dict(), "num_labels": 1, "id2label": {0: "LABEL_0"},
                                                "label2id": {"LABEL_0": 0}})
    seqcls = AutoModelForSequenceClassification.from_config(config)
    getattr(seqcls, seqcls.base_model_prefix).load_state_dict(rm.backbone.state_dict())
    with torch.no_grad():
        seqcls.score.weight.copy_(rm.head.weight)
        rm.head.bias.zero_()  # HF's score layers have no bias
    return seqcls


def build(size: str, out: Path) -> Path:
    from rlhf_lab.config import build_config
    from rlhf_lab.models.heads import ScalarHeadModel
    from rlhf_lab.models.lm import save_lm
    from rlhf_lab.models.tokenizer import prepare_tokenizer, train_world_tokenizer
    from rlhf_lab.runfolder import RunFolder
    from rlhf_lab.steps.common import Context
    from rlhf_lab.steps.policy.loop import rl_prompts
    from rlhf_lab.world import World

    spec = SIZES[size]
    out.mkdir(parents=True, exist_ok=True)
    world = World(build_config().world)
    tok = train_world_tokenizer(world.corpus()) if spec["tokenizer"] == "world" else \
        prepare_tokenizer(bpe_tokenizer(list(world.corpus())))
    torch.manual_seed(0)
    policy = build_policy(spec, tok)
    save_lm(policy, tok, out / "policy")
    torch.manual_seed(1)
    rm = ScalarHeadModel.from_lm(policy)
    seqcls = sequence_classifier(policy, rm)
    rm.save(out / "reward")
    seqcls.save_pretrained(out / "reward_seqcls", safe_serialization=True)
    tok.save_pretrained(out / "reward_seqcls")

    # The prompts our loop draws for updates 1…n (and one more): the peer gets exactly these texts.
    ctx = Context(build_config(), RunFolder(out / "scratch"), _tokenizer=tok)
    prompts = {}
    for name, n in (("one", spec["batch"]), ("group", spec["batch"] // spec["k"])):
        texts = [ctx.prompt_text(p) for u in range(1, spec["updates"] + 2) for p in rl_prompts(ctx, u, n)]
        prompts[name] = {"text": texts, "ids": ctx.prompt_ids(
            [p for u in range(1, spec["updates"] + 2) for p in rl_prompts(ctx, u, n)])}
    (out / "prompts.json").write_text(json.dumps(prompts))

    # Preference pairs: two demonstrations of the same prompt (the world's styles differ in length and content).
    rng = random.Random(0)
    demos = world.demonstrations(2 * spec["n_pairs"], seed=0)
    pairs = []
    for a, b in zip(demos[0::2], demos[1::2], strict=True):
        alt = world.demonstration(a.prompt, rng)
        pairs.append({"prompt": ctx.prompt_text(a.prompt), "chosen": " " + a.response,
                      "rejected": " " + (alt.response if alt.response != a.response else b.response)})
    (out / "pairs.json").write_text(json.dumps(pairs))
    (out / "bench.json").write_text(json.dumps({"size": size, **spec}))
    return out


if __name__ == "__main__":
    print(build(sys.argv[1], Path(sys.argv[2])))
