"""Needle in a haystack, RULER ``niah_single`` style, measured in tokens of a given tokenizer.

A prompt of exactly ``length`` tokens is::

    <intro> <haystack: filler sentences ... NEEDLE ... filler sentences> <question>

* the filler repeats "The grass is green. The sky is blue. The sun is yellow. Here we go. There
  and back again." and is cut at the token where the length budget runs out;
* the needle "One of the special magic numbers for {key} is: {value}." goes in at the sentence
  boundary nearest to ``depth * haystack_tokens`` (depth 0 = before all filler, 1 = after it);
* the question asks for the number of ``key``; the answer is " {value}" (a 7-digit number).

``key`` (an adjective-noun pair) and ``value`` come from a generator seeded by ``seed``. Pieces are
encoded separately and concatenated, so every piece's tokens are the same wherever it is placed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

FILLER = (" The grass is green.", " The sky is blue.", " The sun is yellow.", " Here we go.", " There and back again.")
INTRO = "Somewhere in the text below hides a special magic number. Keep it in mind; you will be asked for it.\n"
NEEDLE = " One of the special magic numbers for {key} is: {value}."
QUESTION = "\nWhat is the special magic number for {key}? The special magic number for {key} is:"
ANSWER = " {value}"
_ADJECTIVES = ("amber", "brisk", "calm", "dusty", "eager", "faint", "gentle", "hollow", "icy", "jolly",
               "keen", "lively", "mellow", "narrow", "odd", "proud", "quiet", "rapid", "silent", "tidy")
_NOUNS = ("anchor", "badger", "canyon", "dolphin", "ember", "falcon", "garden", "harbor", "island", "jacket",
          "kettle", "lantern", "meadow", "needle", "orchard", "pepper", "quarry", "river", "saddle", "tunnel")


@dataclasses.dataclass(frozen=True)
class NiahExample:
    """``prompt_ids`` (exactly the requested length) and ``answer_ids``; the rest is for inspection."""

    prompt_ids: list[int]
    answer_ids: list[int]
    key: str
    value: str
    needle_start: int      # token index of the needle's first token in the prompt


@functools.lru_cache(maxsize=8)
def _filler_ids(tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(ids of one filler round, token offsets where each sentence starts, plus the round's end)."""
    pieces = [tokenizer.encode(s, add_special_tokens=False).ids for s in FILLER]
    starts = np.cumsum([0] + [len(p) for p in pieces])
    return np.asarray(sum(pieces, []), np.int64), starts


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def needle_key_value(seed: int) -> tuple[str, str]:
    rng = np.random.default_rng([seed, 7])
    key = f"{_ADJECTIVES[rng.integers(len(_ADJECTIVES))]}-{_NOUNS[rng.integers(len(_NOUNS))]}"
    return key, str(int(rng.integers(1_000_000, 10_000_000)))


def build_niah(tokenizer: Tokenizer, length: int, depth: float, seed: int) -> NiahExample:
    """The prompt of exactly ``length`` tokens with the needle at ``depth`` in [0, 1], and its answer."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    key, value = needle_key_value(seed)
    intro, needle = _encode(tokenizer, INTRO), _encode(tokenizer, NEEDLE.format(key=key, value=value))
    question = _encode(tokenizer, QUESTION.format(key=key))
    haystack = length - len(intro) - len(needle) - len(question)
    if haystack < 0:
        raise ValueError(f"length={length} is below the {length - haystack} tokens of intro, needle and question")
    round_ids, round_starts = _filler_ids(tokenizer)
    rounds = -(-haystack // len(round_ids)) + 1
    filler = np.tile(round_ids, rounds)[:haystack]
    starts = (round_starts[:-1][None, :] + len(round_ids) * np.arange(rounds)[:, None]).ravel()
    boundaries = np.append(starts[starts < haystack], haystack)
    cut = int(boundaries[np.argmin(np.abs(boundaries - depth * haystack))])
    prompt = intro + filler[:cut].tolist() + needle + filler[cut:].tolist() + question
    return NiahExample(prompt, _encode(tokenizer, ANSWER.format(value=value)), key, value, len(intro) + cut)


def niah_training_example(tokenizer: Tokenizer, seq_len: int, depth: float, seed: int) -> dict[str, np.ndarray]:
    """A (L,) training row: the prompt plus its answer fill L + 1 tokens exactly; ``loss_mask`` is 1
    only where the target is an answer token. Keys: inputs, targets, segment_ids (all 1), loss_mask."""
    answer_len = len(_encode(tokenizer, ANSWER.format(value=needle_key_value(seed)[1])))
    example = build_niah(tokenizer, seq_len + 1 - answer_len, depth, seed)
    sequence = np.asarray(example.prompt_ids + example.answer_ids, np.int32)
    loss_mask = np.zeros(seq_len, np.float32)
    loss_mask[seq_len - answer_len:] = 1.0
    return {"inputs": sequence[:-1], "targets": sequence[1:], "segment_ids": np.ones(seq_len, np.int32),
            "loss_mask": loss_mask}


def exact_match(predicted: str | Sequence[int], answer: str | Sequence[int]) -> bool:
    """Whether a model's continuation gives exactly the answer.

    Text: the first whitespace-separated word of ``predicted``, stripped of surrounding
    punctuation, equals ``answer`` stripped (so "1234567." matches "1234567", "12345678" does not).
    Token ids: ``predicted`` starts with all of ``answer``'s ids.
    """
    if isinstance(predicted, str) != isinstance(answer, str):
        raise TypeError("predicted and answer must both be text or both be token ids")
    if isinstance(predicted, str):
        words = predicted.split()
        return bool(words) and re.sub(r"^\W+|\W+$", "", words[0]) == answer.strip()
    return len(predicted) >= len(answer) and list(predicted[: len(answer)]) == list(answer)


class NiahSource:
    """Random-access NIAH training rows; a grain ``MapDataset.source``.

    train: example i has depth drawn uniformly in [0, 1] and needle seed (seed, i).
    validation: ``len(niah_eval_depths) * niah_eval_per_depth`` examples, depth-major, with needle
    seeds from a separate stream (seeded by (seed, 1, i) instead of (seed, 0, i)).
    """

    def __init__(self, config, split: str):
        self.config, self.split = config, split
        self.tokenizer = Tokenizer.from_file(str(config.resolved_tokenizer_path()))
        if split == "train":
            self.size = config.niah_num_train_examples
        else:
            self.size = len(config.niah_eval_depths) * config.niah_eval_per_depth

    def __len__(self) -> int:
        return self.size

    def depth_and_seed(self, index: int) -> tuple[float, int]:
        c = self.config
        if self.split == "train":
            rng = np.random.default_rng([c.seed, 0, index])
            return float(rng.uniform()), int(rng.integers(2**62))
        depth = c.niah_eval_depths[index // c.niah_eval_per_depth]
        return float(depth), int(np.random.default_rng([c.seed, 1, index]).integers(2**62))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        depth, seed = self.depth_and_seed(int(index))
        return niah_training_example(self.tokenizer, self.config.seq_len, depth, seed)
