"""The configurations `bench_vs_trl.py` compares on: one dict per size, read by both sides.

Nothing here imports rlhf_lab or TRL, so the peer's interpreter (a separate virtual environment for TRL 1.12)
can read it too. Every number is the same for ours and the peer's: model shape, batch, prompt and response
lengths, epochs, minibatches, precision.
"""

SIZES = {
    # The built-in world model at its defaults (config.ModelConfig), the world's word-level tokenizer.
    "tiny": {
        "model": {"arch": "llama", "hidden_size": 128, "layers": 2, "heads": 4, "intermediate_size": 256},
        "tokenizer": "world", "precision": "fp32",
        "batch": 64, "new_tokens": 40, "k": 8, "updates": 5,
        "ppo_epochs": 4, "minibatches": 2, "dpo_batch": 64, "rm_batch": 32, "n_pairs": 640,
    },
    # ~25M parameters, Llama-shaped, same tokenizer; a smaller batch keeps a CPU run in minutes.
    "25m": {
        "model": {"arch": "llama", "hidden_size": 512, "layers": 8, "heads": 8, "intermediate_size": 1408},
        "tokenizer": "world", "precision": "fp32",
        "batch": 16, "new_tokens": 32, "k": 4, "updates": 5,
        "ppo_epochs": 4, "minibatches": 2, "dpo_batch": 16, "rm_batch": 16, "n_pairs": 96,
    },
    # GPT-2 small's shape (12 × 768; ~86M parameters with a 512-token BPE vocabulary) in bf16, 64 × 128 new
    # tokens: the shape of the peer baselines measured on an H200 (shared/peer-baselines). For a GPU.
    "gpt2": {
        "model": {"arch": "gpt2", "hidden_size": 768, "layers": 12, "heads": 12},
        "tokenizer": "bpe512", "precision": "bf16",
        "batch": 64, "new_tokens": 128, "k": 8, "updates": 6,
        "ppo_epochs": 4, "minibatches": 1, "dpo_batch": 64, "rm_batch": 64, "n_pairs": 1024,
    },
}

LR = 1e-5  # small, so a random model's updates stay tame on both sides; speed does not depend on it
KL_COEF = {"ppo": 0.05, "rloo": 0.05, "grpo": 0.04, "dpo": 0.1}  # TRL's defaults (GRPO: the paper's 0.04)
