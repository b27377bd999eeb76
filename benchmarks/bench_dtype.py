"""What precision each model of a benchmark side really computes in, observed rather than assumed.

A trainer's `bf16=True` does not say which forwards run under autocast: TRL 1.12's PPO, for one, generates with
the unwrapped policy and moves its reference and reward models with `.to(device)`, outside accelerate's autocast.
So both sides hook the first matrix multiply of every model they use (policy, reference, reward, value) and count
the dtype of its output on every call; `bench_vs_trl.py` compares the counts of the two sides and the precision the
comparison states. Imports only torch, so TRL 1.12's interpreter can run it too.

A forward recorded as a CUDA graph calls the hook once, while it is recorded (its replays run no Python); the
dtype is still the one the replays compute in, the count is lower.
"""

from __future__ import annotations

# The dtype names the comparison states (bench_shapes: "precision") mapped to what a matmul then outputs.
EXPECTED = {"fp32": "float32", "bf16": "bfloat16"}


def first_matmul(model):
    """The first module of `model` that multiplies by a weight matrix: `nn.Linear`, or GPT-2's `Conv1D` (an
    addmm with the weight transposed). For a language model that is layer 0's first projection: every forward
    of the model runs it, and it computes in the precision of the model's body."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            return module
    raise ValueError(f"{type(model).__name__} has no Linear or Conv1D layer to watch")


class DtypeProbe:
    """Counts, per role, the output dtypes of each watched model's first matmul: {role: {dtype: calls}}."""

    def __init__(self):
        self.seen: dict[str, dict[str, int]] = {}

    def watch(self, role: str, model, *, layer=None):
        """Hook `layer` (default: `first_matmul(model)`) under `role`; returns `model`, so a load can be wrapped
        in place."""
        layer = layer if layer is not None else first_matmul(model)
        counts = self.seen.setdefault(role, {})

        def count(_module, _inputs, output):
            name = str(output.dtype).removeprefix("torch.")
            counts[name] = counts.get(name, 0) + 1

        layer.register_forward_hook(count)
        return model

    def report(self) -> dict[str, dict[str, int]]:
        """The counts, roles that never ran left out."""
        return {role: dict(c) for role, c in self.seen.items() if c}


def mismatches(dtypes: dict[str, dict[str, int]], precision: str) -> list[str]:
    """Roles whose watched matmul computed, on any call, in a dtype other than the stated `precision`'s:
    "reference: float32 ×41" — empty when every forward ran in the stated precision."""
    want = EXPECTED[precision]
    return [f"{role}: " + ", ".join(f"{d} ×{n}" for d, n in counts.items() if d != want)
            for role, counts in dtypes.items() if set(counts) - {want}]
