#!/usr/bin/env bash
# The GPU benchmark as one prepared run (issues 3, 18): sampling alone (HF generate vs our loop vs our CUDA-graph
# decoding), then ours vs TRL on the GPT-2-small shape (512-token vocabulary), bf16 autocast, 64 sequences × 128
# new tokens (benchmarks/bench_shapes.py, size "gpt2"; the peer's models loaded in bf16), each row with the PPO layout
# and the dtype each side was seen computing in. Writes everything under $OUT.
#
# The device has no network. Fetch the wheels first, on a machine that has it, into .whl/ (git-ignored):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/trl116 \
#       trl==1.16.0 datasets==5.2.0 dill multiprocess
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/trl112 trl==1.12.0
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/deps transformers==5.24.0 \
#       pydantic pydantic-core annotated-types typing-inspection sqlalchemy greenlet krippendorff ...
# and carry .whl along (the device's image has torch, accelerate, numpy, pyarrow; see the project's
# dependencies for the rest). SKIP_WHEELS=1 uses the current environment as it is; SKIP_GEN=1 skips the sampling
# benchmark; ALGOS=… and SIZE=… pick what bench_vs_trl.py compares.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/bench_out}
DEPS=${DEPS:-/tmp/bench_deps}
ALGOS=${ALGOS:-ppo_shared,grpo,rloo,ppo,dpo,rm}
SIZE=${SIZE:-gpt2}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
if [ -z "${SKIP_WHEELS:-}" ]; then
  for v in deps trl116 trl112; do
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$DEPS/$v" .whl/$v/*.whl \
      || { echo "installing .whl/$v failed"; exit 1; }
  done
  export PYTHONPATH="$PWD/src:$DEPS/deps:$DEPS/trl116:${PYTHONPATH:-}"
  PEER112="$DEPS/trl112"
else
  export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
  PEER112=""
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  "$PY" -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
} | tee "$OUT/env.txt"

if [ -z "${SKIP_GEN:-}" ]; then
  echo "== sampling alone"
  timeout 150 "$PY" benchmarks/bench_generation.py --size "${GEN_SIZE:-gpt2}" --json "$OUT/generation.json" \
    2>&1 | tee "$OUT/generation.log" | tail -4
fi

echo "== ours vs TRL, size $SIZE: $ALGOS"
peer=()
[ -n "$PEER112" ] && peer=(--trl112-python "$PY" --trl112-path "$PEER112")
[ -z "$PEER112" ] && peer=(--trl112-python "${TRL112_PYTHON:-/tmp/trl112/bin/python}")
"$PY" benchmarks/bench_vs_trl.py --sizes "$SIZE" --algos "$ALGOS" --timeout "${RUN_TIMEOUT:-150}" "${peer[@]}" \
  --markdown "$OUT/vs_trl.md" --json "$OUT/vs_trl.json" 2>&1 | tee "$OUT/vs_trl.log"

# Each row's "dtype ours" / "dtype peer" is observed (bench_dtype.py hooks every model's first matmul), not assumed.
echo "== compute dtypes: every model of both sides in the stated precision?"
if grep -q -e "MISMATCH" -e "NOT OBSERVED" "$OUT/vs_trl.log"; then
  grep -h "compute dtypes differ" "$OUT/vs_trl.log"; echo "some rows compared unlike precisions (above)"
else
  echo "yes: no row mixes precisions or leaves them unobserved"
fi
