"""benchmarks/gpu_breakdown.py: picking kernel events from a profile and summing them per call."""

from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import pytest

from benchmarks.gpu_breakdown import kernel_events, plot, split_by_category, summarise, trace, variant_of


def _profile():
    event = lambda name, ns: NS(name=name, duration_ns=ns)
    stream = NS(name="Stream #13(Compute)", events=[event("fusion_1", 3000.0), event("sort", 1000.0), event("fusion_1", 3000.0)])
    ops = NS(name="XLA Ops", events=[event("fusion_1", 3000.0)])
    return NS(planes=[NS(name="/host:CPU", lines=[NS(name="Stream #1", events=[event("host", 9e9)])]),
                      NS(name="/device:GPU:0", lines=[stream, ops])])


def test_kernel_events_reads_only_device_streams():
    assert sorted(kernel_events(_profile())) == [("fusion_1", 3000.0), ("fusion_1", 3000.0), ("sort", 1000.0)]


def test_summarise_is_per_call():
    summary = summarise(kernel_events(_profile()), runs=2, top=1)
    assert summary["busy_ms"] == pytest.approx(3.5e-3)
    assert summary["kernels_per_call"] == 1.5
    assert summary["top"] == [dict(name="fusion_1", ms=pytest.approx(3e-3), launches=1.0, share=pytest.approx(6 / 7))]


def test_trace_runs_on_the_cpu_and_finds_no_device_kernels():
    fn = jax.jit(lambda x: jnp.cumsum(x))
    x = jnp.arange(8.0)
    fn(x)
    assert trace(fn, (x,), runs=2) == []


def _row(part="forward"):
    return dict(T=4096, part=part, wall_ms=2.0, busy_ms=1.5, kernels_per_call=5.0,
                top=[dict(name="_forward_kernel", ms=0.8, launches=1.0, share=0.5),
                     dict(name="without_initial_refs", ms=0.3, launches=1.0, share=0.2),
                     dict(name="loop_transpose_fusion", ms=0.1, launches=1.0, share=0.1)])


def test_split_by_category_accounts_for_the_whole_wall_time():
    parts = split_by_category(_row())
    assert parts["DMA forward kernel"] == pytest.approx(0.8)
    assert parts["DMA backward, key-major"] == pytest.approx(0.3)
    assert parts["transposes and copies"] == pytest.approx(0.1)
    assert parts["other XLA kernels (selection, ...)"] == pytest.approx(0.3)
    assert parts["GPU idle (launch gaps)"] == pytest.approx(0.5)
    assert sum(parts.values()) == pytest.approx(2.0)


def test_plot_writes_a_png(tmp_path):
    result = dict(card="test card", jax="0", window=1024, rows=[_row(), dict(_row("forward_backward"), T=32768)])
    plot(result, str(tmp_path / "breakdown.png"))
    assert (tmp_path / "breakdown.png").stat().st_size > 1000


def test_parts_take_a_model_layers_shape():
    """--batch/--heads/--kv-heads/--segments reach every part; --cudnn adds the dense comparison
    (listed here, run only on a GPU)."""
    from benchmarks.gpu_breakdown import Shape, parts

    listed = parts(64, 8, Shape(batch=2, heads=4, kv_heads=2, segments=True, cudnn=True))
    assert [name for name, _, _ in listed] == ["live_ranges", "selection_stage", "forward", "forward_backward",
                                               "cudnn_forward_backward"]
    by_name = {name: (fn, args) for name, fn, args in listed}
    q, k, v, bias = by_name["forward"][1]
    assert q.shape == (2, 64, 4, 128) and k.shape == (2, 64, 2, 128) and bias.shape == (2, 2, 64)
    assert by_name["live_ranges"][0](bias).shape == (2, 2, 64)  # one end per key and row


@pytest.mark.parametrize("row, variant", [(dict(order_statistics="blocks", digit_bits=4), "blocks:4"),
                                          (dict(digit_bits=1), "1"), (dict(selection="4:12"), "4:12"), ({}, "-")])
def test_variant_of_reads_new_and_older_rows(row, variant):
    assert variant_of(row) == variant
