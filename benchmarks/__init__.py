"""Timing scripts, run from the repository root as ``python -m benchmarks.NAME``.

``common.py`` holds what they share: the benchmark shapes and inputs, timing in milliseconds,
forward+backward wrappers, kept-pair counts and the ``--configs`` tile syntax.
"""
