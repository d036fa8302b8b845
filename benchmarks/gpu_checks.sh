#!/usr/bin/env bash
# One prepared run on a lent GPU machine: the CUDA tests, then the benchmarks on the real
# dimensions (synthetic weights). Wheels for packages the machine lacks travel in .whl/.
# Everything lands in $OUT (at most 8 files): one log and the JSON results.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
log=$OUT/gpu.log
step() { echo "=== $* ($(date +%T))" | tee -a "$log"; }
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$log"
python3 -c "import torch, transformers, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'bitsandbytes', bitsandbytes.__version__)" 2>&1 | tee -a "$log"
step tests
timeout 140 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_precision_gpu.py 2>&1 | tail -15 | tee -a "$log"
step turns opt-2.7b
timeout 170 python3 benchmarks/bench_turns.py --arch blip2-opt-2.7b --out "$OUT" 2>&1 | grep -v Warning | tee -a "$log"
step precision opt-2.7b
timeout 170 python3 benchmarks/bench_precision.py --arch blip2-opt-2.7b --timeout 60 --out "$OUT" --docs /tmp/benchmarks.md 2>&1 | grep -v Warning | tee -a "$log"
step decode opt-2.7b
timeout 60 python3 benchmarks/bench_decode.py --arch blip2-opt-2.7b --out "$OUT" 2>&1 | grep -v Warning | tee -a "$log"
step turns flan-t5-xl
timeout 150 python3 benchmarks/bench_turns.py --arch blip2-flan-t5-xl --out "$OUT" 2>&1 | grep -v Warning | tee -a "$log"
step done
