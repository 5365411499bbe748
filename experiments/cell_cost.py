"""What a grid cell costs to train and to decode, timed in this process on this device.

``cell_cost`` builds the run's config as ``train.py`` would (config file, the cell's overrides,
the grid's length and batch, the command line's overrides), without training or data, and times on
random tokens (``dma_jax.evaluation.throughput``): the full train step (median of waited-for
steps, and amortised over back-to-back steps as a training loop runs them, with its compile time),
then prefill of a ``seq_len`` prompt and ``decode_tokens`` cached decoding steps at batch 1 (each
the median of at least three calls: decoding is their difference, so one slow call of two would
skew it).
``add_costs`` runs it for every cell missing from ``results["cost"]``, saving after each, so a
killed call loses at most the cell it was timing.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.cells import Cell
from experiments.launch import base_model


def cell_cost(config_path: str, cell: Cell, overrides: list[str], *, seq_len: int, batch: int, decode_tokens: int,
              repeats: int) -> dict:
    """{"train": training_throughput(...), "inference": inference_throughput(...), "peak_memory_gib"}."""
    from flax import nnx

    from dma_jax.evaluation.throughput import inference_throughput, training_throughput
    from dma_jax.models import DecoderLM
    from dma_jax.training.config import load_config
    from dma_jax.training.loop import peak_memory_gib

    base = base_model(config_path, overrides)
    config = load_config(config_path, [*cell.overrides(base.num_heads), f"data.seq_len={seq_len}",
                                       f"data.global_batch_size={batch}", *overrides], validate=False)
    train = training_throughput(config, seq_len=seq_len, batch=batch, repeats=repeats)
    model = DecoderLM(config.model, rngs=nnx.Rngs(0))
    inference = inference_throughput(model, prompt_len=seq_len, new_tokens=decode_tokens, batch=1,
                                     repeats=max(3, repeats // 2))  # a median of 3 drops one slow call
    return {"train": train, "inference": inference, "peak_memory_gib": peak_memory_gib()}


def add_costs(results: dict, results_path: Path, cells: list[Cell], config_path: str, overrides: list[str], *,
              seq_len: int, batch: int, decode_tokens: int, repeats: int, redo: tuple[str, ...] = (),
              command: str = "") -> None:
    """``cell_cost`` of each cell not yet in ``results["cost"]`` (keyed by ``Cell.spec``), and of
    the cells whose spec is in ``redo`` even if they are; a cell that fails (out of memory, say) gets
    {"error": ...} and the others go on. Each entry records the card and ``command`` (the runner's
    command line that timed it)."""
    from dma_jax.card import device_card

    costs = results.setdefault("cost", {})
    for cell in cells:
        if cell.spec in costs and "error" not in costs[cell.spec] and cell.spec not in redo:
            continue
        try:
            costs[cell.spec] = cell_cost(config_path, cell, overrides, seq_len=seq_len, batch=batch,
                                         decode_tokens=decode_tokens, repeats=repeats)
        except Exception as error:  # recorded, so that one cell's failure does not lose the others
            costs[cell.spec] = {"error": f"{type(error).__name__}: {error}"[:500]}
        costs[cell.spec]["card"] = device_card()
        costs[cell.spec]["command"] = command
        train = costs[cell.spec].get("train", {})
        print(f"{cell.spec}: train {train.get('tokens_per_s_amortised', 0):,.0f} tok/s, decode "
              f"{costs[cell.spec].get('inference', {}).get('decode_tokens_per_s', 0):,.1f} tok/s "
              f"{costs[cell.spec].get('error', '')[:100]}", flush=True)
        results_path.write_text(json.dumps(results, indent=2))
