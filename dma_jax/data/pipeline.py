"""The front door: ``make_dataset`` / ``make_iterator`` for any ``DataConfig``.

Every pipeline is a grain ``MapDataset`` of one split's rows (dicts of (L,) arrays), then:

* train: ``.shuffle(seed).repeat()`` (each epoch reshuffled, infinite); for "lm" with
  ``niah_share`` > 0, the shuffled, repeated text rows and niah rows mixed in those proportions;
  validation: in order, finite, padded to whole global batches, optionally capped;
* ``.batch(global_batch_size / process_count)``, then every ``process_count``-th batch starting at
  ``process_index``: global batch b is the concatenation of the local batches ``b P .. b P + P - 1``,
  so process p reads rows ``[p B/P, (p + 1) B/P)`` of every global batch and nothing else.

``make_iterator`` reads the batches with ``read_threads`` threads and, for the training split,
``read_processes`` worker processes (grain's ``mp_prefetch``; the same batches in the same order).

Batches are dicts of numpy arrays: ``inputs``, ``targets``, ``segment_ids`` (int32, (B/P, L)) and
``loss_mask`` (float32, (B/P, L)); ``segment_ids`` is 0 exactly on padding.
"""

from __future__ import annotations

import grain
import numpy as np
from tokenizers import Tokenizer

from dma_jax.data.config import DataConfig, check_split_and_processes
from dma_jax.data.lm import lm_rows
from dma_jax.data.mqar import MQARSource
from dma_jax.data.niah import NiahSource


def _padding_row(seq_len: int) -> dict[str, np.ndarray]:
    zeros = np.zeros(seq_len, np.int32)
    return {"inputs": zeros, "targets": zeros, "segment_ids": zeros, "loss_mask": np.zeros(seq_len, np.float32)}


def split_rows(config: DataConfig, split: str) -> grain.MapDataset:
    """All rows of one split, unshuffled; validation is padded to a multiple of the global batch."""
    multiple = config.global_batch_size if split == "validation" else 1
    if config.kind == "lm":
        return grain.MapDataset.source(lm_rows(config.corpus_path, split, config.seq_len, multiple))
    source = MQARSource(config, split) if config.kind == "mqar" else NiahSource(config, split)
    rows = grain.MapDataset.source(source)
    missing = -len(source) % multiple
    if missing:
        pad = grain.MapDataset.range(missing).map(lambda _: _padding_row(config.seq_len))
        rows = grain.MapDataset.concatenate([rows, pad])
    return rows


def make_dataset(config: DataConfig, split: str = "train", process_index: int = 0,
                 process_count: int = 1) -> grain.MapDataset:
    """This process's batches of ``split``: a grain MapDataset whose element j is a dict of
    (global_batch_size / process_count, seq_len) arrays (see the module docstring)."""
    config.validate()
    local_batch = check_split_and_processes(config, split, process_index, process_count)
    rows = split_rows(config, split)
    if split == "train":
        rows = rows.shuffle(seed=config.seed).repeat()
        if config.niah_share:
            niah = grain.MapDataset.source(NiahSource(config, split)).shuffle(seed=config.seed).repeat()
            rows = grain.MapDataset.mix([rows, niah], weights=[1.0 - config.niah_share, config.niah_share])
    elif config.eval_max_batches is not None:
        rows = rows[: config.eval_max_batches * config.global_batch_size]
    return rows.batch(local_batch, drop_remainder=True)[process_index::process_count]


def make_iterator(config: DataConfig, split: str = "train", process_index: int = 0,
                  process_count: int = 1) -> grain.DatasetIterator:
    """A checkpointable iterator over ``make_dataset(...)`` read with ``config.read_threads`` threads
    (and, for "train", ``config.read_processes`` worker processes); its state (``get_state()``) is a
    small dict, saved with ``dma_jax.data.data_state_save_args``. With worker processes, call
    ``close()`` on it when done (the training loop does)."""
    dataset = make_dataset(config, split, process_index, process_count)
    options = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch_buffer_size)
    stream = dataset.to_iter_dataset(options)
    if split == "train" and config.read_processes:
        stream = _in_worker_processes(stream, config.read_processes)
    return iter(stream)


def _in_worker_processes(stream: grain.IterDataset, count: int) -> grain.IterDataset:
    """``stream`` made by ``count`` grain worker processes. grain reads its absl flags when it starts
    them; a program that never parsed absl flags (train.py uses argparse) gets their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=count))


def vocab_size_of(config: DataConfig) -> int:
    """The smallest vocabulary the model needs: ``vocab_size`` for mqar, the tokenizer's size otherwise."""
    if config.kind == "mqar":
        return config.vocab_size
    return Tokenizer.from_file(str(config.resolved_tokenizer_path())).get_vocab_size()
