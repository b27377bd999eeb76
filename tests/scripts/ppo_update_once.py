"""One PPO update on a fixed rollout, for the two-processes-equal-one test (run directly or under torchrun).

    python ppo_update_once.py RUN_DIR OUT.safetensors BATCH

Every process draws the same rollout of BATCH sequences, keeps its share, and runs `ppo_update` on it; rank 0
saves the trained parameters. With whitening and token normalisation taken over all processes, N processes with
BATCH / N sequences each must give the parameters of one process with all BATCH."""

import sys

import numpy as np
import torch
from safetensors.torch import save_file

from rlhf_lab.config import load_config
from rlhf_lab.models.generation import Batch
from rlhf_lab.models.heads import PolicyAndValue
from rlhf_lab.runfolder import RunFolder
from rlhf_lab.steps.common import Context
from rlhf_lab.steps.losses import gae, masked_whiten
from rlhf_lab.steps.policy.loop import global_masked_moments, policy_reference_reward
from rlhf_lab.steps.policy.ppo import Rollout, compute_rewards, ppo_update, rollout

run_dir, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = load_config(f"{run_dir}/config.yaml", ["policy.minibatches=1", "policy.epochs=2", "policy.microbatch_size=2"])
ctx = Context(cfg, RunFolder(run_dir))
acc = ctx.accelerator
torch.manual_seed(0)
policy, ref, rm = policy_reference_reward(ctx)
pv = PolicyAndValue(policy)
optimizer = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=1e-3, eps=1e-5)
prompts = ctx.world.prompts("train", batch, seed=5)
ro = rollout(ctx, pv, ref, rm, ctx.prompt_ids(prompts), generator=torch.Generator().manual_seed(3))
share = batch // acc.num_processes
rows = slice(acc.process_index * share, (acc.process_index + 1) * share)
ro = Rollout(Batch(ro.query.input_ids[rows], ro.query.attention_mask[rows]),
             *(getattr(ro, f)[rows] for f in list(Rollout.__dataclass_fields__)[1:]))
rewards, _ = compute_rewards(ro, kl_coef=0.05, estimator="k1")
advantages, returns = gae(rewards, ro.values, ro.mask, gamma=1.0, lam=0.95)
advantages = masked_whiten(advantages, ro.mask, moments=global_masked_moments(acc, advantages, ro.mask))
pv_wrapped, optimizer = acc.prepare(pv, optimizer)
ppo_update(ctx, pv_wrapped, optimizer, ro, advantages, returns, rng=np.random.default_rng(0))
acc.wait_for_everyone()
if acc.is_main_process:
    save_file({k: v.detach().clone().contiguous() for k, v in pv.state_dict().items()}, out)  # tied weights: copies
