"""Two CPU processes (torchrun, gloo) give the same parameters as one process with the whole batch.

`accelerate launch --cpu --num_processes 2` is known to start a single process, so torchrun is used; and
accelerate's teardown sometimes aborts rank 1 after the work is done, so the exit code alone is not
trusted: the outputs are."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import MICRO

SETTINGS = [*MICRO, "sft.n_demos=200", "sft.batch_size=8", "reward.batch_size=8"]


def _cli(*args, torchrun: bool = False, cwd=None):
    exe = str(Path(sys.executable).parent / "rlhf-lab")
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", exe]
           if torchrun else [exe])
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def _world_preferences(path: Path) -> Path:
    """Correct-vs-wrong pairs written straight from the world."""
    import json
    import random

    from rlhf_lab.config import WorldConfig
    from rlhf_lab.world import World
    from rlhf_lab.world.styles import respond

    world, rng = World(WorldConfig()), random.Random(0)
    rows = []
    for p in world.prompts("train", 120, seed=0, families=("question", "belief")):
        rows.append({"prompt": p.text + " assistant :", "chosen": respond(p, "correct_plain", world.knowledge, rng),
                     "rejected": respond(p, "confident_wrong", world.knowledge, rng), "prompt_id": p.id})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _same(a: Path, b: Path, atol: float) -> float:
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys()
    worst = max(float((sa[k] - sb[k]).abs().max()) for k in sa)
    assert worst < atol, worst
    return worst


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    sets = [a for s in SETTINGS for a in ("--set", s)]
    one, two = tmp_path / "one", tmp_path / "two"
    r = _cli("sft", str(one), "--quiet", *sets)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("sft", str(two), "--quiet", *sets, torchrun=True)
    assert (two / "sft" / "model.safetensors").exists(), r.stderr[-3000:]
    _same(one / "sft" / "model.safetensors", two / "sft" / "model.safetensors", atol=1e-3)
    # Reward model on the same preferences (imported, so they do not depend on the SFT model's quality).
    prefs = _world_preferences(tmp_path / "prefs.jsonl")
    for d in (one, two):
        r = _cli("label", str(d), "--quiet", "--set", "label.source=import", "--set", f"label.import_path={prefs}")
        assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("reward", str(one), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("reward", str(two), "--quiet", torchrun=True)
    assert (two / "reward" / "head.safetensors").exists(), r.stderr[-3000:]
    _same(one / "reward" / "backbone" / "model.safetensors", two / "reward" / "backbone" / "model.safetensors",
          atol=1e-3)
    h1, h2 = load_file(str(one / "reward" / "head.safetensors")), load_file(str(two / "reward" / "head.safetensors"))
    assert torch.allclose(h1["head.weight"], h2["head.weight"], atol=1e-3)
    # A PPO update: the same rollout of 8 sequences, split over two processes or not.
    script = str(Path(__file__).parent / "scripts" / "ppo_update_once.py")
    for n, out in ((1, tmp_path / "ppo1.safetensors"), (2, tmp_path / "ppo2.safetensors")):
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534"]
               if n == 2 else [sys.executable])
        r = subprocess.run([*cmd, script, str(one), str(out), "8"], capture_output=True, text=True, timeout=600,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert out.exists(), r.stderr[-3000:]
    _same(tmp_path / "ppo1.safetensors", tmp_path / "ppo2.safetensors", atol=1e-4)
