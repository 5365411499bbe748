"""Experiment runners: grids of train.py runs, launched concurrently, results kept in JSON."""
