"""Gaussian heatmap targets (the SimpleBaseline target rule), in TensorFlow ops for tf.data.

The rule (SPEC section 2), per joint at input pixel (x, y), with stride = input / heatmap
size per axis and ``r = 3 * sigma``:

  mu = int(x / stride + 0.5)              (Python int(): truncation toward zero)
  ul = int(mu - r), br = int(mu + r + 1)  (the window is columns ul <= u < br)
  g(u) = exp(-(u - ul - floor((2r + 1) / 2))^2 / (2 sigma^2)) inside the window, 0 outside
  weight = visibility, or 0 when ul >= W or br < 0 (either axis); the map is drawn only
  where weight > 0.5.

For an integer sigma the window centre ``ul + floor((2r + 1) / 2)`` is ``mu``; for other
sigmas the reference's truncations move it, and this code keeps those truncations.
The 2-D Gaussian is separable, so each map is an outer product of a row and a column
profile: no per-joint loop.
"""
from __future__ import annotations

import math

import tensorflow as tf


def _truncate(x):
    """Python int() on float64 values: round toward zero (clipped far outside any map)."""
    return tf.cast(tf.clip_by_value(x, -1e9, 1e9), tf.int64)


def _profile(coord, stride, size, sigma):
    """One axis: (..., K) joint coordinates -> ((..., K, size) profile, (..., K) window-hit)."""
    radius = 3.0 * sigma
    mu = _truncate(coord / stride + 0.5)
    ul = _truncate(tf.cast(mu, tf.float64) - radius)
    br = _truncate(tf.cast(mu, tf.float64) + radius + 1.0)
    centre = ul + int(math.floor((2.0 * radius + 1.0) / 2.0))
    pixels = tf.range(size, dtype=tf.int64)
    offset = tf.cast(pixels - centre[..., None], tf.float32)
    inside = (pixels >= ul[..., None]) & (pixels < br[..., None])
    profile = tf.where(inside, tf.exp(-offset * offset / (2.0 * sigma * sigma)), 0.0)
    hits_map = (ul < size) & (br >= 0)
    return profile, hits_map


def heatmap_targets(joints, visibility, input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0):
    """Gaussian target heatmaps and joint weights for joints given in input-crop pixels.

    Equal (to float32 rounding, < 1e-5) to the SimpleBaseline loop-form generator. Works on
    numpy arrays or tensors, eagerly or inside ``tf.data`` / ``tf.function``; leading batch
    dimensions are allowed.

    Args:
      joints: (..., K, 2) joints (x, y) in pixels of the input crop.
      visibility: (..., K) or (..., K, 1); weight of each joint (0 = not labelled).
      input_size: (height, width) of the input crop.
      heatmap_size: (height, width) of the heatmaps.
      sigma: Gaussian sigma in heatmap pixels (need not be an integer).

    Returns:
      (heatmaps (..., H, W, K) float32, weights (..., K) float32) as ``tf.Tensor``s; call
      ``.numpy()`` (or ``np.asarray``) on them when running eagerly.
    """
    joints = tf.cast(joints, tf.float64)
    visibility = tf.cast(visibility, tf.float32)
    if visibility.shape.rank == joints.shape.rank:  # (..., K, 1)
        visibility = visibility[..., 0]
    heat_h, heat_w = int(heatmap_size[0]), int(heatmap_size[1])
    stride_x = float(input_size[1]) / heat_w
    stride_y = float(input_size[0]) / heat_h
    sigma = float(sigma)
    row, hits_x = _profile(joints[..., 0], stride_x, heat_w, sigma)
    col, hits_y = _profile(joints[..., 1], stride_y, heat_h, sigma)
    weights = tf.where(hits_x & hits_y, visibility, 0.0)
    row = tf.where((weights > 0.5)[..., None], row, 0.0)
    # (..., K, H, 1) * (..., K, 1, W) -> (..., H, W, K)
    maps = col[..., :, None] * row[..., None, :]
    rank = maps.shape.rank
    maps = tf.transpose(maps, list(range(rank - 3)) + [rank - 2, rank - 1, rank - 3])
    return maps, weights
