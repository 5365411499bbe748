"""Evaluation of trained runs: perplexity, MQAR accuracy by slice, needle accuracy by (length,
depth), training and inference throughput, and plots. ``eval.py`` is the command line."""

from dma_jax.evaluation.mqar import mqar_accuracy
from dma_jax.evaluation.niah import niah_accuracy
from dma_jax.evaluation.perplexity import perplexity
from dma_jax.evaluation.runs import LoadedRun, load_run
from dma_jax.evaluation.scoring import BatchScorer
from dma_jax.evaluation.throughput import inference_throughput, training_throughput

__all__ = ["LoadedRun", "load_run", "BatchScorer", "perplexity", "mqar_accuracy", "niah_accuracy",
           "training_throughput", "inference_throughput"]
