"""rlhf-lab: RLHF end to end, and an audit of what it does to a model.

    from rlhf_lab import load_config, run
    folder = run(load_config(overrides=["policy.updates=20"]), out="runs/demo")
"""

from rlhf_lab.config import Config, ConfigError, load_config
from rlhf_lab.pipeline import run, step

__all__ = ["Config", "ConfigError", "load_config", "run", "step"]
__version__ = "0.1.0"
