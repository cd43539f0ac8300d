"""The reporting half of a run: aggregates, the review queue, metrics, summary and report.html."""
