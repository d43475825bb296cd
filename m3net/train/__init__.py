"""Episodic training, evaluation and prediction on the feature cache."""
