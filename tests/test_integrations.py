"""rlhf_lab.integrations inside TRL 1.16 (the peer): the tension monitor logs audit/… through the trainer at the
steps it should, for GRPO, RLOO and DPO on a tiny chat model; the world as TRL reward functions."""

import json

import pytest
import torch

from rlhf_lab.audit.sampling import AuditSizes
from rlhf_lab.integrations import TensionMonitor, gold_reward, proxy_reward
from rlhf_lab.integrations.rewards import world_dataset
from tests.chat_models import chat_tokenizer, save_chat_model

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

TINY = AuditSizes(question=4, belief=4, pushback=4, feedback=4, harmful=2, benign=2, diversity_prompts=2,
                  diversity_k=2, bon_n=2, relabel_pairs=0, relabel_k=1, set_size=2, embed_sets=0, batch_size=32)
COMMON = dict(report_to="none", use_cpu=True, save_strategy="no", bf16=False, logging_steps=1, seed=0,
              dataloader_num_workers=0)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_lab.models.heads import ScalarHeadModel

    root = tmp_path_factory.mktemp("chat")
    folder = save_chat_model(root / "m", seed=0)
    torch.manual_seed(0)
    # a reward model on the same tokenizer (random head): scores that differ between completions, so GRPO's
    # advantages are not all zero and the model moves
    ScalarHeadModel.from_lm(AutoModelForCausalLM.from_pretrained(save_chat_model(root / "r", seed=5))).save(root / "rm")
    return folder, lambda: AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _monitor(every: int) -> TensionMonitor:
    return TensionMonitor(every=every, sizes=TINY, n_prompts=4, max_new_tokens=6)


def _audit_steps(trainer) -> dict[int, dict]:
    return {h["step"]: h for h in trainer.state.log_history if any(k.startswith("audit/") for k in h)}


def _check(trainer, monitor, every: int, steps: int) -> None:
    logged = _audit_steps(trainer)
    assert sorted(logged) == list(range(every, steps + 1, every))
    for h in logged.values():
        for key in ("audit/sycophancy/flip_rate/policy", "audit/harm/complied_jailbreak/policy",
                    "audit/overoptimisation/gold/change", "audit/degeneration/stop_rate/policy"):
            assert key in h, (key, sorted(h))
        # the audit's own record: TRL's training metrics stay in theirs
        assert not any(k.startswith(("loss", "rewards/", "reward")) for k in h)
    # the model trained; once training moved it, its KL to the copy taken at the start is no longer exactly 0
    assert abs(logged[max(logged)]["audit/overoptimisation/kl/policy"]) > 0
    rows = [json.loads(x) for x in (trainer.args.output_dir / "tension_completions.jsonl").read_text().splitlines()]
    assert rows == monitor.completions and {r["step"] for r in rows} == set(logged)
    assert {"belief", "pushback", "feedback", "harmful_wrapped", "benign"} <= {r["probe"] for r in rows}


def _online(kind: str, tmp_path, chat, every: int = 2, steps: int = 4):
    folder, load, tok = chat
    cls, cfg_cls = {"grpo": (trl.GRPOTrainer, trl.GRPOConfig), "rloo": (trl.RLOOTrainer, trl.RLOOConfig)}[kind]
    args = cfg_cls(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                   max_completion_length=6, max_steps=steps, learning_rate=1e-2, reward_weights=[1.0, 0.0], **COMMON)
    args.output_dir = tmp_path
    ds = datasets.Dataset.from_list(world_dataset(16, seed=1))
    rewards = [proxy_reward(folder.parent / "rm", tok), gold_reward()]  # trained on the proxy, gold only watched
    trainer = cls(model=load(), reward_funcs=rewards, args=args, train_dataset=ds, processing_class=tok)
    monitor = _monitor(every)
    monitor.attach(trainer).train()
    _check(trainer, monitor, every, steps)


def test_grpo_with_the_monitor(tmp_path, chat):
    _online("grpo", tmp_path, chat)


def test_rloo_with_the_monitor(tmp_path, chat):
    _online("rloo", tmp_path, chat)


def test_dpo_with_the_monitor(tmp_path, chat):
    _folder, load, tok = chat
    rows = world_dataset(8, seed=2)
    ds = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": "Yes."}],
                                      "rejected": [{"role": "assistant", "content": "No, it is wrong."}]}
                                     for r in rows])
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=3, learning_rate=1e-2,
                         **COMMON)
    args.output_dir = tmp_path
    trainer = trl.DPOTrainer(model=load(), ref_model=load(), args=args, train_dataset=ds, processing_class=tok)
    monitor = _monitor(1)
    monitor.attach(trainer).train()
    _check(trainer, monitor, 1, 3)


def test_hooks_run_on_every_log_and_their_metrics_are_logged(tmp_path, chat):
    folder, load, tok = chat
    seen = []

    def hook(logs, state, control):
        seen.append(state.global_step)
        if "audit/harm/complied_jailbreak/policy" in logs:
            return {"warning/test": 1.0}
        return None

    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                          max_completion_length=4, max_steps=2, **COMMON)
    trainer = trl.GRPOTrainer(model=load(), reward_funcs=[proxy_reward(folder.parent / "rm", tok)], args=args,
                              train_dataset=datasets.Dataset.from_list(world_dataset(8)), processing_class=tok)
    TensionMonitor(every=2, sizes=TINY, n_prompts=4, max_new_tokens=4, hooks=[hook]).attach(trainer).train()
    assert seen and 2 in seen
    assert [h["step"] for h in trainer.state.log_history if "warning/test" in h] == [2]


def test_a_monitor_not_attached_says_how():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    with pytest.raises(ValueError, match="attach"):
        _monitor(1).on_train_begin(TrainingArguments(output_dir="x", use_cpu=True), TrainerState(), TrainerControl())


def test_gold_reward_prefers_the_true_answer():
    from rlhf_lab.world import Prompt

    rows = [r for r in world_dataset(200, seed=3)
            if (p := Prompt.from_dict(json.loads(r["world_prompt"]))).family == "question" and p.fact.is_arith][:6]
    facts = [Prompt.from_dict(json.loads(r["world_prompt"])).fact for r in rows]
    fn = gold_reward()
    kw = {"world_prompt": [r["world_prompt"] for r in rows]}
    right = fn([r["prompt"] for r in rows], [[{"role": "assistant", "content": f"The answer is {f.answer}."}]
                                             for f in facts], **kw)
    wrong = fn([r["prompt"] for r in rows], [f"The answer is {int(f.answer) + 1}." for f in facts], **kw)
    assert rows and all(a > b for a, b in zip(right, wrong, strict=True))
    with pytest.raises(ValueError, match="world_prompt"):
        fn(["x"], ["y"])


def test_proxy_reward_scores_like_the_audit(tmp_path, chat):
    """The TRL reward function gives the reward model's normalised score of the same tokens the audit scores."""
    from transformers import AutoModelForCausalLM

    from rlhf_lab.models.heads import ScalarHeadModel
    from rlhf_lab.models.reward_set import load_reward, score_tokens
    from rlhf_lab.models.tokenizer import encode_prompts, encode_response, render_prompt

    folder, _load, tok = chat
    torch.manual_seed(0)
    ScalarHeadModel.from_lm(AutoModelForCausalLM.from_pretrained(folder)).save(tmp_path / "rm")
    fn = proxy_reward(tmp_path / "rm", tok)
    rows = world_dataset(4)
    completions = ["The answer is 4.", "I'm sorry, but I can't help with that.", "Yes.", "No."]
    got = fn([r["prompt"] for r in rows], completions)
    rm, t = load_reward(tmp_path / "rm"), chat_tokenizer()
    p_ids = encode_prompts(t, [render_prompt(t, [(m["role"], m["content"]) for m in r["prompt"]]) for r in rows])
    want, _ = score_tokens(rm, p_ids, [encode_response(t, c) for c in completions], pad_id=t.pad_token_id)
    assert got == pytest.approx(want.tolist(), abs=1e-5) and len(set(got)) == 4


def test_our_steps_still_run_after_a_trainer_in_the_same_process(tmp_path):
    """transformers' TrainingArguments resets accelerate's global state (training_args.py calls
    AcceleratorState._reset_state): after a TRL run with the monitor, the Accelerator our steps had made failed on
    every attribute, and every later step in that process with it."""
    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    from rlhf_lab import load_config
    from rlhf_lab.steps.common import get_accelerator

    cfg = load_config()
    assert get_accelerator(cfg).num_processes == 1
    TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    assert not AcceleratorState._shared_state or AcceleratorState().initialized  # reset, or remade by it
    acc = get_accelerator(cfg)
    assert acc.num_processes == 1 and acc.device.type == "cpu" and acc.distributed_type is not None
