"""The training data: discovery and the specimen split, the tf.data input, input quality."""
