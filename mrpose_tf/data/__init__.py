"""Data: annotation readers -> person records -> tf.data pipelines; the synthetic set; TFDS."""
