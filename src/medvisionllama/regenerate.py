"""``mvl regenerate``: every table, figure and the report from shared results (no data, no
training, no GPU). The work is in :mod:`medvisionllama.share`, beside ``mvl share``."""

from medvisionllama.share import regenerate_main as main

__all__ = ["main"]
