"""K-fold cross-validation: the one-command run, its folds, the aggregate and its report."""
