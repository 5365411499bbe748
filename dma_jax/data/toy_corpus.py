"""A tiny synthetic corpus in the built-corpus format, for tests and quick experiments offline.

``write_toy_corpus(out, num_documents, seed)`` writes ``docs-*.jsonl.xz`` and ``manifest.json``
like ``python -m dma_jax.data.corpus build`` does, with made-up English-like documents of varied
lengths (a few words to a few hundred), so a BPE can be trained and every pipeline run end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dma_jax.data.corpus import write_shards

_WORDS = ("the kernel maps each page into memory and the scheduler picks a task to run while "
          "python objects hold references to their values a function returns a new list when "
          "called with keyword arguments the driver reads the device register and writes a byte").split()


def toy_documents(num_documents: int, seed: int = 0) -> list[dict]:
    """``num_documents`` of ``{"id", "text"}`` made of random sentences over a small word list."""
    rng = np.random.default_rng(seed)
    documents = []
    for d in range(num_documents):
        sentences = []
        for _ in range(int(rng.integers(1, 25))):
            words = rng.choice(_WORDS, int(rng.integers(3, 14)))
            sentences.append(" ".join(words).capitalize() + ".")
        documents.append({"id": f"toy:doc{d:04d}", "text": " ".join(sentences)})
    return documents


def write_toy_corpus(out: str | Path, num_documents: int = 60, seed: int = 0) -> dict:
    """Write the toy corpus (several shards) and its manifest under ``out``; returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    documents = toy_documents(num_documents, seed)
    shards = write_shards(documents, out, shard_bytes=4096, preset=1)
    manifest = {"documents": len(documents), "sources": [{"package": "toy", "licence": "synthetic"}], "shards": shards}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def write_toy_tokens(root: str | Path, num_documents: int = 60, vocab_size: int = 320,
                     validation_fraction: float = 0.2, seed: int = 0) -> Path:
    """Toy corpus under ``root/corpus`` tokenized (with a tiny BPE) into ``root/tokens``; returns the latter."""
    from dma_jax.data.tokenize import tokenize_corpus

    root = Path(root)
    write_toy_corpus(root / "corpus", num_documents, seed)
    tokenize_corpus(root / "corpus", root / "tokens", vocab_size, validation_fraction=validation_fraction)
    return root / "tokens"
