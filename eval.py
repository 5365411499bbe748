"""Evaluation entry point: not built yet.

It will score trained checkpoints: held-out perplexity, MQAR accuracy by sequence length and
number of pairs, needle-in-a-haystack accuracy by length and depth, and throughput, writing
JSON and PNG plots. Until then it refuses to run rather than pretend.
"""

import sys

if __name__ == "__main__":
    sys.exit("eval.py is not implemented yet (see its docstring); run `python -m dma_jax.demo` instead")
