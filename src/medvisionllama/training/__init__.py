"""Training of one run."""
