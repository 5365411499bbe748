"""Sequence-parallel DMA over several devices against all-gather context parallelism for MHA.

    python -m benchmarks.sequence_parallel --lengths 262144 524288 1048576 --devices 2 4 8 \
        --windows 1024 4096 --out-dir results/benchmarks/sequence_parallel          # a multi-GPU host

For each T, device count P and window w, forward+backward of one attention layer's op with the
sequence split over P devices (B = 1, H = 32, Hkv = 8, D = 128, bf16, causal, random scores):
- ``dma``: ``dma_jax.ops.sequence_parallel`` (each device its slice of T plus the keys earlier
  slices carry: at most w);
- ``dma_one_device`` (P = 1 rows): ``dma_attention`` on the whole sequence, where it fits;
- ``mha_allgather``: each device all-gathers the whole keys and values and runs dense attention
  (cuDNN on a GPU) for its queries over the keys up to the end of its slice
  (``key_value_seq_lengths``: non-causal inside its own slice, which adds at most L^2 / 2 work per
  device; the slowest device, the last, does the work of exact causal attention plus that).
Reported: milliseconds (median of waited-for calls, and amortised over back-to-back calls), the
largest peak memory of a device, and the bytes of the collectives in the compiled program
(``collective_bytes``) beside the prediction for DMA: P·min(w, L) keys of k and v per bias head
gathered forward and their gradients scattered back. Writes sequence_parallel.json and prints a
table last. Runs on CPU devices too
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``, small T: a test does).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks.common import forward_and_backward, inputs, median_ms, result_header, write_json
from dma_jax import dma_attention
from dma_jax.ops.sequence_parallel import collective_bytes, sequence_parallel_attention
from dma_jax.timing import amortised_seconds


def mesh_of(devices: int):
    return jax.make_mesh((devices,), ("seq",), axis_types=(AxisType.Auto,), devices=jax.devices()[:devices])


def dma_sharded(window, mesh):
    specs = (P(None, "seq"),) * 3 + (P(None, None, "seq"),)
    return jax.shard_map(lambda q, k, v, b: sequence_parallel_attention(q, k, v, b, window, axis_name="seq"),
                         mesh=mesh, in_specs=specs, out_specs=P(None, "seq"), check_vma=False)


def mha_allgather(mesh, implementation):
    """Dense context parallelism: all-gather k and v, attend to the keys up to the slice's end."""

    def per_shard(q, k, v):
        length = q.shape[1]
        k_all, v_all = (jax.lax.all_gather(x, "seq", axis=1, tiled=True) for x in (k, v))
        end = (jax.lax.axis_index("seq") + 1) * length
        lengths = jnp.full((q.shape[0],), end, jnp.int32)
        return jax.nn.dot_product_attention(q, k_all, v_all, key_value_seq_lengths=lengths,
                                            implementation=implementation)

    return jax.shard_map(per_shard, mesh=mesh, in_specs=(P(None, "seq"),) * 3, out_specs=P(None, "seq"),
                         check_vma=False)


def peak_memory_gib(devices: int) -> float | None:
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.devices()[:devices]]
    return None if None in peaks else max(peaks) / 2**30


def measure(name, fn, arrays, repeats):
    step = forward_and_backward(fn)
    row = dict(kind=name)
    try:
        compiled = step.lower(*arrays).compile()
        row["collective_bytes"] = collective_bytes(compiled.as_text())
        row["fwd_bwd_ms"] = median_ms(compiled, *arrays, repeats=repeats)
        row["fwd_bwd_ms_amortised"] = amortised_seconds(compiled, *arrays, calls=repeats) * 1e3
    except Exception as error:  # out of memory at large T: record it and go on
        row["error"] = f"{type(error).__name__}: {error}"[:400]
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[262144, 524288, 1048576])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--windows", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-baseline", action="store_true", help="skip the all-gather MHA rows")
    p.add_argument("--out-dir", default="results/benchmarks/sequence_parallel")
    args = p.parse_args(argv)
    on_gpu = jax.default_backend() == "gpu"
    dtype = jnp.dtype(args.dtype)
    result = dict(**result_header("sequence_parallel", "benchmarks.sequence_parallel", argv),
                  settings=dict(vars(args)), rows=[])
    path = os.path.join(args.out_dir, "sequence_parallel.json")
    for length in args.lengths:
        q, k, v, bias = inputs(length, heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim, dtype=dtype)
        for devices in [d for d in args.devices if d <= jax.device_count()]:
            mesh = mesh_of(devices)
            place = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))  # noqa: E731
            arrays = (place(q, P(None, "seq")), place(k, P(None, "seq")), place(v, P(None, "seq")),
                      place(bias, P(None, None, "seq")))
            slice_len = length // devices
            runs = []
            for window in args.windows:
                if devices == 1:
                    fn = lambda q, k, v, b, w=window: dma_attention(q, k, v, b, w)  # noqa: E731
                    runs.append((dict(window=window), measure("dma_one_device", fn, arrays, args.repeats)))
                else:
                    row = measure("dma", dma_sharded(window, mesh), arrays, args.repeats)
                    offer = min(window, slice_len)
                    row["predicted_allgather_bytes"] = devices * offer * args.kv_heads * args.head_dim * dtype.itemsize * 2
                    runs.append((dict(window=window), row))
            if not args.no_baseline:
                baseline = mha_allgather(mesh, "cudnn" if on_gpu else None)
                runs.append((dict(window=None), measure("mha_allgather", lambda q, k, v, b: baseline(q, k, v), arrays,
                                                         args.repeats)))
            for extra, row in runs:
                row.update(T=length, devices=devices, **extra, peak_memory_gib=peak_memory_gib(devices))
                result["rows"].append(row)
                write_json(result, path)
                print(row, flush=True)
    print(f"\n{'kind':<16}{'T':>9}{'P':>3}{'w':>6}{'f+b ms':>10}{'amortised':>11}{'gathered MB':>13}{'predicted':>11}"
          f"{'peak GiB':>10}")
    for r in result["rows"]:
        if "error" in r:
            print(f"{r['kind']:<16}{r['T']:>9}{r['devices']:>3}{str(r['window'] or '-'):>6}  error: {r['error'][:60]}")
            continue
        gathered = r["collective_bytes"].get("all-gather", 0) / 1e6
        predicted = r.get("predicted_allgather_bytes")
        memory = r["peak_memory_gib"]
        print(f"{r['kind']:<16}{r['T']:>9}{r['devices']:>3}{str(r['window'] or '-'):>6}{r['fwd_bwd_ms']:>10.2f}"
              f"{r['fwd_bwd_ms_amortised']:>11.2f}{gathered:>13.2f}"
              f"{'-' if predicted is None else f'{predicted / 1e6:.2f}':>11}{'-' if memory is None else f'{memory:.1f}':>10}")
    return result


if __name__ == "__main__":
    main()
