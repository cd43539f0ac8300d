"""Evaluation: class rules, metrics, per-patient and per-magnification reports, cross-validation."""
