import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A pipeline small enough to run end to end in seconds.
MICRO = [
    "sft.n_demos=1000", "sft.epochs=2", "sample.n_prompts=60", "sample.k=2", "reward.epochs=1",
    "reward.n_norm_samples=32", "policy.updates=3", "policy.batch_size=16", "eval.schedule=every", "eval.every=2",
    "policy.checkpoint_every=2", "policy.sample_table_every=2", "generation.max_new_tokens=24", "eval.n_prompts=32",
]


def pytest_collection_modifyitems(items):
    """The SmolLM2 end-to-end test (about 3 minutes, the longest by far) first: `make test` hands whole files to
    its workers in order, and a long file handed out last is a long tail on one worker."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_smollm2.py")


@pytest.fixture
def micro_overrides():
    return list(MICRO)


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """One finished micro run, shared by the tests that only read its outputs."""
    from rlhf_lab import load_config, run
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    out = tmp_path_factory.mktemp("micro") / "run"
    run(load_config(overrides=MICRO), out=out)
    return out
