"""MPII PCKh against the official ground-truth file, as the SimpleBaseline tooling.

The ground truth is MPII's ``gt_valid.mat`` layout: ``dataset_joints`` (1 x 16 joint names),
``jnt_missing`` (16 x N), ``pos_gt_src`` (16 x 2 x N, 1-based) and ``headboxes_src``
(2 x 2 x N: top-left and bottom-right corners of the head box).
"""
from __future__ import annotations

import collections

import numpy as np

HEAD_SIZE_FACTOR = 0.6          # SC_BIAS: head size = 0.6 x head-box diagonal
PCKH_THRESHOLD = 0.5
# The reference's Mean@0.1 takes row 11 of the 0..0.5 step-0.01 curve (threshold 0.11).
CURVE_THRESHOLDS = np.arange(0, 0.5 + 0.01, 0.01)
CURVE_ROW_MEAN_AT_0_1 = 11
EXCLUDED_FROM_MEAN = slice(6, 8)  # pelvis, thorax
_PARTS = (("Shoulder", "lsho", "rsho"), ("Elbow", "lelb", "relb"), ("Wrist", "lwri", "rwri"),
          ("Hip", "lhip", "rhip"), ("Knee", "lkne", "rkne"), ("Ankle", "lank", "rank"))
_GT_FIELDS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")


def _joint_names(dataset_joints):
    """Names from the .mat 'dataset_joints' (a cell array or a char matrix)."""
    names = []
    for item in np.asarray(dataset_joints, dtype=object).reshape(-1):
        while isinstance(item, np.ndarray):
            item = item.reshape(-1)[0] if item.size else ""
        names.append(str(item).strip())
    return names


def load_mpii_gt(gt_file):
    """The four arrays of an official-layout MPII ground-truth .mat file."""
    from scipy.io import loadmat

    gt = loadmat(gt_file)
    missing = [f for f in _GT_FIELDS if f not in gt]
    if missing:
        raise ValueError(f"{gt_file}: MPII ground truth lacks {missing} (needs {_GT_FIELDS})")
    return {f: gt[f] for f in _GT_FIELDS}


def evaluate_mpii(preds, gt_file):
    """PCKh@0.5 per joint group, Mean and Mean@0.1, as the reference MPII evaluation.

    A joint with no labelled instance in the ground truth (every person has it missing) has
    no PCKh: its group is the mean of its labelled joints, absent (None) when neither is,
    and the means are over the labelled joints (the reference's would be NaN).

    Args:
      preds: (N, 16, >=2) predicted joints (x, y), 0-based pixels, in the ground truth's
        person order.
      gt_file: path of the ground truth in the official ``gt_valid.mat`` layout.

    Returns:
      OrderedDict (percent, float, or None when absent) with 'Head', 'Shoulder', 'Elbow',
      'Wrist', 'Hip', 'Knee', 'Ankle', 'Mean', 'Mean@0.1'.

    Raises:
      ValueError: the file lacks a field or a joint name, or ``preds`` does not match it.
    """
    gt = load_mpii_gt(gt_file)
    names = _joint_names(gt["dataset_joints"])
    index = {n: i for i, n in enumerate(names)}
    needed = {"head"} | {n for _, l, r in _PARTS for n in (l, r)}
    if not needed <= set(index):
        raise ValueError(f"{gt_file}: dataset_joints {names} lacks {sorted(needed - set(index))}")
    pos_gt = np.asarray(gt["pos_gt_src"], dtype=np.float64)
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 3 or preds.shape[2] < 2 or (preds.shape[1], 2, len(preds)) != pos_gt.shape:
        raise ValueError(f"preds of shape {preds.shape} do not match {gt_file}: pos_gt_src is "
                         f"{pos_gt.shape} (joints x 2 x people)")
    pos_pred = np.transpose(preds[:, :, :2] + 1.0, [1, 2, 0])  # to 1-based, (16, 2, N)
    visible = 1 - np.asarray(gt["jnt_missing"], dtype=np.float64)
    error = np.linalg.norm(pos_pred - pos_gt, axis=1)
    boxes = np.asarray(gt["headboxes_src"], dtype=np.float64)
    head_sizes = np.linalg.norm(boxes[1] - boxes[0], axis=0) * HEAD_SIZE_FACTOR
    count = visible.sum(axis=1)
    labelled = count > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled_error = error / head_sizes[None, :] * visible

    def pck(threshold):  # (16,) percent; 0 where nothing is labelled (never read)
        correct = ((scaled_error <= threshold) * visible).sum(axis=1)
        return 100.0 * correct / np.maximum(count, 1)

    pckh = pck(PCKH_THRESHOLD)
    in_mean = labelled.copy()
    in_mean[EXCLUDED_FROM_MEAN] = False

    def mean(values):
        weight = count * in_mean
        return float(np.sum(values * weight) / weight.sum()) if weight.sum() else None

    def group(*joints):
        values = [pckh[index[j]] for j in joints if labelled[index[j]]]
        return float(np.mean(values)) if values else None

    result = collections.OrderedDict(Head=group("head"))
    for part, left, right in _PARTS:
        result[part] = group(left, right)
    result["Mean"] = mean(pckh)
    result["Mean@0.1"] = mean(pck(CURVE_THRESHOLDS[CURVE_ROW_MEAN_AT_0_1]))
    return result
