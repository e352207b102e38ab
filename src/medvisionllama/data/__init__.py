"""Data stages: synthesise or download MSD tasks, split, preprocess."""
