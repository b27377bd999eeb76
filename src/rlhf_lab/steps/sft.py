"""Step 0 — supervised fine-tuning on demonstrations, with the loss on the response tokens only."""

from __future__ import annotations

import math

import numpy as np
import torch

from rlhf_lab.models.lm import position_ids_from_mask, save_lm
from rlhf_lab.models.tokenizer import encode_response
from rlhf_lab.runfolder import atomic_dir
from rlhf_lab.steps.common import Context, adamw, linear_schedule, pair_batches, seed_everything, shard
from rlhf_lab.steps.losses import sft_loss
from rlhf_lab.ui import counted, info, progress


def build_examples(ctx: Context, prompts, responses, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) with labels −100 on the prompt; sequences over max_len are dropped."""
    tok = ctx.tokenizer
    p_ids = ctx.prompt_ids(prompts)
    out = []
    for p, text in zip(p_ids, responses, strict=True):
        r = encode_response(tok, text)
        if len(p) + len(r) <= max_len:
            out.append((p + r, [-100] * len(p) + r))
    return out


def collate(examples, pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Left-padded (input_ids, attention_mask, position_ids, labels), each (B, T)."""
    T = max(len(x) for x, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, T - len(x):] = torch.tensor(x)
        labels[i, T - len(y):] = torch.tensor(y)
        mask[i, T - len(x):] = 1
    return ids.to(device), mask.to(device), position_ids_from_mask(mask).to(device), labels.to(device)


def run_sft(ctx: Context) -> dict:
    """Fine-tune the base model on the world's demonstrations; save it to `run/sft`."""
    cfg, acc = ctx.cfg.sft, ctx.accelerator
    seed_everything(ctx.cfg.seed)
    demos = ctx.world.demonstrations(cfg.n_demos, seed=ctx.cfg.seed)
    n_eval = max(1, len(demos) // 20)
    examples = build_examples(ctx, [d.prompt for d in demos], [d.response for d in demos], cfg.max_len)
    if len(examples) < 2:
        raise ValueError(f"sft.max_len={cfg.max_len} drops almost every demonstration; raise it")
    train, held_out = examples[n_eval:], examples[:n_eval]

    model = ctx.base_lm()
    if ctx.cfg.model.lora:
        from rlhf_lab.models.lora import add_lora

        model = add_lora(model, ctx.cfg.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    scheduler = linear_schedule(optimizer, total, warmup=max(1, total // 20))
    model, optimizer = acc.prepare(model, optimizer)
    rng = np.random.default_rng(ctx.cfg.seed)
    pad = ctx.tokenizer.pad_token_id

    lengths = [len(x) for x, _ in train]
    targets = [sum(1 for y in labels[1:] if y != -100) for _, labels in train]  # tokens the loss is on, each
    model.train()
    step = 0
    with progress("SFT", total) as advance:
        for epoch in range(cfg.epochs):
            for idx in pair_batches(len(train), cfg.batch_size, rng, lengths):
                # Each process takes its part of the global batch; the loss is its tokens' sum over the
                # global token count, times the number of processes (DDP averages gradients), so any
                # number of processes gives the gradient of the global batch's mean token loss.
                part, real = shard(idx, acc)
                n_tokens = sum(targets[i] for i in idx)
                ids, mask, pos, labels = collate([train[i] for i in part], pad, acc.device)
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
                loss = sft_loss(logits, labels, reduction="sum") * (acc.num_processes * real / max(1, n_tokens))
                acc.backward(loss)
                acc.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_value = loss.item()  # this process's estimate of the batch mean
                advance(1, loss=loss_value)
                if step % 20 == 0 or step == total:
                    ctx.run.log({"step": step, "phase": "sft", "sft/loss": loss_value, "sft/epoch": epoch,
                                 "sft/lr": scheduler.get_last_lr()[0]})

    model.eval()
    with torch.no_grad():
        ids, mask, pos, labels = collate(held_out, pad, acc.device)
        eval_loss = float(sft_loss(model(input_ids=ids, attention_mask=mask, position_ids=pos).logits, labels))
    ctx.run.log({"step": step, "phase": "sft", "sft/eval_loss": eval_loss})
    if ctx.is_main:
        final = acc.unwrap_model(model)
        if ctx.cfg.model.lora:  # the SFT model is the reference for what follows: store it merged
            final = final.merge_and_unload()
        with atomic_dir(ctx.run / "sft") as tmp:
            save_lm(final, ctx.tokenizer, tmp)
    info(f"SFT: {len(train)} demonstrations × {counted(cfg.epochs, 'epoch')}, held-out loss {eval_loss:.3f}")
    return {"eval_loss": eval_loss, "steps": step, "examples": len(train)}
