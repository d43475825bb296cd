"""Benchmarks of every stage (``m3net bench-*``), each writing its record through ``m3net.bench.record``."""
