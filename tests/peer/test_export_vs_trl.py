"""Our preference export is a dataset TRL 1.16 reads as we mean it: DPOTrainer tokenises prompt + completion as
the prompt's tokens, then the completion's (no word lost at the seam), in the standard and the conversational
format; and a simulated run's export and the web app's load together with `datasets.load_dataset`."""

import copy
import json

import pytest

from rlhf_lab.annotate.export import export_project, preference_rows, write_preferences

pytest.importorskip("trl")
pytestmark = pytest.mark.peer

PROMPT = "user : how do i make a weapon ? assistant :"  # the world tokenizer's template ends with "assistant :"


def _label(item_id: int, choice: str, **kw) -> dict:
    """A label as `AnnotationStore.label_rows` returns it."""
    return {"item_id": item_id, "pair_id": f"q{item_id}/0-1", "prompt": PROMPT,
            "response_a": "sorry , i can not help with that .", "response_b": "i am not sure .",
            "meta": {"id": f"q{item_id}", "family": "harmful", "user_group": "concise",
                     "messages": [["user", "how do i make a weapon ?"]]},
            "is_gold": False, "gold_choice": None, "annotator_id": "a1", "annotator_kind": "human",
            "annotator_group": None, "choice": choice, "strength": None, "rationale": None,
            "feedback_mode": "foresight", "left_is_a": None, "time_spent_ms": None, "created_at": "2026-01-01", **kw}


def _tokenised_by_trl(tmp_path, tok, model, rows):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, save_strategy="no", bf16=False,
                     per_device_train_batch_size=2)
    trainer = DPOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    return [trainer.train_dataset[i] for i in range(len(rows))]


def test_trl_tokenises_the_export_as_prompt_then_completion(tmp_path, tiny):
    tok, model = tiny
    rows, _ = preference_rows([_label(1, "a"), _label(2, "b")])
    _, jsonl = write_preferences(rows, tmp_path)
    exported = [json.loads(line) for line in jsonl.read_text().splitlines()]
    trl_rows = _tokenised_by_trl(tmp_path, tok, model, [{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                       for r in exported])
    p = tok(PROMPT, add_special_tokens=False)["input_ids"]
    for row, theirs in zip(exported, trl_rows, strict=True):
        assert theirs["prompt_ids"] == p  # the whole prompt, "assistant :" included
        for side in ("chosen", "rejected"):
            words = tok(row[side].strip(), add_special_tokens=False)["input_ids"]
            assert theirs[f"{side}_ids"] == [*words, tok.eos_token_id], tok.decode(theirs[f"{side}_ids"])
            assert tok.unk_token_id not in theirs[f"{side}_ids"]


def test_trl_reads_the_conversational_export(tmp_path, tiny):
    tok, model = tiny
    export_project([_label(1, "a"), _label(2, "b")], tmp_path, fmt="conversational")
    rows = [json.loads(line) for line in (tmp_path / "preferences_conversational.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == [{"role": "user", "content": "how do i make a weapon ?"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "sorry , i can not help with that ."}]
    trl_rows = _tokenised_by_trl(tmp_path, tok, model, [{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                       for r in rows])
    assert trl_rows[0]["prompt_ids"] == tok(PROMPT, add_special_tokens=False)["input_ids"]
    assert tok.decode(trl_rows[0]["chosen_ids"]) == tok.decode(tok("sorry , i can not help with that .")["input_ids"])


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_simulated_and_web_exports_load_together(tmp_path, fmt):
    """A simulated run's rows (no timing, no screen side) and the web app's (timing and side) in one dataset."""
    from datasets import Features, load_dataset

    sim = [_label(1, "a", annotator_kind="simulated", annotator_group="concise")]
    web = [_label(2, "b", time_spent_ms=5300, left_is_a=False, strength="much", rationale="safer")]
    rows_sim, _ = preference_rows(sim)
    rows_web, _ = preference_rows(web)
    files = [write_preferences(rows_sim, tmp_path / "sim"), write_preferences(rows_web, tmp_path / "web")]
    files = [str(pq if fmt == "parquet" else js) for pq, js in files]
    kw = {}
    if fmt == "jsonl":  # JSON has no typed null: the schema says what an all-null column holds
        from rlhf_lab.data import PREFERENCE_SCHEMA

        kw["features"] = Features.from_arrow_schema(PREFERENCE_SCHEMA)
    ds = load_dataset(fmt if fmt == "parquet" else "json", data_files=files, split="train",
                      cache_dir=str(tmp_path / "cache"), **kw)
    assert ds["time_spent_ms"] == [None, 5300] and ds["left_is_a"] == [None, False]
    assert ds["annotator_group"] == ["concise", None] and ds["strength"] == [None, "much"]
