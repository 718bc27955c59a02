"""A quick validation metric on heatmaps (the SimpleBaseline training 'accuracy')."""
import tensorflow as tf

from mrpose_tf.codec import heatmap_argmax_tf


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
    pred_xy, _ = heatmap_argmax_tf(heatmaps_pred)
    true_xy, true_max = heatmap_argmax_tf(heatmaps_true)
    distance = tf.norm((pred_xy - true_xy) / size, axis=-1)
    counted = tf.logical_and(tf.cast(target_weight, tf.float32) > 0, true_max > 0)
    correct = tf.logical_and(counted, distance <= threshold)
    return (tf.reduce_sum(tf.cast(correct, tf.float32)),
            tf.reduce_sum(tf.cast(counted, tf.float32)))
