"""The JointsMSE loss of SimpleBaseline (SPEC section 2), in pure Keras ops."""
from keras import ops


def joints_mse(heatmaps_true, heatmaps_pred, target_weight=None, foreground_weight=0.0):
    """Mean over joints of 0.5 * mean over pixels of (w_j * (pred - target))^2.

    Args:
      heatmaps_true, heatmaps_pred: (N, H, W, K).
      target_weight: (N, K) per-joint weights (0 for unlabelled joints), or None.
      foreground_weight: a training aid, 0 in the paper configs: each pixel's squared error
        is multiplied by ``1 + foreground_weight * [target > 0.1]`` to leave the all-zero
        plateau faster when training from scratch.

    Returns:
      The scalar loss averaged over the batch (float32).
    """
    true = ops.cast(heatmaps_true, "float32")
    pred = ops.cast(heatmaps_pred, "float32")
    diff = pred - true
    if target_weight is not None:
        diff = diff * ops.cast(target_weight, "float32")[:, None, None, :]
    sq = ops.square(diff)
    if foreground_weight:
        sq = sq * (1.0 + foreground_weight * ops.cast(true > 0.1, "float32"))
    return 0.5 * ops.mean(sq)
