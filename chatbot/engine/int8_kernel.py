"""Triton kernels for products of a few rows with int8 weights: out = x @ (q * s).T + bias.

Decoding multiplies one row by every weight matrix, so it is bound by reading the weights: int8
halves that against bfloat16.

- One row (every decode step): a matrix-vector kernel. Each program reads BLOCK_N weight rows along
  K, converts them in registers (exact: |q| <= 127), accumulates in float32, and applies the scale
  and bias before it stores: one kernel per layer, as many as a bfloat16 layer launches (on a GPU
  kernel launches are a large part of a decode step, even inside a CUDA graph). The block shape is
  chosen by Triton's autotuner, once per weight shape, on the machine it runs on.
- 2 to 16 rows (short prefills): a 16-row tile on the tensor cores; matrices with few output
  columns are split along K into float32 partials summed in a fixed order (deterministic, unlike
  atomic adds), then scaled.

Imported only on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_M = 16  # rows per tile of the few-rows kernel: tensor-core products need 16
BLOCK_N = 32
BLOCK_K = 256
TARGET_PROGRAMS = 4  # aim for this many programs per processor, so enough loads are in flight


@triton.autotune(
    configs=[
        triton.Config({"BLOCK_N": 2, "BLOCK_K": 1024}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_N": 4, "BLOCK_K": 512}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_N": 8, "BLOCK_K": 256}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_N": 16, "BLOCK_K": 256}, num_warps=4, num_stages=4),
    ],
    key=["N", "K"],
    cache_results=True,  # the best block shape per weight shape is kept in Triton's cache folder
)
@triton.jit
def _int8_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, N, K, stride_wn,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_mask = cols < K
        x = tl.load(x_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rows[:, None] * stride_wn + cols[None, :], mask=row_mask[:, None] & col_mask[None, :],
                    other=0)
        acc += w.to(tl.float32) * x[None, :]
    total = tl.sum(acc, axis=1) * tl.load(scale_ptr + rows, mask=row_mask, other=0.0)
    if HAS_BIAS:
        total += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=row_mask)


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
    if m == 1:
        out = torch.empty((1, n), dtype=x.dtype, device=x.device)
        def tuned_grid(meta: dict) -> tuple[int]:  # the autotuner's block size decides the number of programs
            return (triton.cdiv(n, meta["BLOCK_N"]),)

        _int8_gemv_kernel[tuned_grid](x, weight, scale, scale if bias is None else bias, out, n, k, weight.stride(0),
                                HAS_BIAS=bias is not None)
        return out
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
