"""Published findings about RLHF, each reproduced with its cause switched on and off: `rlhf-lab reproduce`.

findings.py (the registry), measures.py (numbers from audit.json), verdict.py (verdicts over seeds),
runner.py (runs through the sweep machinery), tables.py (reproductions.md and .html).
"""

from rlhf_lab.reproduce.findings import BY_NAME, FINDINGS, Finding, Measure
from rlhf_lab.reproduce.runner import reproduce

__all__ = ["BY_NAME", "FINDINGS", "Finding", "Measure", "reproduce"]
