"""The Pallas GPU kernels lower for CUDA (Triton IR; Mosaic GPU for that forward backend), checked
on the CPU (no GPU needed).

``jax.export`` with ``platforms=["cuda"]`` runs every Pallas Triton lowering rule, so a primitive
the Triton lowering lacks (``slice``, for one, in JAX 0.10-0.11), or a type mix-up in a loop,
fails here instead of on the GPU machine. Triton's own compilation to PTX happens later, on the
GPU, and is what ``tests/ops/test_pallas_gpu.py`` covers.
"""

import jax
import jax.numpy as jnp
import pytest
from jax import export

from dma_jax import PallasConfig, dma_attention

TRITON = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")


def _lowers_for_cuda(fn, *shapes):
    exported = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[TRITON])(*shapes)
    text = exported.mlir_module()
    assert "__gpu$xla.gpu.triton" in text  # the kernels really are Triton calls
    return text


@pytest.mark.parametrize("head_dim,dtype,causal,new_paths",
                         [(128, jnp.bfloat16, True, False), (64, jnp.float16, True, False),
                          (256, jnp.bfloat16, False, False), (128, jnp.bfloat16, True, True),
                          (64, jnp.float16, True, True), (80, jnp.bfloat16, True, True)])
def test_attention_forward_and_backward_lower_for_cuda(head_dim, dtype, causal, new_paths):
    """``new_paths``: the sequence layout and the transposed slot sums (the defaults), else the tile
    layout and the plain slot sums."""
    q = jax.ShapeDtypeStruct((1, 1000, 8, head_dim), dtype)
    kv = jax.ShapeDtypeStruct((1, 1000, 2, head_dim), dtype)
    bias = jax.ShapeDtypeStruct((1, 2, 1000), jnp.float32)

    def loss(q, k, v, b):
        config = PallasConfig(sequence_layout=new_paths, slot_sums_transposed=new_paths)
        out = dma_attention(q, k, v, b, 256, causal=causal, implementation=config)
        return jnp.sum(out.astype(jnp.float32))

    text = _lowers_for_cuda(jax.grad(loss, argnums=(0, 1, 2, 3)), q, kv, kv, bias)
    # the forward and both backward passes (the default selection runs in XLA)
    assert text.count("__gpu$xla.gpu.triton") >= 3


def test_mosaic_gpu_forward_lowers_for_cuda_beside_the_triton_backward():
    """forward_backend="mosaic_gpu": the forward is one Mosaic GPU call (the kernel is traced and
    lowered to Mosaic GPU's dialect here), the two backward passes stay Triton calls."""
    q = jax.ShapeDtypeStruct((1, 1000, 8, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 1000, 2, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, 2, 1000), jnp.float32)

    def loss(q, k, v, b):
        out = dma_attention(q, k, v, b, 256, implementation=PallasConfig(forward_backend="mosaic_gpu"))
        return jnp.sum(out.astype(jnp.float32))

    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")
    exported = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                             disabled_checks=[TRITON, mosaic])(q, kv, kv, bias)
    text = exported.mlir_module()
    assert text.count("@mosaic_gpu_v2") == 1 and text.count("__gpu$xla.gpu.triton") >= 2


def test_mosaic_gpu_kernels_lower_for_cuda():
    """forward_backend and backward_backend "mosaic_gpu": the forward and both backward passes are
    Mosaic GPU calls, none is a Triton call."""
    q = jax.ShapeDtypeStruct((1, 1000, 8, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 1000, 2, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, 2, 1000), jnp.float32)
    config = PallasConfig(forward_backend="mosaic_gpu", backward_backend="mosaic_gpu")

    def loss(q, k, v, b):
        return jnp.sum(dma_attention(q, k, v, b, 256, implementation=config).astype(jnp.float32))

    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")
    exported = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                             disabled_checks=[TRITON, mosaic])(q, kv, kv, bias)
    text = exported.mlir_module()
    assert text.count("@mosaic_gpu_v2") == 3 and "__gpu$xla.gpu.triton" not in text


@pytest.mark.parametrize("kv_sequence_layout,q_sequence_backward,transposes", [
    (False, False, 7), (True, False, 3), (False, True, 4), (True, True, 0)])
def test_kernels_reading_tensors_where_they_lie_drop_their_transposes(kv_sequence_layout, q_sequence_backward,
                                                                       transposes):
    """One query head per bias head (R = 1), all three passes on Mosaic GPU: the bf16 transposes of
    forward+backward are k, v into (B, Hkv, Tk, D) and dk, dv back (4: ``kv_sequence_layout``
    removes them), and q, dO into the backward's tiles and dq back (3: ``q_sequence_backward``)."""
    q = kv = jax.ShapeDtypeStruct((1, 1024, 4, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, 4, 1024), jnp.float32)
    config = PallasConfig(forward_backend="mosaic_gpu", backward_backend="mosaic_gpu",
                          kv_sequence_layout=kv_sequence_layout, q_sequence_backward=q_sequence_backward)

    def loss(q, k, v, b):
        return jnp.sum(dma_attention(q, k, v, b, 256, implementation=config).astype(jnp.float32))

    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")
    text = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                         disabled_checks=[mosaic])(q, kv, kv, bias).mlir_module()
    assert text.count("@mosaic_gpu_v2") == 3
    lines = [line for line in text.splitlines() if "stablehlo.transpose" in line and "bf16>" in line]
    assert len(lines) == transposes, lines


def test_fused_key_grads_lower_and_finish_dk_dv_in_the_query_major_pass():
    """``fused_key_grads`` (R = 1, Hb = Hkv, queries = keys, all passes on Mosaic GPU): the three
    passes still lower for CUDA (the kernels traced), the key-major pass runs first and its two
    float32 sums become inputs of the query-major pass, and dK and dV leave that pass in bf16: the
    unfused path's two float32 -> bf16 conversions of (B, Tk, Hkv, D) gradients are gone."""
    q = kv = jax.ShapeDtypeStruct((1, 1024, 4, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, 4, 1024), jnp.float32)
    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")

    def lowered(fused):
        config = PallasConfig(forward_backend="mosaic_gpu", backward_backend="mosaic_gpu", fused_key_grads=fused)

        def loss(q, k, v, b):
            return jnp.sum(dma_attention(q, k, v, b, 256, implementation=config).astype(jnp.float32))

        text = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                             disabled_checks=[mosaic])(q, kv, kv, bias).mlir_module()
        calls = [line for line in text.splitlines() if "stablehlo.custom_call @mosaic_gpu_v2" in line]
        casts = [line for line in text.splitlines()
                 if "stablehlo.convert" in line and "(tensor<1x1024x4x128xf32>) -> tensor<1x1024x4x128xbf16>" in line]
        return calls, len(casts)

    (unfused_calls, unfused_casts), (fused_calls, fused_casts) = lowered(False), lowered(True)
    assert len(unfused_calls) == len(fused_calls) == 3
    assert fused_casts == unfused_casts - 2
    # the query-major pass (4 results: dq, dk, dv, db_own) reads the key-major pass' results #0, #1
    key_major = next(line.split("=")[0].strip().split(":")[0] for line in fused_calls if ":3 = " in line)
    query_major = next(line for line in fused_calls if ":4 = " in line)
    assert f"{key_major}#0" in query_major and f"{key_major}#1" in query_major


@pytest.mark.parametrize("causal,boolean_scatters", [(True, 0), (False, 1)])
def test_key_major_pass_finds_carried_keys_without_a_scatter_where_causal(causal, boolean_scatters):
    """The Mosaic GPU key-major pass leaves rows of keys no tile lists unwritten; the wrapper zeroes
    them. For causal tables it knows those keys from the live ranges (``ever_carried``), so the
    gradient has no boolean scatter over the tables (0.74 ms at 32K on an H100); non-causal tables
    still get one."""
    q = jax.ShapeDtypeStruct((1, 1000, 8, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 1000, 2, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, 2, 1000), jnp.float32)
    config = PallasConfig(forward_backend="mosaic_gpu", backward_backend="mosaic_gpu")

    def loss(q, k, v, b):
        return jnp.sum(dma_attention(q, k, v, b, 256, causal=causal, implementation=config).astype(jnp.float32))

    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")
    text = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                         disabled_checks=[mosaic])(q, kv, kv, bias).mlir_module()
    scatters = [line for line in text.splitlines() if "^bb0" in line and "tensor<i1>" in line and "scatter" in line]
    assert len(scatters) == boolean_scatters


def test_mosaic_gpu_kernels_inside_shard_map_keep_the_varying_axes():
    """Inside ``shard_map`` (varying axes checked) the Mosaic GPU kernels' outputs, which
    ``plgpu.kernel`` returns invariant, are cast to the inputs' variance: the custom VJP's
    gradients must have it (the GPU test ``test_inside_shard_map_with_varying_axes_checked``)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = jax.make_mesh((1,), ("data",))
    config = PallasConfig(forward_backend="mosaic_gpu", backward_backend="mosaic_gpu")
    attention = jax.shard_map(lambda *a: dma_attention(*a, 64, implementation=config), mesh=mesh,
                              in_specs=(P("data"),) * 4, out_specs=P("data"))
    shape = lambda *s: jax.ShapeDtypeStruct(s[:-1], s[-1], sharding=NamedSharding(mesh, P("data")))  # noqa: E731
    args = (shape(1, 512, 4, 64, jnp.bfloat16), shape(1, 512, 2, 64, jnp.bfloat16), shape(1, 512, 2, 64, jnp.bfloat16),
            shape(1, 2, 512, jnp.float32))
    loss = lambda *a: jnp.sum(attention(*a).astype(jnp.float32))  # noqa: E731
    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")
    exported = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                             disabled_checks=[TRITON, mosaic])(*args)
    assert exported.mlir_module().count("@mosaic_gpu_v2") == 3


@pytest.mark.parametrize("segments", [False, True])
def test_default_pallas_forward_has_no_host_synchronised_loop(segments):
    # On the GPU an XLA while loop reads its condition on the host every turn, which stalls the
    # launch queue: the selection (binary search, pointer jumping) once had two of them.
    q = jax.ShapeDtypeStruct((1, 1000, 8, 64), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 1000, 2, 64), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, 2, 1000), jnp.float32)
    segment_ids = jax.ShapeDtypeStruct((1, 1000), jnp.int32) if segments else None

    def forward(q, k, v, b, s=None):
        return dma_attention(q, k, v, b, 256, segment_ids=s, implementation=PallasConfig())

    args = (q, kv, kv, bias) + ((segment_ids,) if segments else ())
    assert "stablehlo.while" not in _lowers_for_cuda(forward, *args)
