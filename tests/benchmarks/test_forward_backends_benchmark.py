"""benchmarks/forward_backends.py: variant names and the contiguous diagnostic table."""

import jax.numpy as jnp
import numpy as np

from benchmarks.forward_backends import Variant, config_of, contiguous_table, parse_variant


def test_variant_names_set_the_launch():
    assert parse_variant("jax_triton:w8:s3:k32:contiguous") == Variant(
        "jax_triton:w8:s3:k32:contiguous", "jax_triton", warps=8, stages=3, block_k=32, contiguous=True)
    config = config_of(parse_variant("pallas_triton:w8:q16"))
    assert (config.options.num_warps, config.block_q, config.block_k) == (8, 16, 16)
    assert config_of(parse_variant("jax_triton")).forward_backend == "jax_triton"


def test_contiguous_table_lists_the_keys_before_each_tile():
    table = contiguous_table(jnp.zeros((1, 2, 3, 4), jnp.int32), block_q=2)
    np.testing.assert_array_equal(table[0, 1], [[-1, -1, -1, -1], [-1, -1, 0, 1], [0, 1, 2, 3]])


def test_plot_draws_each_backend(tmp_path):
    from benchmarks.forward_backends import plot

    rows = [dict(variant=v, T=t, speedup_vs_cudnn=s, op_speedup_vs_cudnn=s / 2)
            for v in ("pallas_triton", "mosaic_gpu") for t, s in ((4096, 0.8), (32768, 6.0))]
    card = dict(device_kind="NVIDIA H100", jax="0.11.2")
    plot(dict(card=card, rows=rows + [dict(variant="cudnn dense causal", T=4096)]), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
