"""The training job: data discovery and split, tf.data input, fit, evaluation, export."""
