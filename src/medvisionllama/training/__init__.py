"""Training of one run: :mod:`.train` (``mvl train``), :mod:`.data` (datasets, augmentation,
loaders) and :mod:`.checkpoint` (the checkpoint format)."""
