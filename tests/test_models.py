"""Models: any HF causal LM from a folder, tokenizer fitness, generation and padding consistency."""

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from rlhf_lab.config import Config
from rlhf_lab.models.generation import generate, left_pad, sample_hf, sample_loop
from rlhf_lab.models.heads import PolicyAndValue, ScalarHeadModel, last_index
from rlhf_lab.models.lm import build_world_lm, load_lm, position_ids_from_mask, save_lm
from rlhf_lab.models.tokenizer import decode_response, render_prompt, train_world_tokenizer
from rlhf_lab.world import World


def world_tok_and_model():
    cfg = Config()
    tok = train_world_tokenizer(World(cfg.world).corpus())
    torch.manual_seed(0)
    return tok, build_world_lm(cfg.model, tok)


def test_world_tokenizer_covers_the_world_and_renders_prompts():
    cfg = Config()
    world = World(cfg.world)
    tok = train_world_tokenizer(world.corpus())
    assert tok.pad_token_id != tok.eos_token_id
    for d in world.demonstrations(200, seed=0):
        text = render_prompt(tok, d.prompt.messages) + " " + d.response
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
    assert render_prompt(tok, [("user", "what is 1 plus 1 ?")]) == "user : what is 1 plus 1 ? assistant :"


def test_any_hf_model_from_a_folder(tmp_path):
    """A GPT-2-shaped model whose tokenizer has pad == eos: loading gives it a distinct pad."""
    world_tok, _ = world_tok_and_model()
    world_tok.save_pretrained(tmp_path / "src")
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "src")
    hf_tok.pad_token = hf_tok.eos_token  # the common (bad) setup
    hf_tok.chat_template = None
    hf_tok.save_pretrained(tmp_path)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(hf_tok), n_positions=128,
                                       bos_token_id=hf_tok.eos_token_id, eos_token_id=hf_tok.eos_token_id))
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded, tok = load_lm(tmp_path)
    assert tok.pad_token_id != tok.eos_token_id
    assert loaded.get_input_embeddings().weight.shape[0] >= len(tok)
    assert tok.padding_side == "left"
    # no chat template: a plain transcript
    assert render_prompt(tok, [("user", "hi")]).endswith("assistant:")
    out = generate(loaded, [tok("user: what is 1 plus 1 ?", add_special_tokens=False)["input_ids"]],
                   max_new_tokens=5, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                   generator=torch.Generator().manual_seed(0))
    assert 1 <= len(out[0]) <= 5
    save_lm(loaded, tok, tmp_path / "again")
    again, _ = load_lm(tmp_path / "again")
    for a, b in zip(loaded.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_left_padding_does_not_change_logits():
    tok, model = world_tok_and_model()
    model.eval()
    short = tok("user : what is 2 plus 2 ?", add_special_tokens=False)["input_ids"]
    long = tok("user : i think 2 plus 2 is 5 . what is 2 plus 2 ?", add_special_tokens=False)["input_ids"]
    batch = left_pad([short, long], tok.pad_token_id)
    pos = position_ids_from_mask(batch.attention_mask)
    with torch.no_grad():
        both = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos).logits
        alone = model(input_ids=torch.tensor([short])).logits
    assert torch.allclose(both[0, -len(short):], alone[0], atol=1e-4)


def test_sampling_loop_matches_hf_generate_greedily():
    tok, model = world_tok_and_model()
    model.eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ["user : what is 2 plus 2 ? assistant :", "user : tell me about x . assistant :", "user : hi"]]
    batch = left_pad(prompts, tok.pad_token_id)
    kw = dict(max_new_tokens=12, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              top_k=1)
    ours = sample_loop(model, batch, generator=torch.Generator().manual_seed(0), **kw)
    theirs = sample_hf(model, batch, **kw)
    n = min(ours.shape[1], theirs.shape[1])
    assert torch.equal(ours[:, :n], theirs[:, :n])



@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_static_cache_sampling_draws_what_the_loop_draws(arch):
    """The static-shape decoding (what a CUDA graph records on a GPU) over a preallocated cache: from the same
    generator, the same samples as the dynamic-cache loop, with k copies per prompt and rows that stop early."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_lab.models.generation import sample_static

    tok, model = world_tok_and_model()
    if arch == "gpt2":
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(tok), n_positions=256,
                                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                           pad_token_id=tok.pad_token_id))
    model.eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ["user : what is 2 plus 2 ? assistant :", "user : hi", "user : tell me about x . assistant :"]]
    batch = left_pad(prompts, tok.pad_token_id)
    kw = dict(max_new_tokens=14, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              copies=3)
    # an untrained model rarely says EOS: stop at a word it does say, so that rows end at different steps
    kw["eos_token_id"] = int(sample_loop(model, batch, generator=torch.Generator().manual_seed(4), **kw)[0, 4])
    for top_k in (1, 0):
        loop = sample_loop(model, batch, generator=torch.Generator().manual_seed(4), top_k=top_k, **kw)
        static = sample_static(model, batch, generator=torch.Generator().manual_seed(4), top_k=top_k, **kw)
        assert torch.equal(loop, static)
    assert (loop == tok.pad_token_id).any() and not (loop == tok.pad_token_id).all(0).any()



def test_rows_that_have_stopped_leave_the_decoding_batch_and_no_draw_changes():
    """sample_loop drops rows that emitted EOS from its batch (and their cache); every remaining row's samples are
    those of the full-batch static decoding from the same generator."""
    from rlhf_lab.models.generation import sample_static

    tok, model = world_tok_and_model()
    model.eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ["user : what is 2 plus 2 ? assistant :", "user : hi", "user : tell me about x . assistant :"]]
    batch = left_pad(prompts * 4, tok.pad_token_id)
    kw = dict(max_new_tokens=20, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              copies=2)
    kw["eos_token_id"] = int(sample_loop(model, batch, generator=torch.Generator().manual_seed(4), **kw)[0, 2])
    rows_seen = []
    hook = model.register_forward_pre_hook(lambda m, a, k: rows_seen.append(k["input_ids"].shape[0]),
                                           with_kwargs=True)
    loop = sample_loop(model, batch, generator=torch.Generator().manual_seed(4), **kw)
    hook.remove()
    static = sample_static(model, batch, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(loop, static)
    lengths = (loop != tok.pad_token_id).sum(1)
    assert lengths.min() < lengths.max()  # rows stopped at different steps
    decoding = rows_seen[1:]  # after the prefill of the 12 prompts: 24 rows, fewer as rows stop
    assert rows_seen[0] == 12 and decoding[0] == 24 and decoding == sorted(decoding, reverse=True)
    assert decoding[-1] < 24


def test_a_reserved_cache_draws_what_a_growing_cache_draws(monkeypatch):
    """The sampling loop's KV cache writes into buffers allocated once (no copy of the cache per token): from the
    same generator, the same samples as the concatenating cache, with k copies per prompt and rows that stop
    early; and step by step the same logits, also when the buffer has to grow and after rows are selected."""
    from rlhf_lab.models import generation

    tok, model = world_tok_and_model()
    model.eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ["user : what is 2 plus 2 ? assistant :", "user : hi", "user : tell me about x . assistant :"]]
    batch = left_pad(prompts, tok.pad_token_id)
    kw = dict(max_new_tokens=14, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              copies=3)
    kw["eos_token_id"] = int(sample_loop(model, batch, generator=torch.Generator().manual_seed(4), **kw)[0, 4])
    reserved = sample_loop(model, batch, generator=torch.Generator().manual_seed(4), **kw)
    growing_cache = generation.new_cache
    monkeypatch.setattr(generation, "new_cache", lambda m, capacity=0: growing_cache(m))
    growing = sample_loop(model, batch, generator=torch.Generator().manual_seed(4), **kw)
    monkeypatch.undo()
    assert torch.equal(reserved, growing)
    assert (reserved == tok.pad_token_id).any() and not (reserved == tok.pad_token_id).all(0).any()

    # step by step, with a buffer too small for the whole sequence (it grows) and rows selected after the prompt
    ids, mask = batch.input_ids, batch.attention_mask
    key = generation.cache_kwarg(model)
    caches = {"reserved": generation.new_cache(model, capacity=ids.shape[1] + 1), "growing": growing_cache(model)}
    assert type(caches["reserved"].layers[0]).__name__ == "ReservedLayer"
    logits = {}
    with torch.no_grad():
        for name, cache in caches.items():
            pos, m, out = position_ids_from_mask(mask), mask, []
            step_ids, step_pos = ids, pos
            for t in range(5):
                out.append(model(input_ids=step_ids, attention_mask=m, position_ids=step_pos, use_cache=True,
                                 **{key: cache}).logits[:, -1])
                if t == 0:
                    rows = torch.tensor([2, 0, 0, 1])
                    cache.batch_select_indices(rows)
                    m, pos, out[0] = m[rows], pos[rows], out[0][rows]
                    nxt = pos[:, -1:] + 1
                step_ids = out[-1].argmax(-1, keepdim=True)
                step_pos, nxt = nxt, nxt + 1
                m = torch.cat([m, torch.ones_like(m[:, :1])], 1)
            logits[name] = torch.stack(out)  # (steps, 4, V)
    assert caches["reserved"].get_seq_length() == caches["growing"].get_seq_length() == ids.shape[1] + 4
    assert torch.allclose(logits["reserved"], logits["growing"], atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_decoding_draws_what_the_loop_draws():
    """On a GPU the static step is recorded once and replayed per token: same samples as the eager loop."""
    from rlhf_lab.models.generation import sample_static

    tok, model = world_tok_and_model()
    model = model.cuda().eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["user : what is 2 plus 2 ?", "user : hi"]]
    batch = left_pad(prompts, tok.pad_token_id, "cuda")
    kw = dict(max_new_tokens=24, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              top_k=1, copies=2)
    loop = sample_loop(model, batch, cuda_graph=False, **kw)
    graph = sample_static(model, batch, cuda_graph=True, **kw)
    assert torch.equal(loop, graph)


def test_sampling_is_seeded_and_stops_at_eos():
    tok, model = world_tok_and_model()
    prompts = [tok("user : what is 2 plus 2 ? assistant :", add_special_tokens=False)["input_ids"]] * 8
    kw = dict(max_new_tokens=10, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    a = generate(model, prompts, generator=torch.Generator().manual_seed(5), **kw)
    b = generate(model, prompts, generator=torch.Generator().manual_seed(5), **kw)
    assert a == b
    for r in a:
        assert tok.pad_token_id not in r
        assert tok.eos_token_id not in r[:-1]
    assert decode_response(tok, [5, 6, tok.eos_token_id, 7]) == tok.decode([5, 6])


def test_scalar_head_scores_last_real_token(tmp_path):
    tok, model = world_tok_and_model()
    rm = ScalarHeadModel.from_lm(model).eval()
    ids = tok("user : what is 2 plus 2 ? assistant : 2 plus 2 is 4 .", add_special_tokens=False)["input_ids"]
    left = left_pad([ids, ids[:5]], tok.pad_token_id)
    with torch.no_grad():
        s_batch = rm.score(left.input_ids, left.attention_mask)
        s_alone = rm.score(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    assert torch.allclose(s_batch[0], s_alone[0], atol=1e-4)
    right_mask = torch.tensor([[1, 1, 1, 0, 0]])
    assert int(last_index(right_mask)[0]) == 2
    rm.gain.fill_(2.0)
    rm.save(tmp_path / "rm")
    again = ScalarHeadModel.load(tmp_path / "rm").eval()
    with torch.no_grad():
        assert torch.allclose(again.score(left.input_ids, left.attention_mask),
                              rm.score(left.input_ids, left.attention_mask), atol=1e-5)


def test_shared_value_head_uses_one_forward():
    tok, model = world_tok_and_model()
    pv = PolicyAndValue(model)
    ids = torch.tensor([tok("user : hi", add_special_tokens=False)["input_ids"]])
    mask = torch.ones_like(ids)
    logits, values = pv(ids, mask, position_ids_from_mask(mask))
    assert logits.shape[:2] == values.shape == ids.shape
