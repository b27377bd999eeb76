"""rlhf-lab: RLHF end to end, and an audit of what it does to a model.

    from rlhf_lab import load_config, run
    folder = run(load_config(overrides=["policy.updates=20"]), out="runs/demo")
"""

from rlhf_lab.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config", "run", "step"]
__version__ = "0.1.0"


def run(*args, **kwargs):
    """The whole pipeline over a run folder; see `rlhf_lab.pipeline.run`."""
    from rlhf_lab.pipeline import run as _run

    return _run(*args, **kwargs)


def step(*args, **kwargs):
    """One step over a run folder; see `rlhf_lab.pipeline.step`."""
    from rlhf_lab.pipeline import step as _step

    return _step(*args, **kwargs)
