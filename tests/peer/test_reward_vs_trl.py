"""Our reward-model (Bradley–Terry) loss equals TRL 1.16's (`RewardTrainer.compute_loss`) on the same tiny
model and batch, to 1e-5."""

import pytest
import torch

from tests.peer.conftest import PAIRS

pytest.importorskip("trl")
pytestmark = pytest.mark.peer


def test_reward_loss_equals_trl(tmp_path, tiny):
    from datasets import Dataset
    from transformers import LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from rlhf_lab.models.heads import ScalarHeadModel
    from rlhf_lab.models.tokenizer import encode_response
    from rlhf_lab.steps.losses import bradley_terry_loss
    from rlhf_lab.steps.reward import pair_scores

    tok, lm = tiny
    torch.manual_seed(1)
    rm = ScalarHeadModel.from_lm(lm).eval()
    with torch.no_grad():
        rm.head.weight.normal_(std=1.0)  # scores far enough apart for a telling loss
    # The same network as a sequence classifier: our backbone, our head (Llama's score layer has no bias)
    config = lm.config.__class__.from_dict({**lm.config.to_dict(), "num_labels": 1})
    seqcls = LlamaForSequenceClassification(config).eval()
    seqcls.model.load_state_dict(rm.backbone.state_dict())
    with torch.no_grad():
        seqcls.score.weight.copy_(rm.head.weight)
        rm.head.bias.zero_()

    args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(PAIRS), report_to="none",
                        use_cpu=True, save_strategy="no", center_rewards_coefficient=None, bf16=False)
    ds = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    trainer = RewardTrainer(model=seqcls, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, dict(batch))

    pairs = [(tok(p, add_special_tokens=False)["input_ids"] + encode_response(tok, c),
              tok(p, add_special_tokens=False)["input_ids"] + encode_response(tok, r)) for p, c, r in PAIRS]
    trl_rows = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    assert trl_rows == [c for c, _ in pairs] + [r for _, r in pairs]
    with torch.no_grad():
        c, r = pair_scores(rm, pairs, tok.pad_token_id, "cpu")  # left padded: padding must not matter
        ours = bradley_terry_loss(c, r)
    assert abs(float(ours) - float(theirs)) < 1e-5, (float(ours), float(theirs))
    assert abs(float(ours) - 0.6931) > 1e-2
