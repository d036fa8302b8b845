#!/usr/bin/env bash
# Download into .whl/ the wheels the lent GPU machine's image lacks, for benchmarks/gpu_checks.sh to install
# there (it has no network). The image (NVIDIA H200, Python 3.12) holds torch, Triton, tokenizers,
# safetensors and huggingface_hub, but transformers 5.17 (we need 5.24) and no bitsandbytes.
# About 56 MB; .whl/ is ignored by git and travels with `run`'s carry: [".whl"].
#
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl transformers==5.24.0 bitsandbytes==0.50.2
ls -l .whl
