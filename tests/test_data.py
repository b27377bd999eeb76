"""The data path keeps token ids: what the reward model trains on is what the policy sampled, with a real BPE
tokenizer (where decoding and re-encoding does not give the same tokens back)."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhf_lab.config import build_config
from rlhf_lab.runfolder import RunFolder, read_jsonl
from rlhf_lab.steps.common import Context
from rlhf_lab.world import World


def _bpe_base_model(folder, corpus):
    """A GPT-2-shaped model with a byte-level BPE tokenizer trained on `corpus`, saved as an HF folder."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=256,
                                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(folder, safe_serialization=True)
    return tok


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """sample → label (simulated) on an untrained BPE model: it samples token splits BPE would never make."""
    from rlhf_lab.steps.label import run_label
    from rlhf_lab.steps.sample import run_sample
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    root = tmp_path_factory.mktemp("bpe")
    cfg = build_config(overrides=[f"model.path={root / 'base'}", "sft.enabled=false", "sample.n_prompts=12",
                                  "sample.k=2", "generation.max_new_tokens=6", "sample.batch_size=24", "seed=3"])
    corpus = list(World(cfg.world, language="english").corpus())[:3000]
    tok = _bpe_base_model(root / "base", corpus)
    ctx = Context(cfg, RunFolder(root / "run"))
    run_sample(ctx)
    run_label(ctx)
    return ctx, tok


def test_samples_and_pairs_keep_the_sampled_ids(bpe_run):
    ctx, tok = bpe_run
    pairs = read_jsonl(ctx.run / "pairs.jsonl")
    samples = read_jsonl(ctx.run / "samples.jsonl")
    assert pairs and samples
    for s in samples:
        assert s["prompt_ids"] == tok(s["prompt"], add_special_tokens=False)["input_ids"]
        assert len(s["completion_ids"]) == len(s["completions"]) == 2
    for p in pairs:
        for side in ("a", "b"):
            ids = p[f"response_{side}_ids"]
            assert p[f"stopped_{side}"] == (bool(ids) and ids[-1] == tok.eos_token_id)
            cut = ids[:-1] if p[f"stopped_{side}"] else ids
            assert tok.decode(cut, skip_special_tokens=True).strip() == p[f"response_{side}"]


def test_reward_model_trains_on_exactly_the_sampled_ids(bpe_run):
    import pyarrow.parquet as pq

    from rlhf_lab.models.tokenizer import encode_response
    from rlhf_lab.steps.reward import tokenize_pairs

    ctx, tok = bpe_run
    pairs = {p["pair_id"]: p for p in read_jsonl(ctx.run / "pairs.jsonl")}
    rows = pq.read_table(ctx.run / "preferences.parquet").to_pylist()
    assert rows
    sequences = tokenize_pairs(ctx, rows)
    re_encoded = 0
    for row, (chosen, rejected) in zip(rows, sequences, strict=True):
        pair = pairs[row["pair_id"]]
        a, b = pair["prompt_ids"] + pair["response_a_ids"], pair["prompt_ids"] + pair["response_b_ids"]
        assert (chosen, rejected) in ((a, b), (b, a))
        # what decoding and encoding the text again would have given (the old path)
        text_ids = tok(row["prompt"], add_special_tokens=False)["input_ids"] + encode_response(tok, row["chosen"])
        re_encoded += text_ids != chosen
    # the case this guards: on an untrained BPE model most sampled sequences do not survive a text round trip
    assert re_encoded > 0


def test_text_only_rows_are_encoded_one_documented_way(bpe_run):
    from rlhf_lab.models.tokenizer import encode_response
    from rlhf_lab.steps.reward import tokenize_pairs

    ctx, tok = bpe_run
    row = {"prompt": "user: what is 2 plus 2?\nassistant:", "chosen": " 4", "rejected": "five"}
    (chosen, rejected), = tokenize_pairs(ctx, [row])
    p = tok(row["prompt"], add_special_tokens=False)["input_ids"]
    assert chosen == p + encode_response(tok, " 4") and rejected == p + encode_response(tok, "five")
    assert chosen[-1] == rejected[-1] == tok.eos_token_id
    assert encode_response(tok, "five") == encode_response(tok, " five")  # the leading space, once


def test_ids_from_another_tokenizer_are_refused(bpe_run):
    from rlhf_lab.steps.reward import tokenize_pairs

    ctx, tok = bpe_run
    row = {"prompt": "p", "chosen": "a", "rejected": "b", "prompt_ids": [1], "chosen_ids": [len(tok) + 5],
           "rejected_ids": [2], "pair_id": "x"}
    with pytest.raises(ValueError, match="beyond the tokenizer"):
        tokenize_pairs(ctx, [row])


def test_preference_files_share_one_schema(tmp_path):
    """A simulated run's rows (ids, no timing) and a web export's rows (timing, no ids) in one typed schema."""
    from rlhf_lab.data import PREFERENCE_SCHEMA, preference_row, read_preferences, write_preferences

    pair = {"pair_id": "q/0-1", "prompt": "user : hi ? assistant :", "response_a": "hello .", "response_b": "",
            "prompt_ids": [5, 6], "response_a_ids": [7, 1], "response_b_ids": [1], "meta": {"id": "q", "family": "f"}}
    sim = preference_row(pair, chosen_is_a=True, annotator_id="sim-1", annotator_group="g")
    web = preference_row({k: v for k, v in pair.items() if not k.endswith("_ids")}, chosen_is_a=False,
                         annotator_id="ann", time_spent_ms=1234, left_is_a=False)
    import pyarrow.parquet as pq

    write_preferences([sim], tmp_path / "sim")
    write_preferences([web], tmp_path / "web")
    for folder in ("sim", "web"):
        assert pq.read_schema(tmp_path / folder / "preferences.parquet").remove_metadata() == PREFERENCE_SCHEMA
    back = read_preferences(tmp_path / "sim" / "preferences.jsonl")[0]
    assert back["chosen_ids"] == [7, 1] and back["rejected"] == "" and back["chosen"] == " hello ."
    assert json.loads(back["meta"]) == pair["meta"]


def test_publish_pairs_checks_pairs_as_import_does(tmp_path):
    """`label.source: human` publishes through the same check as a pair-file import: an empty response is
    kept (the model said nothing), a missing side is refused with file and line, and nothing is created."""
    from rlhf_lab.annotate.store import AnnotationStore
    from rlhf_lab.steps.label import publish_pairs

    good = {"pair_id": "q/0-1", "prompt": "user : hi ? assistant :", "response_a": "hello .", "response_b": "",
            "meta": {"id": "q"}}
    bad = {**good, "pair_id": "q/0-2", "response_b": None}
    store = AnnotationStore(f"sqlite:///{tmp_path / 'labels.sqlite'}")
    with pytest.raises(ValueError, match=r"pairs\.jsonl:2: 'response_b' must be text"):
        publish_pairs(store, [good, bad], overlap=1, feedback_mode="foresight", source="human")
    assert store.project("run") is None
    pid = publish_pairs(store, [good], overlap=1, feedback_mode="foresight", source="human")
    assert [it.response_b for it in store.items(pid)] == [""]
    store.close()


GOOD = '{"prompt": "user : hi ? assistant :", "chosen": " hello .", "rejected": " no ."}'
HOSTILE = {  # name → (file contents, the line the error names)
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", 1),
    "empty": (b"", None),
    "lone_surrogate": (f'{GOOD}\n{{"prompt": "\\ud800", "chosen": "a", "rejected": "b"}}\n'.encode(), 2),
    "deep": (f'{GOOD}\n{{"prompt": "p", "chosen": "a", "rejected": "b", "x": {"[" * 200_000}{"]" * 200_000}}}\n'
             .encode(), 2),
    "long_pair_id": (f'{GOOD}\n{{"pair_id": {"7" * 5001}, "prompt": "p", "chosen": "a", "rejected": "b"}}\n'
                     .encode(), 2),
}


@pytest.mark.parametrize("case", [*HOSTILE, "directory"])
def test_hostile_import_files_fail_in_one_line_and_write_nothing(tmp_path, case):
    """`label.source=import` with a hostile file: exit ≠ 0, one line naming the file (and line), no run folder
    written, and the label step not marked done."""
    from typer.testing import CliRunner

    from rlhf_lab.cli import app

    if case == "directory":
        path, line = tmp_path / "prefs.jsonl", None
        path.mkdir()
    else:
        data, line = HOSTILE[case]
        path = tmp_path / "prefs.jsonl"
        path.write_bytes(data)
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["label", str(run), "--set", "sft.enabled=false", "--set", "label.source=import",
                                 "--set", f"label.import_path={path}"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit | None), (r.exit_code, repr(r.exception))
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), r.output
    if line is not None:
        assert lines[0].startswith(f"error: {path}:{line}: "), lines[0]
    assert not (run / "preferences.parquet").exists() and not (run / "preferences.jsonl").exists()
    state = run / "state.json"
    assert not state.exists() or "label" not in json.loads(state.read_text()).get("done", {})


def test_a_line_separator_inside_a_string_is_text(tmp_path):
    """U+2028 is legal inside a JSON string; lines end at "\\n" only."""
    from rlhf_lab.data import read_preferences

    path = tmp_path / "prefs.jsonl"
    path.write_text(GOOD + '\n{"prompt": "p\u2028q", "chosen": "a\u2029b", "rejected": "c\x85d"}\n', encoding="utf-8")
    rows = read_preferences(path)
    assert [r["prompt"] for r in rows] == ["user : hi ? assistant :", "p\u2028q"] and rows[1]["rejected"] == "c\x85d"


def test_imported_preferences_are_type_checked_by_the_schema(tmp_path):
    from rlhf_lab.data import DataFileError, read_preferences, write_preferences

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "", "pair_id": 7, "meta": {"k": 1}}\n')
    rows = read_preferences(path)
    assert rows[0]["pair_id"] == "7" and json.loads(rows[0]["meta"]) == {"k": 1}
    write_preferences(rows, tmp_path / "out")  # fits PREFERENCE_SCHEMA
    for bad, reason in [('"time_spent_ms": "slow"', "'time_spent_ms' must be int64"),
                        ('"left_is_a": 1', "'left_is_a' must be bool"),
                        ('"chosen_ids": [1, -2]', "'chosen_ids' must be a list of token ids"),
                        ('"time_spent_ms": ' + "9" * 30, "'time_spent_ms' is too large")]:
        path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", ' + bad + "}\n")
        with pytest.raises(DataFileError, match=f"p.jsonl:1: {reason}"):
            read_preferences(path)
