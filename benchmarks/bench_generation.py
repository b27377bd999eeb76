"""Sampling alone, three ways, on one model and batch: HF `generate`, our loop over a growing KV cache
(`sample_loop` with CUDA graphs off), and our static-cache decoding recorded as a CUDA graph (`sample_static`;
on a CPU the same steps run eagerly). Prints tokens/s of each, the ratio to HF, and how often the graph's
greedy tokens equal the loop's (floating-point rounding may differ between the two attention layouts, so this
is reported, not asserted).

    python benchmarks/bench_generation.py                    # GPT-2-small shape, 512-token vocabulary, 64 × 128
    python benchmarks/bench_generation.py --size tiny        # the built-in world model (a quick CPU check)

Every row samples the full number of new tokens (EOS is a token that is never drawn), so the three do the same
work. bf16 autocast on a GPU (as in training), fp32 on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from figures import stamp

sys.path.append(str(Path(__file__).resolve().parents[1] / "src"))  # a checkout without `pip install -e .`

SHAPES = {
    "gpt2": dict(layers=12, hidden=768, heads=12, vocab=512, batch=64, prompt=24, new=128),
    "tiny": dict(layers=2, hidden=128, heads=4, vocab=207, batch=64, prompt=24, new=40),
}


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_lab.models.generation import Batch, sample_hf, sample_loop, sample_static

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="gpt2", choices=sorted(SHAPES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = ap.parse_args()
    s = SHAPES[args.size]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    pad, eos = 0, 2
    model = GPT2LMHeadModel(GPT2Config(n_layer=s["layers"], n_embd=s["hidden"], n_head=s["heads"],
                                       vocab_size=s["vocab"], n_positions=1024, pad_token_id=pad, eos_token_id=eos,
                                       bos_token_id=1)).to(device).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, s["vocab"], (s["batch"], s["prompt"]), generator=g)
    mask = torch.ones_like(ids)
    for i in range(0, s["batch"], 4):  # some left padding, as in a real batch
        mask[i, : 1 + i % 7] = 0
        ids[i, : 1 + i % 7] = pad
    batch = Batch(ids.to(device), mask.to(device))
    # pad is never drawn, so "EOS = pad" never stops a row: every run samples all `new` tokens
    kw = dict(max_new_tokens=s["new"], temperature=1.0, eos_token_id=pad, pad_token_id=pad)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu",
                                                                                                  enabled=False)
    runs = {
        "hf_generate": lambda: sample_hf(model, batch, **kw),
        "loop": lambda: sample_loop(model, batch, generator=torch.Generator().manual_seed(2), cuda_graph=False, **kw),
        "static_graph": lambda: sample_static(model, batch, generator=torch.Generator().manual_seed(2), **kw),
    }

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    results = {**stamp(), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "shape": s}
    with autocast:
        for name, fn in runs.items():
            fn()  # warm-up
            times = []
            for _ in range(args.repeat):
                sync()
                t0 = time.perf_counter()
                out = fn()
                sync()
                times.append(time.perf_counter() - t0)
            assert out.shape == (s["batch"], s["new"]), (name, out.shape)
            t = statistics.median(times)
            results[name] = {"s": t, "tokens_per_s": s["batch"] * s["new"] / t, "ms_per_step": 1e3 * t / s["new"]}
    for name in runs:
        results[name]["vs_hf"] = results["hf_generate"]["s"] / results[name]["s"]
    # Greedy agreement between the graph and the loop, fp32 (no autocast): same tokens up to rounding.
    greedy = dict(kw, top_k=1)
    a = sample_loop(model, batch, cuda_graph=False, **greedy)
    b = sample_static(model, batch, **greedy)
    results["greedy_identical_rows"] = float((a == b).all(1).float().mean())
    results["greedy_identical_tokens"] = float((a == b).float().mean())
    print(json.dumps(results, indent=1))
    for name in runs:
        r = results[name]
        print(f"{name:13s} {r['tokens_per_s']:9.0f} tokens/s  {r['ms_per_step']:6.2f} ms/step  {r['vs_hf']:.2f}× HF")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
