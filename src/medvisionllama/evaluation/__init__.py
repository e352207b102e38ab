"""Metrics, evaluation of a run, and inference on new images."""
