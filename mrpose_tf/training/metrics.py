"""A quick validation metric on heatmaps (the SimpleBaseline training 'accuracy')."""
import tensorflow as tf


def heatmap_argmax(heatmaps):
    """(N, H, W, K) -> (N, K, 2) float32 (x, y) of each map's maximum, and (N, K) its value."""
    shape = tf.shape(heatmaps)
    width = shape[2]
    flat = tf.reshape(tf.transpose(heatmaps, [0, 3, 1, 2]), [shape[0], shape[3], -1])
    index = tf.argmax(flat, axis=-1, output_type=tf.int32)
    xy = tf.stack([index % width, index // width], axis=-1)
    return tf.cast(xy, tf.float32), tf.reduce_max(flat, axis=-1)


def heatmap_pck_counts(heatmaps_pred, heatmaps_true, target_weight, threshold=0.05):
    """Correct and counted joints of a batch, at ``threshold`` of the heatmap size.

    A joint counts when its weight is > 0 and its target map is not all zero; it is correct
    when the argmax of the prediction lies within ``threshold`` of the target's argmax, the
    x and y errors measured in units of the heatmap width and height (0.05 is SimpleBaseline's
    training accuracy: 0.5 at a tenth of the map size).

    Args:
      heatmaps_pred, heatmaps_true: (N, H, W, K).
      target_weight: (N, K).
      threshold: the normalised distance below which a joint is correct.

    Returns:
      (correct, counted): float32 scalars.
    """
    heatmaps_pred = tf.cast(heatmaps_pred, tf.float32)
    heatmaps_true = tf.cast(heatmaps_true, tf.float32)
    size = tf.cast(tf.stack([tf.shape(heatmaps_true)[2], tf.shape(heatmaps_true)[1]]),
                   tf.float32)
    pred_xy, _ = heatmap_argmax(heatmaps_pred)
    true_xy, true_max = heatmap_argmax(heatmaps_true)
    distance = tf.norm((pred_xy - true_xy) / size, axis=-1)
    counted = tf.logical_and(tf.cast(target_weight, tf.float32) > 0, true_max > 0)
    correct = tf.logical_and(counted, distance <= threshold)
    return (tf.reduce_sum(tf.cast(correct, tf.float32)),
            tf.reduce_sum(tf.cast(counted, tf.float32)))
