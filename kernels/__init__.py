"""Batched soft / hard / OTAM dynamic time warping (see dtw.py)."""
