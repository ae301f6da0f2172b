"""Benchmarks run by `chatloop bench ...`: each prints side-by-side measurements from one run."""
