"""Our DPO loss equals TRL 1.16's (`DPOTrainer._compute_loss`) on the same tiny model and batch, to 1e-5."""

import copy

import pytest
import torch

from rlhf_lab.steps.losses import dpo_loss
from rlhf_lab.steps.policy.dpo import sequence_logps
from tests.peer.conftest import PAIRS

pytest.importorskip("trl")
pytestmark = pytest.mark.peer


def _trl_dpo(tmp_path, tok, policy, ref, *, loss_type: str, beta: float, label_smoothing: float):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=[loss_type], label_smoothing=label_smoothing,
                     per_device_train_batch_size=len(PAIRS), report_to="none", use_cpu=True, save_strategy="no",
                     bf16=False)
    ds = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    with torch.no_grad():
        return trainer._compute_loss(trainer.model, batch, False), batch


@pytest.mark.parametrize(("variant", "label_smoothing"), [("sigmoid", 0.0), ("robust", 0.1)])
def test_dpo_loss_equals_trl(tmp_path, tiny, variant, label_smoothing):
    from rlhf_lab.models.tokenizer import encode_response

    tok, base = tiny
    ref = copy.deepcopy(base)
    policy = copy.deepcopy(base)
    with torch.no_grad():  # a policy that differs from π_ref, so the loss is not log 2
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    beta = 0.1
    theirs, batch = _trl_dpo(tmp_path, tok, copy.deepcopy(policy), copy.deepcopy(ref), loss_type=variant, beta=beta,
                             label_smoothing=label_smoothing)

    triples = [(tok(p, add_special_tokens=False)["input_ids"], encode_response(tok, c), encode_response(tok, r))
               for p, c, r in PAIRS]
    # the same tokens on both sides: TRL's [chosen; rejected] rows are our prompt + response
    trl_rows = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    assert trl_rows == [p + c for p, c, _ in triples] + [p + r for p, _, r in triples]

    # (TRL runs in fp32 here: its configs default to bf16 autocast.)
    # TRL keeps the pad token in the softmax; so does this comparison (our training masks it, as when sampling)
    kw = dict(pad_token_id=tok.pad_token_id, device="cpu", pad_in_distribution=True)
    with torch.no_grad():
        c, r = sequence_logps(policy, triples, **kw)
        rc, rr = sequence_logps(ref, triples, **kw)
    ours, _ = dpo_loss(c, r, rc, rr, beta=beta, label_smoothing=label_smoothing, variant=variant)
    assert abs(float(ours) - float(theirs)) < 1e-5, (float(ours), float(theirs))
    assert abs(float(ours) - 0.6931) > 1e-3  # not the trivial loss at π = π_ref
