"""A run's state on disk: checkpoints, atomic writes, and what a rerun into a used folder does."""
