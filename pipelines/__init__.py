"""The Apache Beam batch-scoring pipeline: `python -m pipelines.score`."""
