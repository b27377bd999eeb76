"""Our GRPO and RLOO advantages equal TRL 1.16's on the same rewards: TRL's trainers generate completions for
a batch and score them with a reward function that returns our rewards; we compare the advantages they
compute (`_generate_and_score_completions`) with ours."""

import pytest
import torch

from rlhf_lab.steps.losses import grpo_advantages, rloo_advantages

pytest.importorskip("trl")
pytestmark = pytest.mark.peer

K = 4
PROMPTS = ["user : what is 2 plus 2 ? assistant :", "user : what is 3 minus 1 ? assistant :"]


def _trl_advantages(tmp_path, tok, model, trainer_name: str, rewards: torch.Tensor, **config) -> torch.Tensor:
    import trl
    from datasets import Dataset

    trainer_cls, config_cls = {"grpo": (trl.GRPOTrainer, trl.GRPOConfig),
                               "rloo": (trl.RLOOTrainer, trl.RLOOConfig)}[trainer_name]

    def preset_reward(prompts, completions, **kwargs):
        assert len(completions) == len(rewards)
        return rewards.tolist()

    args = config_cls(output_dir=str(tmp_path), per_device_train_batch_size=len(rewards), num_generations=K,
                      max_completion_length=3, report_to="none", use_cpu=True, save_strategy="no", beta=0.0, bf16=False,
                      **config)
    ds = Dataset.from_list([{"prompt": p} for p in PROMPTS])
    trainer = trainer_cls(model=model, reward_funcs=preset_reward, args=args, train_dataset=ds, processing_class=tok)
    inputs = [{"prompt": p} for p in PROMPTS for _ in range(K)]  # siblings adjacent, as TRL's sampler repeats them
    return trainer._generate_and_score_completions(inputs)["advantages"].float()


@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_advantages_equal_trl(tmp_path, tiny, seed):
    tok, model = tiny
    rewards = torch.randn(len(PROMPTS) * K, generator=torch.Generator().manual_seed(seed))
    rewards[K:] = rewards[K:] * 5 + 2  # groups on different scales
    theirs = _trl_advantages(tmp_path, tok, model, "grpo", rewards, scale_rewards="group")
    ours = grpo_advantages(rewards.view(-1, K)).reshape(-1)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)


@pytest.mark.parametrize("seed", [0, 1])
def test_rloo_advantages_equal_trl(tmp_path, tiny, seed):
    tok, model = tiny
    rewards = torch.randn(len(PROMPTS) * K, generator=torch.Generator().manual_seed(seed))
    theirs = _trl_advantages(tmp_path, tok, model, "rloo", rewards, normalize_advantages=False)
    ours = rloo_advantages(rewards.view(-1, K)).reshape(-1)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)
