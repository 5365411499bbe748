"""Data pipelines (grain): packed language modelling, MQAR and needle-in-a-haystack.

``from dma_jax.data import DataConfig, make_dataset, make_iterator`` is the front door; see
docs/data.md for the corpus, tokenizer, task definitions and checkpointing of the iterator.
"""

from dma_jax.data.config import DataConfig
from dma_jax.data.iterator_state import (
    data_state_restore_args,
    data_state_save_args,
    iterator_state_json,
    restore_iterator_state,
)
from dma_jax.data.mqar import masked_accuracy, mqar_example
from dma_jax.data.niah import build_niah, exact_match, niah_training_example
from dma_jax.data.pipeline import make_dataset, make_iterator, vocab_size_of

__all__ = [
    "DataConfig", "make_dataset", "make_iterator", "vocab_size_of",
    "data_state_save_args", "data_state_restore_args", "iterator_state_json", "restore_iterator_state",
    "mqar_example", "masked_accuracy", "build_niah", "niah_training_example", "exact_match",
]
