"""A Triton kernel for products of a few rows with int8 weights: out = x @ (q * s).T + bias.

Decoding multiplies one row by every weight matrix, so it is bound by reading the weights: int8
halves that against bfloat16. Each program computes a 16-row by BLOCK_N-column tile over one slice
of K, converting its int8 tile to the activations' dtype in registers (exact: |q| <= 127) and
accumulating in float32 on the tensor cores. Matrices with few output columns (a 2560-wide layer
has only 80 tiles, against the H200's 132 processors) are split along K into several slices, each
written to its own float32 partial, summed in a fixed order afterwards (deterministic, unlike
atomic adds), then scaled per column. Imported only on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_M = 16  # rows per tile: tensor-core products need 16; decoding uses 1 of them
BLOCK_N = 32
BLOCK_K = 256
TARGET_PROGRAMS = 4  # aim for this many programs per processor, so enough loads are in flight


@triton.jit
def _int8_weight_kernel(
    x_ptr, w_ptr, partial_ptr, M, N, K, tiles_per_split, stride_xm, stride_wn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_start = split * tiles_per_split * BLOCK_K
    for tile in range(0, tiles_per_split):
        k = k_start + tile * BLOCK_K + offs_k
        k_mask = k < K
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + k[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0)
        acc += tl.dot(x, tl.trans(w.to(tl.float32).to(x.dtype)))  # via float32: exact, and the interpreter agrees
    out = partial_ptr + split * M * N + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out, acc, mask=m_mask[:, None] & n_mask[None, :])


def _splits(n: int, k: int, device: torch.device) -> int:
    """How many K slices: enough programs to keep every processor busy, each slice at least 4 tiles of K."""
    processors = torch.cuda.get_device_properties(device).multi_processor_count
    tiles = triton.cdiv(n, BLOCK_N)
    wanted = max(1, (TARGET_PROGRAMS * processors) // tiles)
    most = max(1, k // (4 * BLOCK_K))
    return int(min(wanted, most, 16))


def int8_weight_matmul(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
) -> torch.Tensor:
    """x [M, K] (bfloat16 or float16, M <= 16) times int8 weight [N, K] with per-row scale [N]: [M, N] in x's dtype."""
    m, k = x.shape
    n = weight.shape[0]
    x = x.contiguous()
    splits = _splits(n, k, x.device)
    tiles_per_split = triton.cdiv(triton.cdiv(k, BLOCK_K), splits)
    splits = triton.cdiv(triton.cdiv(k, BLOCK_K), tiles_per_split)
    partial = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, BLOCK_N), splits)
    _int8_weight_kernel[grid](x, weight, partial, m, n, k, tiles_per_split, x.stride(0), weight.stride(0),
                              BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4, num_stages=4)
    out = partial.sum(dim=0) * scale
    if bias is not None:
        out = out + bias
    return out.to(x.dtype)
