"""Train a byte-level BPE on a built corpus and tokenize it into one flat token file.

``python -m dma_jax.data.tokenize --corpus data/corpus --out data/tokens --vocab-size 8192`` writes:

* ``tokenizer.json``: the ``tokenizers`` BPE (byte-level, so any text encodes); special tokens
  ``<|endoftext|>`` (id 0, closes every document) and ``<|pad|>`` (id 1);
* ``tokens.npy``: every document's tokens followed by ``<|endoftext|>``, concatenated; uint16 when
  the vocabulary fits, else uint32;
* ``offsets.npy``: int64 (D + 1,); document d is ``tokens[offsets[d]:offsets[d + 1]]`` (its end token
  included);
* ``validation.npy``: bool (D,); the held-out documents (a deterministic hash of the document id,
  so the split does not depend on document order or on the seed);
* ``meta.json``: vocabulary size, special ids, counts and timings.

The BPE is trained on the training documents only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dma_jax.data.corpus import read_documents

EOD = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOD, PAD)


def is_validation_document(doc_id: str, fraction: float) -> bool:
    """Whether ``doc_id`` is held out: its sha256 read as a number in [0, 1) is below ``fraction``."""
    value = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64
    return value < fraction


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE with ``vocab_size`` entries (specials first: <|endoftext|> = 0, <|pad|> = 1)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_documents(tokenizer: Tokenizer, texts: Sequence[str], chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets): each text's ids plus the end token, concatenated; offsets (D + 1,) int64."""
    eod = tokenizer.token_to_id(EOD)
    dtype = token_dtype(tokenizer.get_vocab_size())
    pieces, lengths = [], []
    for start in range(0, len(texts), chunk):
        for encoding in tokenizer.encode_batch(list(texts[start:start + chunk]), add_special_tokens=False):
            pieces.append(np.asarray(encoding.ids + [eod], dtype))
            lengths.append(len(encoding.ids) + 1)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    tokens = np.concatenate(pieces) if pieces else np.zeros((0,), dtype)
    return tokens, offsets


def tokenize_corpus(corpus: str | Path, out: str | Path, vocab_size: int, *,
                    validation_fraction: float = 0.02, min_frequency: int = 2,
                    tokenizer_file: str | Path | None = None) -> dict:
    """Train the BPE on the corpus's training documents, encode all documents, write the files.

    With ``tokenizer_file`` (a ``tokenizer.json`` written here before) the BPE is loaded instead of
    trained, so a copy of the corpus and of that file rebuilds the same token files on another
    machine: ``meta.json``'s ``tokens_sha256`` tells whether they match. ``vocab_size`` and
    ``min_frequency`` are then unused.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    documents = list(read_documents(corpus))
    ids = [d["id"] for d in documents]
    texts = [d["text"] for d in documents]
    validation = np.array([is_validation_document(i, validation_fraction) for i in ids], bool)
    start = time.perf_counter()
    if tokenizer_file is None:
        tokenizer = train_bpe((t for t, v in zip(texts, validation) if not v), vocab_size, min_frequency)
    else:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"{tokenizer_file} lacks the special tokens {missing}: not a tokenizer written here")
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    tokens, offsets = encode_documents(tokenizer, texts)
    encode_seconds = time.perf_counter() - start
    if tokenizer_file is None or Path(tokenizer_file).resolve() != (out / "tokenizer.json").resolve():
        tokenizer.save(str(out / "tokenizer.json"))
    np.save(out / "tokens.npy", tokens)
    np.save(out / "offsets.npy", offsets)
    np.save(out / "validation.npy", validation)
    lengths = np.diff(offsets)
    meta = {
        "vocab_size": tokenizer.get_vocab_size(), "eod_id": tokenizer.token_to_id(EOD),
        "pad_id": tokenizer.token_to_id(PAD), "dtype": tokens.dtype.name,
        "documents": len(texts), "validation_documents": int(validation.sum()),
        "tokens": int(tokens.size), "validation_tokens": int(lengths[validation].sum()),
        "text_bytes": sum(len(t.encode()) for t in texts), "validation_fraction": validation_fraction,
        "bpe_train_seconds": round(train_seconds, 1), "encode_seconds": round(encode_seconds, 1),
        "corpus": str(corpus), "tokenizer": "trained" if tokenizer_file is None else str(tokenizer_file),
        "tokens_sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
    }
    meta["bytes_per_token"] = round(meta["text_bytes"] / max(1, meta["tokens"] - meta["documents"]), 3)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dma_jax.data.tokenize", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="output of dma_jax.data.corpus build")
    parser.add_argument("--out", type=Path, default=Path("data/tokens"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--validation-fraction", type=float, default=0.02, help="share of documents held out")
    parser.add_argument("--min-frequency", type=int, default=2, help="BPE merges need at least this count")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="encode with this tokenizer.json instead of training one (rebuilds the same tokens "
                             "on another machine; --vocab-size is then unused)")
    args = parser.parse_args(argv)
    meta = tokenize_corpus(args.corpus, args.out, args.vocab_size, validation_fraction=args.validation_fraction,
                           min_frequency=args.min_frequency, tokenizer_file=args.tokenizer)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
