"""Where keypoints go wrong: PCK at several tolerances, left/right swaps, and the AP ceiling
of the heatmap resolution (the decoded training targets).

Used by ``scripts/evaluate.py --error_analysis``. Distances are in units of the longer side
of the person's box, and PCK is :mod:`mrpose_tf.evaluation.pck`'s.
"""
from __future__ import annotations

import numpy as np

from mrpose_tf.codec import decode_heatmaps
from mrpose_tf.evaluation.coco import evaluate_coco
from mrpose_tf.evaluation.pck import fraction_within, normalised_errors
from mrpose_tf.geometry import PIXEL_STD, flip_permutation, person_area

PCK_THRESHOLDS = (0.1, 0.05, 0.025)
# A labelled keypoint is a left/right swap when it is off by more than SWAP_MIN_ERROR box
# sides and at most half as far from the ground truth of its mirror partner.
SWAP_MIN_ERROR = 0.1


def keypoint_errors(predicted, joints, visibility, box_sides, flip_pairs, names=None):
    """PCK at :data:`PCK_THRESHOLDS`, left/right swaps and median errors, overall and per joint.

    Args:
      predicted: (N, K, 2) predicted keypoints in image pixels.
      joints: (N, K, 2) ground truth in image pixels.
      visibility: (N, K), > 0 where the keypoint is labelled (only those count).
      box_sides: (N,) the longer side of each person's box in pixels.
      flip_pairs: (left, right) index pairs.
      names: K keypoint names (default: their indices).

    Returns:
      dict: 'labelled' (count), 'PCK@t' for each threshold, 'swap_rate' (fraction of the
      labelled keypoints that are left/right swaps), and 'per_joint' {name: {'median_error',
      'swap_rate', 'labelled'}}.
    """
    labelled = np.asarray(visibility) > 0
    if np.asarray(predicted).shape[:2] != labelled.shape:
        raise ValueError(f"shapes disagree: predicted {np.asarray(predicted).shape}, "
                         f"visibility {labelled.shape}")
    joints = np.asarray(joints, np.float64)
    num_joints = joints.shape[1]
    names = list(names) if names is not None else [str(j) for j in range(num_joints)]
    error = normalised_errors(predicted, joints, box_sides)
    mirror = flip_permutation(num_joints, flip_pairs)
    mirror_error = normalised_errors(predicted, joints[:, mirror], box_sides)
    has_partner = (mirror != np.arange(num_joints))[None, :] & labelled[:, mirror]
    swapped = labelled & has_partner & (error > SWAP_MIN_ERROR) & (mirror_error <= 0.5 * error)
    count = int(labelled.sum())
    out = {"labelled": count}
    for threshold in PCK_THRESHOLDS:
        out[f"PCK@{threshold}"] = fraction_within(error, labelled, threshold)
    out["swap_rate"] = float(swapped.sum() / max(count, 1))
    out["per_joint"] = {
        name: {"labelled": int(labelled[:, j].sum()),
               "median_error": float(np.median(error[labelled[:, j], j]))
               if labelled[:, j].any() else float("nan"),
               "swap_rate": float(swapped[:, j].sum() / max(labelled[:, j].sum(), 1))}
        for j, name in enumerate(names)}
    return out


def resolution_ceiling(records, config, keypoints, annotation_file):
    """COCO AP of the decoded training targets: the best this heatmap size and decoding allow.

    The evaluation pipeline's target heatmaps (exact Gaussians at the ground truth) go
    through the same decoding (argmax, quarter-pixel step, inverse affine) as predictions.

    Args:
      records: person records with ground-truth boxes.
      config: experiment ConfigDict (model.input_size, heatmap_size, sigma; test.*).
      keypoints: the keypoint set.
      annotation_file: the COCO keypoints ground truth.

    Returns:
      OrderedDict of the 10 COCO stats.
    """
    from mrpose_tf.data.pipeline import build_dataset

    dataset = build_dataset(records, keypoints=keypoints, input_size=config.model.input_size,
                            heatmap_size=config.model.heatmap_size, sigma=config.model.sigma,
                            train=False, batch_size=int(config.test.batch_size))
    people = []
    for batch in dataset:
        center, scale = batch["center"].numpy(), batch["scale"].numpy()
        coords, maxvals = decode_heatmaps(batch["heatmaps"].numpy(), center, scale)
        for i in range(len(coords)):
            people.append({"image_id": int(batch["image_id"][i]),
                           "category_id": records[int(batch["record_position"][i])].category_id,
                           "keypoints": np.concatenate([coords[i], maxvals[i][:, None]], -1),
                           "box_score": 1.0,
                           "area": float(person_area(scale[i]))})
    return evaluate_coco(people, annotation_file, float(config.test.in_vis_thre),
                         float(config.test.oks_thre), keypoints.sigmas)


def analyze_errors(model, config, records, keypoints, flip_test=None, annotation_file=None):
    """:func:`keypoint_errors` of ``model`` on ``records`` (+ the resolution ceiling for COCO).

    Args:
      model: keras model or callable on preprocessed crops.
      config: experiment ConfigDict.
      records: person records with ground-truth boxes (their ``joints``, ``visibility`` and
        ``bbox`` are the truth).
      keypoints: the keypoint set.
      flip_test: override ``config.test.flip_test``.
      annotation_file: COCO ground truth; given, the result also has 'resolution_ceiling'
        (:func:`resolution_ceiling` on ``records``).

    Returns:
      the dict of :func:`keypoint_errors`, plus 'resolution_ceiling' (COCO stats) if asked.
    """
    from mrpose_tf.evaluation.runner import predict_records

    records = [r for r in records
               if np.all(np.isfinite(r.scale)) and np.all(np.asarray(r.scale) > 0)]
    if not any(np.any(np.asarray(r.visibility) > 0) for r in records):
        raise ValueError("no labelled keypoints in the records: the error analysis needs the "
                         "ground-truth boxes of the annotation file (not detections)")
    predictions = predict_records(model, records, config, keypoints, flip_test)
    if predictions["skipped_images"]:
        raise ValueError(f"{predictions['skipped_images']} images could not be read; the error "
                         f"analysis needs every person's crop (see the log for the files)")
    sides = np.array([max(r.bbox[2], r.bbox[3]) if max(r.bbox[2], r.bbox[3]) > 0
                      else max(r.scale) * PIXEL_STD / 1.25 for r in records])
    errors = keypoint_errors(predictions["keypoints"][..., :2],
                             np.stack([r.joints for r in records]),
                             np.stack([r.visibility for r in records]), sides,
                             keypoints.flip_pairs, keypoints.names)
    if annotation_file:
        errors["resolution_ceiling"] = dict(resolution_ceiling(records, config, keypoints,
                                                               annotation_file))
    return errors


def format_error_table(errors):
    """The output of :func:`keypoint_errors` as text lines."""
    lines = [f"{errors['labelled']} labelled keypoints: " + ", ".join(
        f"PCK@{t} {errors[f'PCK@{t}']:.3f}" for t in PCK_THRESHOLDS)
        + f", left/right swaps {errors['swap_rate']:.3f}",
        f"{'joint':<16}{'median error':>13}{'swaps':>8}"]
    for name, row in errors["per_joint"].items():
        lines.append(f"{name:<16}{row['median_error']:>13.3f}{row['swap_rate']:>8.3f}")
    ceiling = errors.get("resolution_ceiling")
    if ceiling:
        lines.append(f"resolution ceiling (decoded targets): AP {ceiling['AP']:.3f}, "
                     f"AP .5 {ceiling['AP .5']:.3f}, AP .75 {ceiling['AP .75']:.3f}")
    return "\n".join(lines)
