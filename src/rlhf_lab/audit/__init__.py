"""The audit: what RLHF did to the model, tension by tension, SFT vs RLHF side by side, with intervals.

One module per tension (overoptimisation, sycophancy, diversity, flattening, deception, harm), each with
`measure(ctx) -> section`, `plot(section, plt)` and `reading(section)`; shared statistics in `stats`.
Stands on `models/` and `world/` only — never on the training steps.

    run_audit(run_dir, checkpoint=None) -> dict       # writes audit.json
    write_report(run_dir) -> Path                     # report.html
    write_comparison([run_a, run_b], out) -> Path     # several runs side by side
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["run_audit", "write_comparison", "write_report"]

if TYPE_CHECKING:
    from rlhf_lab.audit.compare import write_comparison
    from rlhf_lab.audit.core import run_audit
    from rlhf_lab.audit.report import write_report


def __getattr__(name: str):
    # Lazy: `rlhf_lab.audit.stats` and the report must not pay for torch.
    if name == "run_audit":
        from rlhf_lab.audit.core import run_audit

        return run_audit
    if name == "write_report":
        from rlhf_lab.audit.report import write_report

        return write_report
    if name == "write_comparison":
        from rlhf_lab.audit.compare import write_comparison

        return write_comparison
    raise AttributeError(name)
