"""Datasets and split lists, the generated benchmark, seeded episodes."""
