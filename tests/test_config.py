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
