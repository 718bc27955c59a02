"""PCK against the person box, and the mean-pose baseline it is compared with.

PCK@t: a labelled keypoint (visibility > 0) is correct when its distance to the ground truth
is below ``t`` x the longer side of the person's ground-truth box (strictly below, as the
SimpleBaseline tooling's ``dist_acc`` and MMPose's ``keypoint_pck_accuracy``). Used by the
training report (PCK@0.1) and the error analysis (PCK at three tolerances).

The mean-pose baseline predicts, for every person, the training set's average keypoint
positions in box-normalised coordinates ((x - x0) / w, (y - y0) / h), placed in that person's
box: what a network that ignores the image could reach.
"""
from __future__ import annotations

import numpy as np


def checked_boxes(boxes, count, name):
    """(count, 4) float64 boxes (x, y, w, h); ValueError naming the first with w or h <= 0."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) != count:
        raise ValueError(f"{name}: {len(boxes)} boxes for {count} people")
    bad = np.flatnonzero(~(np.all(np.isfinite(boxes), 1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)))
    if len(bad):
        raise ValueError(f"{name}: person {bad[0]} has box {boxes[bad[0]].tolist()}; "
                         f"PCK needs a box (x, y, w, h) with w, h > 0")
    return boxes


def normalised_errors(predicted, joints, box_sides):
    """(N, K) distances between predicted and true (x, y) in units of each person's box side.

    Args:
      predicted: (N, K, 2+) predicted (x, y) in image pixels (extra columns ignored).
      joints: (N, K, 2) ground truth (x, y) in image pixels.
      box_sides: (N,) the longer side of each person's box, pixels (> 0).
    """
    predicted = np.asarray(predicted, np.float64)[..., :2]
    joints = np.asarray(joints, np.float64)
    sides = np.asarray(box_sides, np.float64).reshape(-1)
    if predicted.shape != joints.shape or sides.shape != predicted.shape[:1]:
        raise ValueError(f"shapes disagree: predicted {predicted.shape}, joints {joints.shape}, "
                         f"box_sides {sides.shape}")
    if np.any(~(sides > 0)):
        raise ValueError("box_sides must be positive")
    return np.linalg.norm(predicted - joints, axis=-1) / sides[:, None]


def fraction_within(errors, labelled, threshold):
    """PCK from :func:`normalised_errors`: the share of ``labelled`` (N, K) errors < threshold.

    0.0 when nothing is labelled.
    """
    labelled = np.asarray(labelled, bool)
    return float((labelled & (np.asarray(errors) < threshold)).sum() / max(labelled.sum(), 1))


def pck(predicted, joints, visibility, boxes, threshold=0.1):
    """Fraction of labelled keypoints within ``threshold`` x the longer box side.

    Args:
      predicted: (N, K, 2+) predicted (x, y) in image pixels (extra columns ignored).
      joints: (N, K, 2) ground-truth (x, y).
      visibility: (N, K); keypoints with visibility > 0 are counted.
      boxes: (N, 4) ground-truth boxes (x, y, w, h) in pixels.
      threshold: the fraction of max(w, h).

    Returns:
      The fraction (float) of counted keypoints whose error is < threshold * max(w, h).

    Raises:
      ValueError: mismatched shapes, a box with w or h <= 0 (named), no labelled keypoint.
    """
    labelled = np.asarray(visibility) > 0
    boxes = checked_boxes(boxes, len(np.asarray(joints)), "pck")
    if not labelled.any():
        raise ValueError("pck: no labelled keypoints")
    return fraction_within(normalised_errors(predicted, joints, boxes[:, 2:].max(axis=1)),
                           labelled, threshold)


def mean_pose(joints, visibility, boxes):
    """The average keypoint positions in box-normalised coordinates.

    Args:
      joints: (N, K, 2) keypoints (x, y) in image pixels.
      visibility: (N, K); only keypoints with visibility > 0 are averaged.
      boxes: (N, 4) person boxes (x, y, w, h).

    Returns:
      (K, 2) mean of ((x - x0) / w, (y - y0) / h) per keypoint; (0.5, 0.5), the box
      centre, for a keypoint never labelled.
    """
    joints = np.asarray(joints, np.float64)
    labelled = (np.asarray(visibility) > 0)[..., None]
    boxes = checked_boxes(boxes, len(joints), "mean_pose")
    normalised = (joints - boxes[:, None, :2]) / boxes[:, None, 2:]
    counts = labelled.sum(axis=0)
    sums = np.where(labelled, normalised, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.5)


def place_mean_pose(pose, boxes):
    """(N, K, 2) image coordinates of a box-normalised pose (K, 2) in each box (x, y, w, h)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return boxes[:, None, :2] + np.asarray(pose, np.float64)[None] * boxes[:, None, 2:]


def record_columns(records):
    """(joints (N, K, 2), visibility (N, K), boxes (N, 4)) of person records' ground truth.

    Raises ValueError when a record has no box (detections carry no ground truth).
    """
    missing = [r.image_id for r in records if r.bbox is None]
    if missing:
        raise ValueError(f"person records of images {missing[:5]} have no bbox: PCK needs "
                         f"ground-truth boxes")
    return (np.stack([r.joints for r in records]), np.stack([r.visibility for r in records]),
            np.stack([r.bbox for r in records]))
