#!/usr/bin/env bash
# One prepared run on a lent GPU machine, under 10 minutes: the CUDA tests, then the GPU benchmarks at
# the real dimensions (synthetic weights), most important first, each with its own time limit.
#
#   bash benchmarks/gpu_checks.sh            # results in $OUT (default /tmp/gpu-out)
#   OPT=medium-opt T5=medium-flan-t5 GEMV="--hidden 256 --ffn 1024 --layers 4" bash benchmarks/gpu_checks.sh   # a rehearsal (CPU too)
#
# Wheels for packages the machine lacks (transformers 5.24, bitsandbytes) travel in .whl/: make them here
# with `bash benchmarks/gpu_wheels.sh` and carry .whl with the run. The device returns at most 8 files
# from $OUT, so everything but the log travels as one archive, results.tar.gz, rewritten after every
# step: a run cut short keeps what it measured. Unpack it into benchmarks/results/; `python
# benchmarks/gpu_report.py` prints the docs' decode and targets tables from it. The whole run keeps
# within BUDGET seconds (default 570): a step's limit shrinks to what is left, and a step with under
# 20 s left is skipped, said so in the log.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu-out}
OPT=${OPT:-blip2-opt-2.7b}
T5=${T5:-blip2-flan-t5-xl}
PRECISIONS=${PRECISIONS:-bfloat16 int8 4bit 8bit-t0 8bit}  # bfloat16 first: the others' logits are compared with it
BUDGET=${BUDGET:-570}
GEMV=${GEMV:-}  # bench_gemv's shape flags; empty: OPT-2.7B's (a CPU rehearsal: GEMV="--hidden 256 --ffn 1024 --layers 4")
results=/tmp/gpu-results
mkdir -p "$OUT" "$results"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
log=$OUT/gpu.log
step() { echo "=== $* ($(date +%T))" | tee -a "$log"; }
pack() { tar -czf "$OUT/results.tar.gz" -C "$results" . 2>/dev/null; }
run() {  # run LIMIT COMMAND...: the output, less library chatter, into the log; the archive refreshed after
  local limit=$1 left=$((BUDGET - SECONDS))
  shift
  if [ "$left" -lt 20 ]; then
    echo "skipped: ${left}s of the ${BUDGET}s budget left" | tee -a "$log"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" 2>&1 | grep -v -e "Warning" -e "USDT" -e "warnings.warn" | tee -a "$log"
  pack
}

step machine
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$log"
python3 -c "import torch, transformers, bitsandbytes, triton; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'bitsandbytes', bitsandbytes.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$log"

step "tests: engine, graphs, describe, int8 kernel, quantized models, compiled graphs"
run 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_precision_gpu.py \
  "tests/test_describe.py::test_batched_tokens_equal_one_at_a_time_on_cuda" tests/test_gpu_compiled.py -rs -s

step "turns $OPT (static cache + CUDA graphs) against the naive loop"
run 100 python3 benchmarks/bench_turns.py --arch "$OPT" --out "$results"
step "decode $OPT: ours, ours compiled, plain generate, against the bandwidth limit"
run 200 python3 benchmarks/bench_decode.py --arch "$OPT" --tokens 64 --compiled --out "$results"
step "precision $OPT: $PRECISIONS"
run 170 python3 benchmarks/bench_precision.py --arch "$OPT" $(printf -- "--precision %s " $PRECISIONS) \
  --new-tokens 32 --timeout 60 --out "$results" --docs /tmp/benchmarks.md
step "turns $T5"
run 100 python3 benchmarks/bench_turns.py --arch "$T5" --out "$results"
step "describe $OPT at batch sizes 1, 8, 32, 64"
run 90 python3 benchmarks/bench_describe.py --arch "$OPT" --images 64 --batch-sizes 1,8,32,64 --rounds 1 \
  --out "$results"
step "decode $T5: ours, ours compiled, plain generate"
run 150 python3 benchmarks/bench_decode.py --arch "$T5" --tokens 64 --compiled --out "$results"
step "matrix-vector products at OPT-2.7B's shapes: query, key, value apart and fused"
run 40 python3 benchmarks/bench_gemv.py $GEMV --out "$results"
step "profile $OPT: follow-up turns, plain generate against graphs"
run 80 python3 benchmarks/profile_turns.py --arch "$OPT" --turns 3 --out "$results"
step done
pack
