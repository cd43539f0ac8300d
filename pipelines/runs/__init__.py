"""Output folders and reruns: a run's files, --overwrite, --skip_scored, earlier predictions."""
