"""The one home of the pose geometry: boxes, affine crops, point transforms and flips.

Conventions (the whole project): every size is (height, width); every point is (x, y) in
pixels; ``scale`` is the person box size in units of ``PIXEL_STD`` (200 px) as (sx, sy).

Training, inference, evaluation and export all call these functions; nothing else in the
project computes a crop matrix or a flip.
"""
from __future__ import annotations

import numpy as np

PIXEL_STD = 200.0


def box_to_center_scale(box_xywh, aspect_ratio, padding=1.25):
    """Person box -> (center, scale), as in the SimpleBaseline tooling.

    The shorter side of the box is enlarged so that width / height == ``aspect_ratio``
    (input width / input height), then the box is padded by ``padding``.

    Args:
      box_xywh: (x, y, w, h) in pixels, or an (N, 4) array of them.
      aspect_ratio: input width / input height (192 / 256 for COCO, 1 for MPII).
      padding: the enlargement factor (1.25 in the paper's configs).

    Returns:
      center (2,) or (N, 2) float32 and scale (2,) or (N, 2) float32, in units of 200 px.
    """
    box = np.asarray(box_xywh, dtype=np.float64)
    if box.shape[-1] != 4:
        raise ValueError(f"box_xywh must end in 4 values (x, y, w, h), got shape {box.shape}")
    x, y, w, h = np.moveaxis(box, -1, 0)
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=-1).astype(np.float32)
    new_w = np.where(w < aspect_ratio * h, h * aspect_ratio, w)
    new_h = np.where(w > aspect_ratio * h, w / aspect_ratio, h)
    # float32 like the reference, so that crops agree bit for bit.
    scale = np.stack([new_w / PIXEL_STD, new_h / PIXEL_STD], axis=-1).astype(np.float32)
    return center, scale * np.float32(padding)


def person_area(scale):
    """A person's area in px^2 from its box scale: ``scale_x * scale_y * 200^2``.

    The area the reference gives a person without a ground-truth ``area`` (detections, MPII)
    and uses for OKS-NMS and the OKS between predictions.

    Args:
      scale: (..., 2) box scales in units of 200 px.

    Returns:
      (...) float64 areas in px^2.
    """
    scale = np.asarray(scale, np.float64)
    return scale[..., 0] * scale[..., 1] * PIXEL_STD ** 2


def _rotate(point, rot_rad):
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return np.array([point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs])


def _third_point(a, b):
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def _solve_affine(src, dst):
    """The 2x3 matrix mapping three src points onto three dst points (cv2.getAffineTransform)."""
    a = np.concatenate([src.astype(np.float64), np.ones((3, 1))], axis=1)
    return np.linalg.solve(a, dst.astype(np.float64)).T


def get_affine_transform(center, scale, rot, output_size, inv=False):
    """The 2x3 matrix that maps the person box onto the output image.

    The box is centred at ``center``, ``scale * 200`` px wide, and rotated by ``rot``
    degrees; its width is mapped onto the output width (the aspect ratio is already in
    ``scale``, see :func:`box_to_center_scale`). Equal to the SimpleBaseline tooling's
    ``get_affine_transform`` (which builds three float32 point pairs and solves them).

    Args:
      center: (x, y).
      scale: (sx, sy) or a scalar, in units of 200 px.
      rot: rotation in degrees (counter-clockwise in the image as displayed).
      output_size: (height, width) of the crop (or of the heatmap, for decoding).
      inv: return the inverse mapping (output -> image) instead.

    Returns:
      (2, 3) float64 matrix.
    """
    # Keep float32 scales float32: the reference computes scale * 200 in the scale's own
    # dtype (float32 for COCO records), and that rounding moves the matrix by up to ~1e-4.
    scale = np.asarray(scale)
    scale = scale if scale.dtype == np.float32 else scale.astype(np.float64)
    if scale.ndim == 0:
        scale = np.array([scale, scale])
    out_h, out_w = output_size
    src_w = scale[0] * PIXEL_STD
    rot_rad = np.pi * rot / 180.0
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = np.asarray(center, dtype=np.float64)
    src[1] = np.asarray(center, dtype=np.float64) + _rotate([0.0, src_w * -0.5], rot_rad)
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0.0, out_w * -0.5])
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return _solve_affine(dst, src) if inv else _solve_affine(src, dst)


def affine_points(points, matrix):
    """Apply a 2x3 affine matrix to points of shape (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def flip_joints(joints, visibility, image_width, flip_pairs):
    """Mirror joints horizontally in an image of ``image_width`` px and swap left/right.

    x -> image_width - 1 - x, then the members of each flip pair exchange places (their
    visibility with them).

    Args:
      joints: (K, 2) or (K, >=2) array; only column 0 is mirrored.
      visibility: (K,) or (K, 1) array.
      image_width: width of the image the joints live in.
      flip_pairs: sequence of (left, right) index pairs.

    Returns:
      (joints, visibility), new arrays.
    """
    joints = np.array(joints, dtype=np.float64, copy=True)
    visibility = np.array(visibility, copy=True)
    joints[:, 0] = image_width - 1 - joints[:, 0]
    order = flip_permutation(len(joints), flip_pairs)
    return joints[order], visibility[order]


def flip_permutation(num_joints, flip_pairs):
    """The index permutation that swaps every (left, right) pair: ``x[perm]`` is flipped."""
    order = np.arange(num_joints)
    for a, b in flip_pairs:
        order[a], order[b] = b, a
    return order


# --- TensorFlow versions, for use inside tf.data and exported graphs. -----------------------
# TensorFlow is imported inside the functions so that the numpy geometry above stays usable
# without it.


def box_to_center_scale_tf(boxes, aspect_ratio, padding=1.25):
    """TensorFlow :func:`box_to_center_scale` for (M, 4) boxes (x, y, w, h) in pixels.

    Returns:
      centers (M, 2) and scales (M, 2) float32, scales in units of 200 px.
    """
    import tensorflow as tf

    x, y, w, h = tf.unstack(tf.cast(boxes, tf.float32), num=4, axis=-1)
    centers = tf.stack([x + w * 0.5, y + h * 0.5], axis=-1)
    new_w = tf.where(w < aspect_ratio * h, h * aspect_ratio, w)
    new_h = tf.where(w > aspect_ratio * h, w / aspect_ratio, h)
    return centers, tf.stack([new_w, new_h], axis=-1) / PIXEL_STD * padding


def affine_transform_tf(center, scale, rot, output_size, inv=False):
    """TensorFlow, batched :func:`get_affine_transform` (equal to ~1e-4 in float32).

    The three-point construction of the reference is a similarity: it rotates by ``-rot``,
    scales by ``output_width / (scale_x * 200)`` and moves ``center`` onto the centre of the
    output, so the matrix is written down in closed form (no linear solve, exportable).

    Args:
      center: (..., 2) box centres (x, y).
      scale: (..., 2) box scales in units of 200 px (only ``scale_x`` is used), or (...).
      rot: (...) rotations in degrees, or a scalar.
      output_size: (height, width) of the crop (Python ints or an int tensor).
      inv: return the crop -> image mapping instead.

    Returns:
      (..., 2, 3) float32 matrices (the broadcast batch shape of the inputs).
    """
    import tensorflow as tf

    center = tf.cast(center, tf.float32)
    scale = tf.cast(scale, tf.float32)
    rot = tf.cast(rot, tf.float32)
    scale_x = scale[..., 0] if scale.shape.rank == center.shape.rank else scale
    out_h = tf.cast(output_size[0], tf.float32)
    out_w = tf.cast(output_size[1], tf.float32)
    cx, cy = center[..., 0], center[..., 1]
    zero = cx * 0.0 + scale_x * 0.0 + rot * 0.0  # the broadcast batch shape
    zoom = out_w / (scale_x * PIXEL_STD)
    theta = rot * (np.pi / 180.0)
    cs, sn = tf.cos(theta), tf.sin(theta)
    dx, dy = out_w * 0.5, out_h * 0.5
    if inv:  # output -> image: rotate by +rot, divide by the zoom
        a00, a01, a10, a11 = cs / zoom, -sn / zoom, sn / zoom, cs / zoom
        t0 = cx - (a00 * dx + a01 * dy)
        t1 = cy - (a10 * dx + a11 * dy)
    else:  # image -> output: rotate by -rot, multiply by the zoom
        a00, a01, a10, a11 = cs * zoom, sn * zoom, -sn * zoom, cs * zoom
        t0 = dx - (a00 * cx + a01 * cy)
        t1 = dy - (a10 * cx + a11 * cy)
    rows = [tf.stack([a00 + zero, a01 + zero, t0 + zero], axis=-1),
            tf.stack([a10 + zero, a11 + zero, t1 + zero], axis=-1)]
    return tf.stack(rows, axis=-2)


def invert_affine_tf(matrix):
    """Inverse of (..., 2, 3) affine matrices (TensorFlow)."""
    import tensorflow as tf

    matrix = tf.convert_to_tensor(matrix)
    a, b, t0 = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    c, d, t1 = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    det = a * d - b * c
    i00, i01, i10, i11 = d / det, -b / det, -c / det, a / det
    rows = [tf.stack([i00, i01, -(i00 * t0 + i01 * t1)], axis=-1),
            tf.stack([i10, i11, -(i10 * t0 + i11 * t1)], axis=-1)]
    return tf.stack(rows, axis=-2)


def affine_points_tf(points, matrix):
    """Apply (..., 2, 3) matrices to (..., K, 2) points (TensorFlow :func:`affine_points`)."""
    import tensorflow as tf

    points = tf.cast(points, matrix.dtype)
    return tf.linalg.matmul(points, matrix[..., :2], transpose_b=True) + matrix[..., None, :, 2]


def warp_affine_tf(image, matrix, output_size):
    """Bilinear affine warp, the TensorFlow twin of ``cv2.warpAffine(image, matrix, (w, h))``.

    Same conventions as OpenCV: integer coordinates are pixel centres, output pixel (u, v)
    samples the input at ``matrix^-1 @ [u, v, 1]``, and pixels outside the input read as 0
    (``BORDER_CONSTANT``). OpenCV interpolates uint8 images in fixed point (1/32 px), so the
    two agree to a fraction of a grey level rather than exactly.

    Args:
      image: (H, W, C) or (N, H, W, C) image(s), any real dtype.
      matrix: (2, 3) or (N, 2, 3) forward matrices (input -> output).
      output_size: (height, width) of the output.

    Returns:
      (out_h, out_w, C) or (N, out_h, out_w, C) float32.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    batched = image.shape.rank == 4
    images = image if batched else image[None]
    inverse = tf.reshape(invert_affine_tf(tf.cast(matrix, tf.float32)), [-1, 6])
    inverse = tf.broadcast_to(inverse, [tf.shape(images)[0], 6])
    # ImageProjectiveTransformV3 takes the output -> input mapping, with integer pixel centres.
    transforms = tf.concat([inverse, tf.zeros_like(inverse[:, :2])], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.cast(output_size, tf.int32),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return warped if batched else warped[0]


def warp_axis_aligned_tf(image, matrix, output_size):
    """:func:`warp_affine_tf` for a matrix without rotation, ~2.5x faster (``crop_and_resize``).

    ``matrix`` must map x to ``a x + t0`` and y to ``d y + t1`` (``a`` may be negative: a
    mirrored crop). The image gets a 1-pixel zero border, so the samples, including the
    blend with 0 just outside the image, are those of :func:`warp_affine_tf`.

    Args:
      image: (H, W, C) image, any real dtype.
      matrix: (2, 3) forward matrix (input -> output) with zero off-diagonal terms.
      output_size: (height, width) of the output.

    Returns:
      (out_h, out_w, C) float32.
    """
    import tensorflow as tf

    matrix = tf.cast(matrix, tf.float32)
    out_h, out_w = int(output_size[0]), int(output_size[1])
    padded = tf.pad(tf.cast(image, tf.float32), [[1, 1], [1, 1], [0, 0]])
    last_y = tf.cast(tf.shape(padded)[0] - 1, tf.float32)
    last_x = tf.cast(tf.shape(padded)[1] - 1, tf.float32)
    # Padded-image coordinates of the first and last output pixels, over the image extent.
    x0, x1 = 1.0 - matrix[0, 2] / matrix[0, 0], 1.0 + (out_w - 1.0 - matrix[0, 2]) / matrix[0, 0]
    y0, y1 = 1.0 - matrix[1, 2] / matrix[1, 1], 1.0 + (out_h - 1.0 - matrix[1, 2]) / matrix[1, 1]
    box = tf.stack([y0 / last_y, x0 / last_x, y1 / last_y, x1 / last_x])
    return tf.image.crop_and_resize(padded[None], box[None], [0], [out_h, out_w],
                                    extrapolation_value=0.0)[0]
