"""``DataConfig``: every knob of the data pipelines, checked by ``validate()``.

Kinds: ``"lm"`` (packed rows of the tokenized corpus), ``"mqar"`` (zoology's multi-query
associative recall) and ``"niah"`` (RULER-style single needle in a haystack). Error messages name
the key as ``data.<field>`` so that a config file's mistake is easy to find.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KINDS = ("lm", "mqar", "niah")
SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to feed the model; see docs/data.md for each task's definition.

    Common: ``seq_len`` L (rows are (B, L)), ``global_batch_size`` (rows per step over all
    processes), ``seed`` (shuffling and example generation), ``eval_max_batches`` (cap on global
    batches of a validation pass; None = the whole split). ``vocab_size`` is the MQAR vocabulary;
    for "lm" and "niah" the tokenizer decides (see ``vocab_size_of``).
    """

    kind: str = "lm"
    seq_len: int = 1024
    global_batch_size: int = 8
    seed: int = 0
    vocab_size: int = 8192
    eval_max_batches: int | None = None
    # lm / niah: the folder written by ``python -m dma_jax.data.tokenize`` and its tokenizer.
    corpus_path: str = "data/tokens"
    tokenizer_path: str | None = None        # default: <corpus_path>/tokenizer.json
    # mqar (zoology's multiquery_ar)
    mqar_num_kv_pairs: int = 8
    mqar_power_a: float = 0.01
    mqar_random_non_queries: bool = True
    mqar_num_train_examples: int = 100_000
    mqar_num_eval_examples: int = 3_000
    # niah (validation uses every depth in niah_eval_depths, niah_eval_per_depth examples each;
    # training draws the depth uniformly in [0, 1])
    niah_eval_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    niah_eval_per_depth: int = 16
    niah_num_train_examples: int = 100_000
    # lm: this share of the training rows are niah rows instead (passkey retrieval learned beside
    # language modelling; the niah_* fields above set them); validation stays the held-out text.
    niah_share: float = 0.0
    # grain reading. One thread: more make every measured pipeline slower, the interpreter lock
    # serialising them (docs/data.md)
    read_threads: int = 1
    prefetch_buffer_size: int = 8
    # Worker processes that make the training split's batches (grain's mp_prefetch), each with
    # read_threads threads; 0 makes them in this process. Generated tasks (mqar) spend their time
    # in Python under one interpreter lock, which threads cannot share out; processes can. The
    # batches are the same for any count, but an iterator's checkpointed state is not: resume with
    # the count that saved it.
    read_processes: int = 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DataConfig":
        """Build from a plain mapping (e.g. a config file's ``data`` section); unknown keys raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"data.{key} is not a DataConfig field; known: {sorted(known)}")
        values = dict(values)
        if "niah_eval_depths" in values:
            values["niah_eval_depths"] = tuple(values["niah_eval_depths"])
        return cls(**values)

    def loss_positions(self) -> int | None:
        """The most positions of a row that carry loss, where the task fixes them (MQAR: its
        ``mqar_num_kv_pairs`` queries; a train step runs the LM head only there), else None."""
        return self.mqar_num_kv_pairs if self.kind == "mqar" else None

    def resolved_tokenizer_path(self) -> Path:
        return Path(self.tokenizer_path) if self.tokenizer_path else Path(self.corpus_path) / "tokenizer.json"

    def validate(self) -> "DataConfig":
        """Raise ValueError naming the first bad key; returns self so calls can chain."""
        def positive(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}")

        if self.kind not in KINDS:
            raise ValueError(f"data.kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("seq_len", "global_batch_size", "read_threads", "prefetch_buffer_size"):
            positive(name)
        if not isinstance(self.read_processes, int) or isinstance(self.read_processes, bool) or self.read_processes < 0:
            raise ValueError(f"data.read_processes must be a non-negative integer, got {self.read_processes!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"data.seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.eval_max_batches is not None:
            positive("eval_max_batches")
        if self.kind == "mqar":
            self._validate_mqar(positive)
        if not isinstance(self.niah_share, (int, float)) or isinstance(self.niah_share, bool) \
                or not 0.0 <= self.niah_share < 1.0:
            raise ValueError(f"data.niah_share must be a number in [0, 1), got {self.niah_share!r}")
        if self.niah_share and self.kind != "lm":
            raise ValueError(f"data.niah_share mixes niah rows into kind 'lm' only, got kind {self.kind!r}")
        if self.kind == "niah" or self.niah_share:
            positive("niah_eval_per_depth")
            positive("niah_num_train_examples")
            if not self.niah_eval_depths or not all(0.0 <= d <= 1.0 for d in self.niah_eval_depths):
                raise ValueError(f"data.niah_eval_depths must be a non-empty list in [0, 1], got {self.niah_eval_depths!r}")
        if self.kind in ("lm", "niah"):
            if self.kind == "lm" and not (Path(self.corpus_path) / "tokens.npy").exists():
                raise ValueError(f"data.corpus_path has no tokens.npy: {self.corpus_path!r} "
                                 "(build it with python -m dma_jax.data.corpus / dma_jax.data.tokenize)")
            if not self.resolved_tokenizer_path().exists():
                raise ValueError(f"data.tokenizer_path does not exist: {str(self.resolved_tokenizer_path())!r}")
        return self

    def _validate_mqar(self, positive) -> None:
        for name in ("vocab_size", "mqar_num_kv_pairs", "mqar_num_train_examples", "mqar_num_eval_examples"):
            positive(name)
        if self.seq_len % 2:
            raise ValueError(f"data.seq_len must be even for mqar, got {self.seq_len}")
        if self.vocab_size <= self.seq_len:
            raise ValueError(f"data.vocab_size must exceed data.seq_len for mqar, got {self.vocab_size} <= {self.seq_len}")
        if 4 * self.mqar_num_kv_pairs > self.seq_len:
            raise ValueError(f"data.mqar_num_kv_pairs must be at most seq_len / 4 = {self.seq_len // 4}, "
                             f"got {self.mqar_num_kv_pairs}")
        if self.mqar_num_kv_pairs >= self.vocab_size // 2:
            raise ValueError(f"data.mqar_num_kv_pairs must be below vocab_size / 2, got {self.mqar_num_kv_pairs}")
        if not 0.0 < self.mqar_power_a <= 1.0:
            raise ValueError(f"data.mqar_power_a must be in (0, 1], got {self.mqar_power_a}")


def check_split_and_processes(config: DataConfig, split: str, process_index: int, process_count: int) -> int:
    """Validate the call's arguments; returns the per-process batch size."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, process_count), got {process_index} of {process_count}")
    if config.global_batch_size % process_count:
        raise ValueError(f"data.global_batch_size={config.global_batch_size} must be divisible by "
                         f"process_count={process_count}")
    return config.global_batch_size // process_count
