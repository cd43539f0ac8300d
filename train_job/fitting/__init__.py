"""Fitting: the two phases, callbacks, the tf.distribute strategy, multi-worker fit and sync."""
