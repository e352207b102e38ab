"""Scoring a trained run: :mod:`.metrics` (the per-case metrics), :mod:`.evaluate` (``mvl
evaluate``), :mod:`.inference` (activation maps) and :mod:`.predict` (``mvl predict`` on new
NIfTI files)."""
