#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see README "Benchmarks"): the CUDA tests, then the
# benchmarks on the real dimensions. Wheels for packages the machine lacks travel in .whl/.
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
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$log"
step tests
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee -a "$log"
step turns opt-2.7b
timeout 200 python3 benchmarks/bench_turns.py --arch blip2-opt-2.7b --out "$OUT" 2>&1 | grep -v Warning | tee -a "$log"
step decode opt-2.7b
timeout 90 python3 benchmarks/bench_decode.py --arch blip2-opt-2.7b --out "$OUT" 2>&1 | grep -v Warning | tee -a "$log"
if [ -f benchmarks/bench_precision.py ]; then
  step precision opt-2.7b
  timeout 180 python3 benchmarks/bench_precision.py --arch blip2-opt-2.7b --out "$OUT" 2>&1 | grep -v Warning | tee -a "$log"
fi
step turns flan-t5-xl
timeout 200 python3 benchmarks/bench_turns.py --arch blip2-flan-t5-xl --out "$OUT" 2>&1 | grep -v Warning | tee -a "$log"
step done
