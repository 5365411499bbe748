"""benchmarks/gpu_fusions.py: reading compiled HLO for kernels and recomputing fusions (the GPU
compile itself needs JAX's CUDA plugin, which CI does not install)."""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.gpu_fusions import (DEFAULT_TARGET, block_part, entry_kernels, gpu_mesh, main, output_bytes, program,
                                    recomputing_fusions, step_program)

HLO = """HloModule m

%fused_gather (p0: s32[64,16], p1: s32[8]) -> s32[8,16] {
  %p0 = s32[64,16]{1,0} parameter(0)
  %c = s32[] constant(0)
  %rw = s32[64,16]{1,0} reduce-window(%p0, %c), window={size=16x1}, to_apply=%add
  %p1 = s32[8]{0} parameter(1)
  ROOT %g = s32[8,16]{1,0} gather(%rw, %p1), offset_dims={1}, slice_sizes={1,16}
}

%fused_add (p0: s32[8]) -> s32[8] {
  %p0 = s32[8]{0} parameter(0)
  ROOT %a = s32[8]{0} add(%p0, %p0)
}

ENTRY %main (a: s32[64,16], b: s32[8]) -> s32[8,16] {
  %a = s32[64,16]{1,0} parameter(0)
  %b = s32[8]{0} parameter(1)
  %loop_add_fusion = s32[8]{0} fusion(%b), kind=kLoop, calls=%fused_add, metadata={op_name="jit(f)/add"}
  %sorted = s32[8]{0} sort(%loop_add_fusion), dimensions={0}, to_apply=%lt
  ROOT %loop_gather_fusion = s32[8,16]{1,0} fusion(%a, %sorted), kind=kLoop, calls=%fused_gather, metadata={op_name="jit(f)/dma_selection/gather"}
}
"""


def test_entry_kernels_lists_what_the_entry_launches():
    kernels = entry_kernels(HLO)
    assert [(k["name"], k["opcode"]) for k in kernels] == [("loop_add_fusion", "fusion"), ("sorted", "sort"),
                                                          ("loop_gather_fusion", "fusion")]
    assert kernels[2]["op_name"] == "jit(f)/dma_selection/gather" and kernels[2]["shape"].startswith("s32[8,16]")


def test_a_gather_beside_a_reduce_window_is_flagged():
    [fusion] = recomputing_fusions(HLO)
    assert fusion["name"] == "loop_gather_fusion" and fusion["gathers"] == 1 and fusion["reduce_windows"] == 1


def test_a_cpu_compiled_program_reads_the_same_way():
    text = jax.jit(lambda x: jnp.cumsum(x * 2.0)[::3]).lower(jnp.ones(512)).compile().as_text()
    assert entry_kernels(text)


def test_without_the_cuda_plugin_it_says_what_to_install(monkeypatch):
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present")
    for name, value in (("CUDA_VISIBLE_DEVICES", "-1"), ("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")):
        monkeypatch.setenv(name, value)  # what gpu_mesh sets, undone after the test
    with pytest.raises(SystemExit, match="CUDA plugin"):
        gpu_mesh(DEFAULT_TARGET)


def test_the_selection_program_runs_and_the_attention_program_lowers_for_cuda():
    args = argparse.Namespace(program="selection", batch=2, length=256, heads=4, kv_heads=2, window=64, segments=True)
    fn, arguments = program(args)
    bias = jax.random.normal(jax.random.key(0), arguments[0].shape)
    start, end, tables = jax.jit(fn)(bias, jnp.ones(arguments[1].shape, jnp.int32))
    assert np.all(np.asarray(end) >= np.asarray(start))
    args.program = "attention"
    fn, arguments = program(args)
    from jax import export

    exported = export.export(jax.jit(fn), platforms=["cuda"])(*arguments)
    assert "mosaic_gpu" in exported.mlir_module()


@pytest.mark.parametrize("attention, kernel", [("dma", "mosaic_gpu"), ("mha", "cudnn")])
def test_the_block_program_lowers_for_cuda_on_each_attentions_kernels(attention, kernel):
    if attention == "mha":
        pytest.importorskip("jax_cuda12_plugin", reason="cuDNN's attention lowers only with JAX's CUDA plugin")
    args = argparse.Namespace(program="block", attention=attention, batch=2, length=256, heads=2, kv_heads=2,
                              window=64, segments=True)
    fn, arguments = program(args)
    from jax import export

    text = export.export(jax.jit(fn), platforms=["cuda"])(*arguments).mlir_module()
    assert kernel in text and ("mosaic_gpu" in text) == (attention == "dma")


def test_the_step_program_compiles_a_configs_training_step():
    """Compiled here for the CPU (the CUDA plugin is not installed); the target's mesh only lends its device."""
    args = argparse.Namespace(config="configs/mqar_quick.py", overrides=["model.attention=mha", "data.global_batch_size=4"])
    text = step_program(args, jax.make_mesh((1,), ("device",)))
    from benchmarks.step_profile import pass_of

    assert {"forward", "backward", "update"} <= {pass_of(kernel["op_name"]) for kernel in entry_kernels(text)}


def test_overrides_apply_to_the_step_program_only():
    with pytest.raises(SystemExit):
        main(["--program", "selection", "model.window=8"])


def test_output_bytes_reads_arrays_and_tuples():
    assert output_bytes("bf16[32,2048]{1,0}") == 32 * 2048 * 2
    assert output_bytes("(f32[4,8]{1,0}, pred[3]{0}, s32[]{})") == 4 * 8 * 4 + 3 + 4


def test_block_parts_name_the_attention_custom_calls():
    from benchmarks.step_profile import part_of

    call = lambda name, op_name="": dict(name=name, opcode="custom-call", op_name=op_name)
    assert block_part(call("mpmd_map.3"), part_of) == "DMA kernels"
    assert block_part(call("dot_product_attention_bwd.9"), part_of) == "cuDNN attention"
    assert block_part(dict(name="loop_select_fusion", opcode="fusion",
                           op_name="jit(loss)/dense_causal_attention/select_n"), part_of) == "dense attention glue"
