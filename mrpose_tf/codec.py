"""The heatmap codec: Gaussian targets (encode), decoding and the flip test, in one place.

The rules are the SimpleBaseline tooling's (SPEC sections 2 and 4): targets of
``generate_target``, decoding of ``get_final_preds`` (argmax, a quarter-pixel step toward the
larger neighbour, the inverse crop affine) and the flip test of ``validate`` (mirror the crop,
mirror its heatmaps back, swap the left/right channels, shift one column right, average).

Each decoding step has a numpy form (the Predictor, the evaluators) and a TensorFlow twin
(the SavedModel signatures, the trainer's validation metric), side by side, tested equal in
``tests/test_codec.py``. TensorFlow is imported inside the ``*_tf`` functions and
:func:`heatmap_targets`, so the numpy half works without it. Heatmaps are NHWC
(N, h, w, K); points are (x, y) in heatmap cells until the inverse affine maps them to image
pixels.
"""
from __future__ import annotations

import math

import numpy as np

from mrpose_tf.geometry import affine_points_tf, affine_transform_tf, flip_permutation, \
    get_affine_transform

QUARTER_PIXEL = 0.25


# --- encode: Gaussian targets (TensorFlow, for tf.data) -------------------------------------

def _truncate(x):
    """Python int() on float64 values: round toward zero (clipped far outside any map)."""
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(x, -1e9, 1e9), tf.int64)


def _profile(coord, stride, size, sigma):
    """One axis: (..., K) joint coordinates -> ((..., K, size) profile, (..., K) window-hit)."""
    import tensorflow as tf

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


def heatmap_target_profiles(joints, visibility, input_size=(256, 192), heatmap_size=(64, 48),
                            sigma=2.0):
    """The factors of :func:`heatmap_targets`: every target map is ``col (x) row``.

    Args: as :func:`heatmap_targets`.

    Returns:
      (rows (..., K, W) float32, cols (..., K, H) float32, weights (..., K) float32) as
      ``tf.Tensor``s, with rows zeroed where the weight is not above 0.5, so that
      ``cols[..., :, None] * rows[..., None, :]`` (moved to (..., H, W, K)) is the target
      heatmap bit for bit. A replay of the training stream without TensorFlow
      (``scripts/replay_on_jax.py``) stores these instead of the maps (~10x smaller).
    """
    import tensorflow as tf

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
    return row, col, weights


def heatmaps_from_profiles(rows, cols):
    """(..., K, W) rows and (..., K, H) columns -> (..., H, W, K) maps; numpy or tensors."""
    maps = cols[..., :, None] * rows[..., None, :]
    return np.moveaxis(maps, -3, -1) if isinstance(maps, np.ndarray) else _move_joint_axis(maps)


def _move_joint_axis(maps):
    import tensorflow as tf

    rank = maps.shape.rank
    return tf.transpose(maps, list(range(rank - 3)) + [rank - 2, rank - 1, rank - 3])


def heatmap_targets(joints, visibility, input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0):
    """Gaussian target heatmaps and joint weights for joints given in input-crop pixels.

    The SimpleBaseline target rule (SPEC section 2), per joint at crop pixel (x, y), with
    stride = input / heatmap size per axis and ``r = 3 * sigma``:
    ``mu = int(x / stride + 0.5)``, window ``int(mu - r) <= u < int(mu + r + 1)``,
    ``g(u) = exp(-(u - ul - floor((2r + 1) / 2))^2 / (2 sigma^2))`` inside the window; the
    weight is the visibility, or 0 when the window misses the map. For an integer sigma the
    window centre is ``mu``; for other sigmas the reference's truncations move it, and they
    are kept. Each map is the outer product of a row and a column profile (no joint loop;
    :func:`heatmap_target_profiles`).

    Equal (to float32 rounding, < 1e-5) to the reference's loop form; works on numpy arrays or
    tensors, eagerly or inside ``tf.data`` / ``tf.function``, with leading batch dimensions.

    Args:
      joints: (..., K, 2) joints (x, y) in pixels of the input crop.
      visibility: (..., K) or (..., K, 1); weight of each joint (0 = not labelled).
      input_size: (height, width) of the input crop.
      heatmap_size: (height, width) of the heatmaps.
      sigma: Gaussian sigma in heatmap cells (need not be an integer).

    Returns:
      (heatmaps (..., H, W, K) float32, weights (..., K) float32) as ``tf.Tensor``s.
    """
    rows, cols, weights = heatmap_target_profiles(joints, visibility, input_size, heatmap_size,
                                                  sigma)
    return heatmaps_from_profiles(rows, cols), weights


# --- decode: numpy --------------------------------------------------------------------------

def heatmap_argmax(heatmaps):
    """Integer peak of every heatmap.

    Args:
      heatmaps: (N, h, w, K) array.

    Returns:
      coords (N, K, 2) float32 (x, y) in heatmap cells of the first maximum, zeroed where the
      maximum is <= 0; maxvals (N, K) float32. Raises ValueError for another rank.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, height, width, K), got shape {heatmaps.shape}")
    n, h, w, k = heatmaps.shape
    flat = np.moveaxis(heatmaps, 3, 1).reshape(n, k, h * w)
    index = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    return coords * (maxvals > 0)[..., None], maxvals


def refine_quarter_pixel(heatmaps, coords):
    """Move each peak 0.25 cells toward its larger neighbour on each axis (away from borders).

    Only peaks with 1 < px < w-1 and 1 < py < h-1 move (px, py = the rounded peak), as in
    the reference tooling.

    Args:
      heatmaps: (N, h, w, K).
      coords: (N, K, 2) integer peaks (x, y) from :func:`heatmap_argmax`.

    Returns:
      (N, K, 2) float coordinates in heatmap cells.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    n, h, w, k = heatmaps.shape
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    px_c, py_c = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    batch, joint = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(y, x):
        return heatmaps[batch, y, x, joint]

    diff = np.stack([at(py_c, px_c + 1) - at(py_c, px_c - 1),
                     at(py_c + 1, px_c) - at(py_c - 1, px_c)], axis=-1)
    return coords + np.sign(diff) * QUARTER_PIXEL * inside[..., None]


def decode_heatmaps(heatmaps, centers, scales):
    """Heatmaps of person crops -> keypoints in image pixels and joint scores.

    Equal to the SimpleBaseline/HRNet ``get_final_preds`` with post-processing: argmax
    (coordinates 0 where the maximum is <= 0), quarter-pixel refinement, then the inverse
    affine of (center, scale, rotation 0, heatmap size).

    Args:
      heatmaps: (N, h, w, K) numpy array (NHWC).
      centers: (N, 2) box centres (x, y) in image pixels.
      scales: (N, 2) box sizes in units of 200 px.

    Returns:
      coords (N, K, 2) float64 (x, y) in image pixels, maxvals (N, K) float32. Raises
      ValueError when the counts of heatmaps, centres and scales differ.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    coords, maxvals = heatmap_argmax(heatmaps)
    coords = refine_quarter_pixel(heatmaps, coords)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1, 2)
    if len(centers) != len(heatmaps) or len(scales) != len(heatmaps):
        raise ValueError(f"{len(heatmaps)} heatmaps but {len(centers)} centers and "
                         f"{len(scales)} scales")
    heatmap_size = heatmaps.shape[1:3]
    inverse = np.stack([get_affine_transform(c, s, 0.0, heatmap_size, inv=True)
                        for c, s in zip(centers, scales)]).reshape(-1, 2, 3)
    image_coords = np.einsum("nkj,nij->nki", coords.astype(np.float64), inverse[:, :, :2])
    return image_coords + inverse[:, None, :, 2], maxvals


# --- decode: TensorFlow twins ---------------------------------------------------------------

def heatmap_argmax_tf(heatmaps):
    """TensorFlow :func:`heatmap_argmax`: (N, h, w, K) -> coords (N, K, 2) float32, maxvals."""
    import tensorflow as tf

    heatmaps = tf.cast(heatmaps, tf.float32)
    shape = tf.shape(heatmaps)
    n, h, w, k = shape[0], shape[1], shape[2], shape[3]
    flat = tf.reshape(tf.transpose(heatmaps, [0, 3, 1, 2]), tf.stack([n, k, h * w]))
    index = tf.argmax(flat, axis=2, output_type=tf.int32)
    maxvals = tf.reduce_max(flat, axis=2)
    coords = tf.cast(tf.stack([index % w, index // w], axis=-1), tf.float32)
    return coords * tf.cast(maxvals > 0, tf.float32)[..., None], maxvals


def decode_heatmaps_tf(heatmaps, centers, scales):
    """TensorFlow twin of :func:`decode_heatmaps` (exportable: no numpy, no linear solve).

    Args:
      heatmaps: (N, h, w, K) float32.
      centers: (N, 2) box centres in image pixels.
      scales: (N, 2) box scales in units of 200 px.

    Returns:
      keypoints (N, K, 2) float32 (x, y) in image pixels and scores (N, K) float32.
    """
    import tensorflow as tf

    heatmaps = tf.cast(heatmaps, tf.float32)
    shape = tf.shape(heatmaps)
    n, h, w, k = shape[0], shape[1], shape[2], shape[3]
    coords, scores = heatmap_argmax_tf(heatmaps)
    px, py = tf.cast(coords[..., 0], tf.int32), tf.cast(coords[..., 1], tf.int32)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    px_c, py_c = tf.clip_by_value(px, 1, w - 2), tf.clip_by_value(py, 1, h - 2)
    batch = tf.broadcast_to(tf.range(n)[:, None], tf.shape(px))
    joint = tf.broadcast_to(tf.range(k)[None, :], tf.shape(px))

    def at(y, x):
        return tf.gather_nd(heatmaps, tf.stack([batch, y, x, joint], axis=-1))

    step = tf.stack([tf.sign(at(py_c, px_c + 1) - at(py_c, px_c - 1)),
                     tf.sign(at(py_c + 1, px_c) - at(py_c - 1, px_c))], axis=-1)
    coords += step * QUARTER_PIXEL * tf.cast(inside, tf.float32)[..., None]
    inverse = affine_transform_tf(centers, scales, 0.0, (h, w), inv=True)
    return affine_points_tf(coords, inverse), scores


# --- the flip test --------------------------------------------------------------------------

def flip_back(heatmaps, flip_pairs):
    """Mirror NHWC heatmaps of a mirrored crop back and swap the left/right channels."""
    heatmaps = np.asarray(heatmaps)
    return heatmaps[:, :, ::-1, :][..., flip_permutation(heatmaps.shape[-1], flip_pairs)]


def shift_right_one_pixel(heatmaps):
    """Column i takes column i-1; column 0 keeps its value (NHWC)."""
    shifted = np.array(heatmaps, copy=True)
    shifted[:, :, 1:, :] = heatmaps[:, :, :-1, :]
    return shifted


def fuse_flip_test(heatmaps, mirrored_heatmaps, flip_pairs, shift_heatmap=True):
    """The flip test's average of a crop's heatmaps and those of its mirror image.

    Args:
      heatmaps: (N, h, w, K) heatmaps of the crops.
      mirrored_heatmaps: (N, h, w, K) heatmaps of the horizontally mirrored crops.
      flip_pairs: (left, right) joint index pairs.
      shift_heatmap: shift the flipped-back heatmaps one column right (the reference does,
        for its ``flip_test`` with ``SHIFT_HEATMAP``).

    Returns:
      (N, h, w, K) float32.
    """
    back = flip_back(mirrored_heatmaps, flip_pairs)
    if shift_heatmap:
        back = shift_right_one_pixel(back)
    return ((np.asarray(heatmaps, np.float32) + back) * 0.5).astype(np.float32)


def fuse_flip_test_tf(heatmaps, mirrored_heatmaps, flip_pairs, shift_heatmap=True):
    """TensorFlow twin of :func:`fuse_flip_test` (K must be static)."""
    import tensorflow as tf

    order = flip_permutation(int(mirrored_heatmaps.shape[-1]), flip_pairs)
    back = tf.gather(tf.reverse(mirrored_heatmaps, axis=[2]), order, axis=3)
    if shift_heatmap:
        back = tf.concat([back[:, :, :1], back[:, :, :-1]], axis=2)
    return (tf.cast(heatmaps, tf.float32) + tf.cast(back, tf.float32)) * 0.5
