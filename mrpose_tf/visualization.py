"""Drawing helpers: skeletons on images, heatmaps over crops, grids of tiles (numpy + OpenCV).

All images are RGB uint8 (H, W, 3); returned images are new arrays.
"""
from __future__ import annotations

import cv2
import numpy as np

from mrpose_tf.images import read_image_rgb


def _colour(i, n):
    """A distinct RGB colour for item i of n (hue wheel)."""
    hsv = np.uint8([[[int(180 * i / max(n, 1)) % 180, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_skeleton(image, keypoints, scores, keypoint_spec, score_threshold=0.2, radius=3,
                  thickness=2):
    """Draw the keypoints and limbs of one or more people.

    Args:
      image: (H, W, 3) uint8 RGB.
      keypoints: (K, 2) or (N, K, 2) points (x, y) in image pixels.
      scores: (K,) or (N, K) confidences (or visibilities); None draws every point.
      keypoint_spec: :class:`mrpose_tf.keypoints.KeypointSpec` (skeleton and K).
      score_threshold: points (and limbs touching them) scoring at or below it are skipped.
      radius, thickness: point radius and limb width in pixels.

    Returns:
      A new (H, W, 3) uint8 image.
    """
    canvas = np.ascontiguousarray(np.asarray(image, np.uint8).copy())
    people = np.asarray(keypoints, np.float64).reshape(-1, keypoint_spec.num_joints, 2)
    scores = (np.ones(people.shape[:2]) if scores is None
              else np.asarray(scores, np.float64).reshape(people.shape[:2]))
    limbs = keypoint_spec.skeleton
    for points, score in zip(people, scores):
        shown = score > score_threshold
        for i, (a, b) in enumerate(limbs):
            if shown[a] and shown[b]:
                cv2.line(canvas, tuple(int(round(v)) for v in points[a]),
                         tuple(int(round(v)) for v in points[b]), _colour(i, len(limbs)),
                         thickness, cv2.LINE_AA)
        for j, point in enumerate(points):
            if shown[j]:
                cv2.circle(canvas, tuple(int(round(v)) for v in point), radius,
                           _colour(j, len(points)), -1, cv2.LINE_AA)
    return canvas


def draw_people(path, keypoints, records, keypoint_spec, num_images, columns=3):
    """Skeletons of every person on the first ``num_images`` images, tiled into one PNG.

    Args:
      path: the PNG file to write.
      keypoints: (N, K, 3) keypoints (x, y, score) of ``records``, image pixels.
      records: the person records (their ``image_path`` says where each person is).
      keypoint_spec: the :class:`mrpose_tf.keypoints.KeypointSpec` (skeleton).
      num_images: how many images (tiled ``columns`` wide, padded to the largest).

    Returns:
      The (H, W, 3) uint8 RGB picture written. Raises FileNotFoundError naming an image
      that cannot be read.
    """
    people = {}
    for record, points in zip(records, keypoints):
        people.setdefault(record.image_path, []).append(points)
    drawn = []
    for image_path in list(people)[:max(1, int(num_images))]:
        image = read_image_rgb(image_path)
        if image is None:
            raise FileNotFoundError(f"cannot read image {image_path}")
        points = np.stack(people[image_path])
        drawn.append(draw_skeleton(image, points[..., :2], points[..., 2], keypoint_spec))
    shape = max(im.shape[0] for im in drawn), max(im.shape[1] for im in drawn)
    drawn = [cv2.copyMakeBorder(im, 0, shape[0] - im.shape[0], 0, shape[1] - im.shape[1],
                                cv2.BORDER_CONSTANT, value=(255, 255, 255)) for im in drawn]
    picture = tile(drawn, min(columns, len(drawn)))
    cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return picture


def heatmap_overlay(image, heatmap, alpha=0.5):
    """Blend a heatmap (h, w) (or the max over (h, w, K)) in 'jet' colours over an image.

    The heatmap is resized to the image; values are clipped to [0, 1].
    """
    image = np.asarray(image, np.uint8)
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim == 3:
        heatmap = heatmap.max(axis=-1)
    heat = cv2.resize(np.clip(heatmap, 0, 1), (image.shape[1], image.shape[0]),
                      interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * heat)[..., None]
    return (image * (1 - weight) + colours * weight).astype(np.uint8)


def tile(images, columns, pad=2, background=255):
    """Tile equally sized (H, W, 3) images into a grid, ``columns`` wide."""
    images = [np.asarray(im, np.uint8) for im in images]
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), background, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im
    return grid


def heatmap_grid(heatmaps, crop=None, names=None, columns=6):
    """One tile per keypoint: its heatmap over the crop (or alone), labelled with its name.

    Args:
      heatmaps: (h, w, K) heatmaps.
      crop: optional (H, W, 3) uint8 RGB crop the heatmaps belong to.
      names: optional K keypoint names for the labels.
      columns: tiles per row.

    Returns:
      (rows, cols, 3) uint8 RGB grid.
    """
    heatmaps = np.asarray(heatmaps, np.float32)
    base = (np.zeros(heatmaps.shape[:2] + (3,), np.uint8) if crop is None
            else np.asarray(crop, np.uint8))
    tiles = []
    for k in range(heatmaps.shape[-1]):
        t = heatmap_overlay(base, heatmaps[..., k], alpha=0.6 if crop is not None else 1.0)
        if names is not None:
            cv2.putText(t, str(names[k])[:14], (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    return tile(tiles, min(columns, len(tiles)))
