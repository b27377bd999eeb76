"""Config: defaults, YAML, --set overrides, and one-line errors that name the key."""

import subprocess
import sys

import pytest
import yaml

from rlhf_lab.config import Config, ConfigError, build_config, load_config


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = Config()
    assert cfg.label.source == "simulated" and cfg.label.feedback == "foresight"
    assert cfg.policy.algorithm == "ppo" and cfg.model.path is None and cfg.seed == 0
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_overrides_are_typed():
    cfg = build_config({}, ["policy.kl_coef=0.2", "seed=7", "label.feedback=hindsight", "sft.enabled=false",
                            "world.operations=[plus]"])
    assert cfg.policy.kl_coef == 0.2 and cfg.seed == 7 and cfg.label.feedback == "hindsight"
    assert cfg.sft.enabled is False and cfg.world.operations == ["plus"]


@pytest.mark.parametrize(("override", "needle"), [
    ("policy.kl_coeff=0.1", "policy.kl_coeff: unknown key"),
    ("policy.kl_coef=abc", "policy.kl_coef"),
    ("policy.kl_coef=-1", "policy.kl_coef"),
    ("label.source=crowd", "label.source"),
    ("bogus.x=1", "bogus: unknown key"),
    ("sample.k=1", "sample.k"),
    ("world.family_weights={nonsense: 1}", "unknown family"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        build_config({}, [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  kl_coef: 0.1\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert (str(bad) in str(e.value) and ":4" in str(e.value)) or ":3" in str(e.value)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"policy": {"kl_coef": "lots"}}))
    with pytest.raises(ConfigError) as e:
        load_config(wrong)
    assert str(wrong) in str(e.value) and "policy.kl_coef" in str(e.value)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(evil)


def test_cli_config_error_is_one_line_and_nonzero(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlhf_lab.cli", "run", "--out", str(tmp_path / "r"),
                        "--set", "policy.kl_coef=-3"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "policy.kl_coef" in lines[0]
    assert not (tmp_path / "r").exists()


def test_cli_help_lists_the_steps():
    r = subprocess.run([sys.executable, "-m", "rlhf_lab.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("run", "sft", "sample", "label", "reward", "policy", "report"):
        assert cmd in r.stdout


# -- a config per algorithm ------------------------------------------------------------------------------------


def test_each_algorithm_has_its_own_defaults():
    """RLOO and GRPO optimise each batch once, as TRL does — not PPO's 4 epochs × 2 minibatches."""
    ppo = build_config().policy
    assert (ppo.algorithm, ppo.epochs, ppo.minibatches) == ("ppo", 4, 2)
    for algorithm in ("rloo", "grpo"):
        cfg = build_config({}, [f"policy.algorithm={algorithm}"]).policy
        assert (cfg.algorithm, cfg.epochs, cfg.minibatches, cfg.k) == (algorithm, 1, 1, 4)
    assert build_config({}, ["policy.algorithm=dpo"]).policy.epochs == 1
    assert build_config({}, ["policy.algorithm=best_of_n"]).policy.n == 4


@pytest.mark.parametrize(("overrides", "needle"), [
    (["policy.algorithm=grpo", "policy.vf_coef=0.5"], "policy.vf_coef: unknown key for policy.algorithm=grpo"),
    (["policy.gamma=0.9", "policy.algorithm=rloo"], "policy.gamma: unknown key for policy.algorithm=rloo"),
    (["policy.k=8"], "policy.k: unknown key for policy.algorithm=ppo"),
    (["policy.algorithm=best_of_n", "policy.updates=3"], "policy.updates: unknown key"),
    (["policy.algorithm=dpo", "policy.epochs=0"], "policy.epochs"),
    (["policy.algorithm=sarsa"], "policy.algorithm: unknown algorithm 'sarsa'"),
    (["policy.algorithm=rloo", "policy.batch_size=6"], "policy.batch_size"),
    (["policy.max_new_tokens=10"], "policy.max_new_tokens: unknown key"),
])
def test_a_key_the_algorithm_does_not_read_is_refused_by_name(overrides, needle):
    with pytest.raises(ConfigError) as e:
        build_config({}, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_algorithm_override_works_in_any_order_and_on_a_saved_config():
    a = build_config({}, ["policy.k=8", "policy.algorithm=grpo", "policy.batch_size=16"])
    b = build_config({}, ["policy.algorithm=grpo", "policy.batch_size=16", "policy.k=8"])
    assert a == b and (a.policy.k, a.policy.batch_size, a.policy.epochs) == (8, 16, 1)
    # a saved (fully resolved) PPO config switched to GRPO: GRPO's defaults, the values chosen there kept
    saved = build_config({}, ["policy.lr=3e-4", "policy.updates=7"]).model_dump(mode="json")
    grpo = build_config(saved, ["policy.algorithm=grpo"]).policy
    assert (grpo.epochs, grpo.minibatches, grpo.lr, grpo.updates) == (1, 1, 3e-4, 7)
    assert build_config(saved, ["policy.algorithm=dpo"]).policy.algorithm == "dpo"  # PPO's gamma dropped


def test_one_generation_section_for_sampling_policy_and_evaluation():
    cfg = build_config({}, ["generation.max_new_tokens=12", "generation.temperature=0.7"])
    assert (cfg.generation.max_new_tokens, cfg.generation.temperature) == (12, 0.7)
    for old in ("sample.max_new_tokens=5", "eval.temperature=0.5"):
        with pytest.raises(ConfigError, match="unknown key"):
            build_config({}, [old])


def test_config_docs_list_each_algorithms_fields():
    r = subprocess.run([sys.executable, "-m", "rlhf_lab.cli", "config", "docs"], capture_output=True, text=True)
    assert r.returncode == 0
    rows = dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line and line[0] != " ")
    assert rows["policy.epochs"].startswith("ppo: 4, rloo: 1, grpo: 1")
    assert "[rloo, grpo]" in r.stdout.split("policy.k = ", 1)[1].splitlines()[1]
    assert "[ppo]" in r.stdout.split("policy.vf_coef = ", 1)[1].splitlines()[1]
    assert "generation.max_new_tokens" in rows and "policy.max_new_tokens" not in rows
