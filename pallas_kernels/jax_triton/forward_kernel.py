"""The forward DMA kernel in the Triton language (no JAX here: ``forward.py`` launches it).

Same contract as ``pallas_kernels.gpu.forward.dma_forward`` in its sequence layout: program
(n, b, hb) takes the ``ROWS = BLOCK_Q * R`` query rows of tile n (row r: position
``n * BLOCK_Q + r // R``, head ``hb * R + r % R``), walks the tile's carried keys (one row of
the table, ``BLOCK_K`` at a time) and then its own keys ``[t0, t0 + BLOCK_Q)``, and keeps key j
for a query at sequence position t iff ``start[j] <= t < end[j]``.

What Triton gives here that the Pallas lowering does not: a software-pipelined key loop
(``tl.range(num_stages=...)``, so the gathers of step i+1 are in flight while step i computes),
and the softmax in base 2 with the scale folded into one multiply (``exp2``).

Every array is contiguous: q and out (B, T, H, D); k and v (B, Hkv, Tk, D); bias, start and end
(B, Hb, Tk); table (B, Hb, tiles, W); lse (B, Hb, tiles, ROWS), natural log, +inf where a row
keeps no key (its output is 0).

Reference: ``pallas_kernels.gpu.reference.interval_attention_reference``.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(0.6931471805599453)


def launch_constants(q_shape, kv_shape, table_shape, *, scale, block_q, block_k, q_offset, bias_heads, own_keys,
                     num_stages) -> dict:
    """The kernel's scalar and compile-time arguments for q (B, T, H, D), k/v (B, Hkv, Tk, D) and a
    table (B, Hb, tiles, W); checks what the kernel assumes."""
    heads, head_dim = q_shape[2], q_shape[3]
    kv_heads, kv_len = kv_shape[1], kv_shape[2]
    width = table_shape[-1]
    per_bias = heads // bias_heads
    power_of_two = lambda n: n > 0 and n & (n - 1) == 0  # noqa: E731
    if not (power_of_two(per_bias) and power_of_two(head_dim) and head_dim >= 16 and power_of_two(block_k)):
        raise ValueError(f"R = {per_bias}, D = {head_dim} and block_k = {block_k} must be powers of two (D >= 16)")
    if block_q % block_k or width % block_k or width <= 0 or q_shape[1] % block_q or bias_heads % kv_heads:
        raise ValueError(f"block_q={block_q} and the table width {width} must be multiples of block_k={block_k}, "
                         f"T={q_shape[1]} of block_q, Hb={bias_heads} of Hkv={kv_heads}")
    return dict(qk_scale=float(scale) * LOG2E, Q_OFFSET=q_offset, KV_LEN=kv_len, WIDTH=width, HEADS=heads,
                BIAS_HEADS=bias_heads, KV_HEADS=kv_heads, HEAD_DIM=head_dim, BLOCK_Q=block_q, BLOCK_K=block_k,
                R=per_bias, OWN_KEYS=bool(own_keys), STAGES=num_stages)


@triton.jit
def _visit_keys(acc, row_max, row_sum, q, query, keys, K, V, Bias, Start, End, kv_base, key_base, qk_scale,
                KV_LEN: tl.constexpr, HEAD_DIM: tl.constexpr):
    """One online-softmax step over the key indices ``keys`` (BLOCK_K,), -1 or >= KV_LEN: absent.
    Logits are in base 2 (``qk_scale`` = scale * log2 e; the bias is scaled by log2 e too).

    Per score element the mask is one subtraction and one unsigned compare, ``t - start < span``
    (span = end - start, 0 for absent keys), and masked logits are -inf, so one ``where`` on the
    row maxima replaces one per element."""
    dims = tl.arange(0, HEAD_DIM)
    present = (keys >= 0) & (keys < KV_LEN)
    safe = tl.where(present, keys, 0)
    k = tl.load(K + kv_base + safe[:, None] * HEAD_DIM + dims[None, :])
    v = tl.load(V + kv_base + safe[:, None] * HEAD_DIM + dims[None, :])
    bias = tl.load(Bias + key_base + safe).to(tl.float32) * _LOG2E
    start = tl.load(Start + key_base + safe)
    end = tl.load(End + key_base + safe)
    span = tl.where(present & (end > start), end - start, 0).to(tl.uint32, bitcast=True)
    keep = (query[:, None] - start[None, :]).to(tl.uint32, bitcast=True) < span[None, :]
    logits = tl.where(keep, tl.dot(q, tl.trans(k)) * qk_scale + bias[None, :], float("-inf"))
    new_max = tl.maximum(row_max, tl.max(logits, axis=1))
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # rows that have kept no key yet
    weights = tl.exp2(logits - shift[:, None])
    correction = tl.exp2(row_max - shift)
    acc = acc * correction[:, None] + tl.dot(weights.to(v.dtype), v)
    return acc, new_max, row_sum * correction + tl.sum(weights, axis=1)


@triton.jit
def dma_forward_kernel(
    Q, K, V, Bias, Start, End, Table, qk_scale, Out, Lse,  # jax_triton's order: inputs, then outputs
    Q_OFFSET: tl.constexpr, KV_LEN: tl.constexpr, WIDTH: tl.constexpr, HEADS: tl.constexpr,
    BIAS_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr, R: tl.constexpr, OWN_KEYS: tl.constexpr, STAGES: tl.constexpr,
):
    tile = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    bias_head = tl.program_id(2)
    tiles = tl.num_programs(0)
    ROWS: tl.constexpr = BLOCK_Q * R
    rows = tl.arange(0, ROWS)
    dims = tl.arange(0, HEAD_DIM)
    position = tile * BLOCK_Q + rows // R
    q_rows = (batch * tiles * BLOCK_Q + position) * HEADS + bias_head * R + rows % R
    q = tl.load(Q + q_rows[:, None] * HEAD_DIM + dims[None, :])
    query = Q_OFFSET + position

    kv_base = (batch * KV_HEADS + bias_head // (BIAS_HEADS // KV_HEADS)) * KV_LEN * HEAD_DIM
    key_base = (batch * BIAS_HEADS + bias_head) * KV_LEN
    slab_tile = (batch * BIAS_HEADS + bias_head) * tiles + tile
    acc = tl.zeros((ROWS, HEAD_DIM), tl.float32)
    row_max = tl.full((ROWS,), float("-inf"), tl.float32)
    row_sum = tl.zeros((ROWS,), tl.float32)
    lanes = tl.arange(0, BLOCK_K)
    for step in tl.range(0, WIDTH // BLOCK_K, num_stages=STAGES):
        keys = tl.load(Table + slab_tile * WIDTH + step * BLOCK_K + lanes)
        acc, row_max, row_sum = _visit_keys(acc, row_max, row_sum, q, query, keys, K, V, Bias, Start, End,
                                            kv_base, key_base, qk_scale, KV_LEN, HEAD_DIM)
    if OWN_KEYS:
        tile_start = Q_OFFSET + tile * BLOCK_Q
        for step in tl.range(0, BLOCK_Q // BLOCK_K, num_stages=STAGES):
            keys = tile_start + step * BLOCK_K + lanes
            acc, row_max, row_sum = _visit_keys(acc, row_max, row_sum, q, query, keys, K, V, Bias, Start, End,
                                                kv_base, key_base, qk_scale, KV_LEN, HEAD_DIM)
    empty = row_sum == 0
    safe_sum = tl.where(empty, 1.0, row_sum)
    out = tl.where(empty[:, None], 0.0, acc / safe_sum[:, None])
    tl.store(Out + q_rows[:, None] * HEAD_DIM + dims[None, :], out.to(Out.dtype.element_ty))
    lse = tl.where(empty, float("inf"), row_max * _LN2 + tl.log(safe_sum))
    tl.store(Lse + slab_tile * ROWS + rows, lse)

