"""Baseline apps the benchmarks compare authkeep against."""
