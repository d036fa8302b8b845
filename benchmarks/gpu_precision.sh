#!/usr/bin/env bash
# One prepared run on a lent GPU machine for the precision work: the precision CUDA tests, then
# bench_precision on the real dimensions of blip2-opt-2.7b and blip2-flan-t5-xl, then the
# unquantized-modules study on blip2-opt-2.7b. Wheels for packages the machine lacks travel in
# $WHEELS (default .whl/). Everything lands in $OUT: one log and the JSON results.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
wheels=${WHEELS:-.whl}
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
log=$OUT/precision-gpu.log
step() { echo "=== $* ($(date +%T))" | tee -a "$log"; }
step machine
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee -a "$log"
python3 -c "import torch, transformers, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'bitsandbytes', bitsandbytes.__version__)" 2>&1 | tee -a "$log"
step tests
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_precision_gpu.py 2>&1 | tail -15 | tee -a "$log"
python3 -m chatbot models 2>&1 | tee -a "$log"
step precision opt-2.7b
timeout 240 python3 benchmarks/bench_precision.py --arch blip2-opt-2.7b --timeout 100 --out "$OUT" --docs /tmp/benchmarks.md 2>&1 | tee -a "$log"
step precision flan-t5-xl
timeout 200 python3 benchmarks/bench_precision.py --arch blip2-flan-t5-xl --timeout 100 --out "$OUT" --docs /tmp/benchmarks.md 2>&1 | tee -a "$log"
step unquantized modules opt-2.7b
timeout 150 python3 benchmarks/bench_unquantized_modules.py --arch blip2-opt-2.7b --out "$OUT" 2>&1 | grep -v "^  " | tee -a "$log"
step done
