"""benchmarks/step_profile.py: kernels put in parts of the model and passes by their name stacks."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks.gpu_breakdown import trace
from benchmarks.step_profile import PARTS, PASSES, main, op_names, part_of, pass_of, profile_ops, split_step


def test_parts_come_from_kernel_names_first_then_name_stacks():
    assert part_of("body_mosaic_gpu_kernel", "") == "DMA kernels"
    assert part_of("cudnn_generated_fort_native_sdpa_sm90_flash_bprop", "") == "cuDNN attention"
    assert part_of("loop_subtract_fusion_4", "jit(step)/jvp()/jit(dma_attention_pallas)/dma_selection/sub") == "DMA selection"
    assert part_of("loop_transpose_fusion_2", "jit(step)/transpose(jvp())/jit(dma_attention_pallas)/add") == "DMA layouts and glue"
    assert part_of("loop_broadcast_fusion", "jit(step)/jvp()/dense_causal_attention/eq") == "dense attention glue"
    assert part_of("nvjet_tst_128x256", "") == "matmuls"
    assert part_of("input_reduce_fusion", "jit(step)/jvp()/rms_norm/reduce_sum") == "other"


def test_passes_come_from_name_stacks():
    assert pass_of("jit(step)/transpose(jvp())/while/body/checkpoint/rematted_computation/dot_general") == "recompute"
    assert pass_of("jit(step)/transpose(jvp())/while/body/checkpoint/mul") == "backward"
    assert pass_of("jit(step)/jvp()/while/body/mul") == "forward"
    assert pass_of("jit(step)/mul") == "update"


def test_a_compiled_gradient_is_split_into_the_scopes_and_passes_it_ran():
    def loss(x):
        with jax.named_scope("dma_selection"):
            y = jnp.sort(x * 3.0)
        return jnp.sum(jnp.sin(y) * x)

    step = jax.jit(lambda x: x - 0.1 * jax.grad(loss)(x))
    x = jnp.linspace(0.0, 1.0, 4096)
    step(x)
    names = op_names(step.lower(x).compile().as_text())
    assert any("dma_selection" in name for name in names.values())
    events = trace(step, (x,), runs=2, reader=profile_ops)
    assert events, "the CPU trace names no HLO instruction"
    split = split_step(events, names, steps=2)
    assert set(split["parts"]) == {part for part, _ in PARTS}
    assert all(set(passes) == set(PASSES) for passes in split["parts"].values())
    assert split["parts"]["DMA selection"]["forward"] > 0
    assert split["busy_ms"] == pytest.approx(sum(sum(p.values()) for p in split["parts"].values()))
    kept = split["kernels"]
    assert kept == sorted(kept, key=lambda k: -k["ms"]) and sum(k["ms"] for k in kept) <= split["busy_ms"] + 1e-9
    assert any(k["part"] == "DMA selection" and "dma_selection" in k["op_name"] for k in kept)


def test_steps_are_profiled_without_cuda_graphs():
    """In a CUDA graph every kernel's profiler event names the graph, not its HLO instruction."""
    import os

    assert "--xla_gpu_enable_command_buffer=" in os.environ["XLA_FLAGS"].split()


@pytest.mark.slow  # 21-27 s each on a fresh clone
@pytest.mark.parametrize("saves", ["nothing", "selection"])
def test_main_profiles_a_small_dma_model_and_draws_it(tmp_path, capsys, saves):
    out = tmp_path / "step_profile.json"
    result = main(["--lengths", "64", "--attentions", "dma", "--d-model", "32", "--layers", "1", "--heads", "2",
                   "--kv-heads", "1", "--head-dim", "16", "--vocab-size", "64", "--window", "16",
                   "--tokens-per-batch", "128", "--dtype", "float32", "--runs", "1", "--remat-saves", saves,
                   "--out", str(out)])
    (row,) = result["rows"]
    selection = row["parts"]["DMA selection"]
    assert selection["forward"] > 0 and selection["backward"] == 0
    # Saving the selection tables is what keeps remat from running the selection again.
    assert (selection["recompute"] > 0) == (saves == "nothing")
    assert out.exists() and out.with_suffix(".png").stat().st_size > 1000
    assert "DMA selection" in capsys.readouterr().out
