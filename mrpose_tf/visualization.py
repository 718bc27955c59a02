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


def plot_coordinates(xs, ys, x_range, y_range, box):
    """Pixel coordinates of data points in a plot area.

    Args:
      xs, ys: data coordinates.
      x_range, y_range: (low, high) data values at the left/right and bottom/top edges.
      box: (left, top, right, bottom) of the plot area in pixels.

    Returns:
      (N, 2) int32 pixel (x, y); y grows downwards, so ``y_range[1]`` maps to ``top``.
    """
    left, top, right, bottom = box
    fx = (np.asarray(xs, np.float64) - x_range[0]) / max(x_range[1] - x_range[0], 1e-12)
    fy = (np.asarray(ys, np.float64) - y_range[0]) / max(y_range[1] - y_range[0], 1e-12)
    px = left + fx * (right - left)
    py = bottom - fy * (bottom - top)
    return np.round(np.stack([px, py], axis=-1)).astype(np.int32)


def _line_panel(series, title, x_range, size, y_range=None):
    """A white panel with axes, one coloured polyline per named series and a legend."""
    height, width = size
    panel = np.full((height, width, 3), 255, np.uint8)
    box = (56, 28, width - 12, height - 30)
    values = [y for points in series.values() for _, y in points]
    if y_range is None:
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        pad = 0.05 * (high - low) or 0.5 * abs(high) or 1.0
        y_range = (low - pad, high + pad)
    black, grey = (0, 0, 0), (200, 200, 200)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_range[0] + frac * (y_range[1] - y_range[0])
        (_, py), = plot_coordinates([x_range[0]], [y], x_range, y_range, box)
        cv2.line(panel, (box[0], int(py)), (box[2], int(py)), grey, 1)
        cv2.putText(panel, f"{y:.3g}", (4, int(py) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, black, 1,
                    cv2.LINE_AA)
    cv2.rectangle(panel, box[:2], box[2:], black, 1)
    for frac in (0.0, 0.5, 1.0):
        x = x_range[0] + frac * (x_range[1] - x_range[0])
        (px, _), = plot_coordinates([x], [y_range[0]], x_range, y_range, box)
        label = f"{x:.0f}"
        (text_width, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        left = int(np.clip(px - text_width // 2, 0, width - text_width))
        cv2.putText(panel, label, (left, box[3] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, black, 1,
                    cv2.LINE_AA)
    cv2.putText(panel, title, (box[0], 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(panel, "step", (box[2] - 60, height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, black,
                1, cv2.LINE_AA)
    for i, (name, points) in enumerate(series.items()):
        if not points:
            continue
        colour = _colour(i, max(len(series), 3))
        xy = plot_coordinates(*zip(*points), x_range, y_range, box)
        cv2.polylines(panel, [xy.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        for point in xy:
            cv2.circle(panel, tuple(int(v) for v in point), 3, colour, -1, cv2.LINE_AA)
        cv2.putText(panel, name, (box[2] - 110, box[1] + 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, colour, 1, cv2.LINE_AA)
    return panel


def draw_learning_curve(curve, size=(300, 900)):
    """The training loss and the validation metrics against the step, as two stacked panels.

    Args:
      curve: {'train': [{'step', 'loss', ...}], 'val': [{'step', 'AP', 'PCK', ...}]}, as
        :func:`mrpose_tf.training.read_metrics` returns.
      size: (height, width) of each panel.

    Returns:
      (2 * height, width, 3) uint8 RGB image.
    """
    train = [(r["step"], r["loss"]) for r in curve.get("train", []) if "loss" in r]
    val = {name: [(r["step"], r[name]) for r in curve.get("val", []) if name in r]
           for name in ("AP", "PCK", "Mean")}
    val = {name: points for name, points in val.items() if points}
    steps = [s for s, _ in train] + [s for points in val.values() for s, _ in points]
    x_range = (0.0, float(max(steps))) if steps else (0.0, 1.0)
    top = _line_panel({"train loss": train}, "training loss", x_range, size)
    bottom = _line_panel(val, "validation (AP: COCO OKS, PCK: heatmap PCK@0.05)", x_range, size,
                         y_range=(0.0, 1.0))
    return np.concatenate([top, bottom], axis=0)
