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
    scale = np.asarray(scale, dtype=np.float64)
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


def transform_preds(coords, center, scale, output_size):
    """Map points from a crop (or heatmap) of ``output_size`` back to the image."""
    return affine_points(coords, get_affine_transform(center, scale, 0.0, output_size, inv=True))


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


def flip_back(heatmaps, flip_pairs):
    """Mirror NHWC heatmaps of a flipped crop back and swap left/right channels."""
    heatmaps = np.asarray(heatmaps)
    return heatmaps[:, :, ::-1, :][..., flip_permutation(heatmaps.shape[-1], flip_pairs)]
