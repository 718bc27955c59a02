"""COCO keypoint evaluation as in the SimpleBaseline tooling (SPEC section 4).

Per person: score = box score x mean of the joint scores above ``in_vis_thre``; per image:
greedy OKS-NMS at ``oks_thre``; then the COCO results JSON scored by pycocotools.
"""
from __future__ import annotations

import collections
import contextlib
import io
import json

import numpy as np

from mrpose_tf.keypoints import COCO_SIGMAS

STATS_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)",
               "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")


def oks_iou(kept, others, kept_area, other_areas, sigmas=None, in_vis_thre=None):
    """OKS between one person and several others, as the reference ``oks_iou``.

    Args:
      kept: (K, 3) keypoints (x, y, score) of the reference person.
      others: (M, K, 3) keypoints of the others.
      kept_area: area of the reference person.
      other_areas: (M,) areas.
      sigmas: (K,) OKS sigmas (COCO's by default).
      in_vis_thre: if given, only joints of the *other* person whose score > in_vis_thre
        count (the reference's ``list(vg > t) and list(vd > t)`` evaluates to the latter).

    Returns:
      (M,) OKS values.
    """
    sigmas = np.asarray(COCO_SIGMAS if sigmas is None else sigmas, dtype=np.float64)
    variances = (sigmas * 2) ** 2
    kept = np.asarray(kept, dtype=np.float64)
    others = np.asarray(others, dtype=np.float64).reshape(-1, *kept.shape)
    other_areas = np.asarray(other_areas, dtype=np.float64).reshape(-1)
    dx = others[..., 0] - kept[:, 0]
    dy = others[..., 1] - kept[:, 1]
    mean_area = (kept_area + other_areas) / 2 + np.spacing(1)
    e = (dx ** 2 + dy ** 2) / variances / mean_area[:, None] / 2
    counted = np.ones_like(e, dtype=bool)
    if in_vis_thre is not None:
        counted = others[..., 2] > in_vis_thre
    num = counted.sum(axis=1)
    total = np.where(counted, np.exp(-e), 0.0).sum(axis=1)
    return np.where(num > 0, total / np.maximum(num, 1), 0.0)


def oks_nms(keypoints, scores, areas, thresh, sigmas=None, in_vis_thre=None):
    """Greedy OKS non-maximum suppression.

    Repeatedly keeps the best-scoring remaining person and drops those whose OKS with it
    exceeds ``thresh``.

    Args:
      keypoints: (N, K, 3) keypoints (x, y, score).
      scores: (N,) person scores.
      areas: (N,) person areas.
      thresh: OKS above which a person is suppressed (0.9 in the paper).
      sigmas: (K,) OKS sigmas; COCO's when None.
      in_vis_thre: optional joint-score threshold for the OKS (None in the paper's call).

    Returns:
      list of kept indices, best first.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    if keypoints.ndim != 3 or keypoints.shape[2] != 3:
        raise ValueError(f"keypoints must be (N, K, 3), got shape {keypoints.shape}")
    if not len(keypoints) == len(scores) == len(areas):
        raise ValueError(f"{len(keypoints)} keypoint sets, {len(scores)} scores and "
                         f"{len(areas)} areas: they must match")
    if sigmas is not None and len(sigmas) != keypoints.shape[1]:
        raise ValueError(f"{len(sigmas)} OKS sigmas for {keypoints.shape[1]} keypoints")
    if sigmas is None and keypoints.shape[1] != len(COCO_SIGMAS):
        raise ValueError(f"{keypoints.shape[1]} keypoints: pass sigmas (COCO's are for 17)")
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best = order[0]
        keep.append(int(best))
        overlap = oks_iou(keypoints[best], keypoints[order[1:]], areas[best], areas[order[1:]],
                          sigmas, in_vis_thre)
        order = order[np.nonzero(overlap <= thresh)[0] + 1]
    return keep


def rescore(keypoints, box_score, in_vis_thre):
    """Box score x mean of the joint scores above ``in_vis_thre`` (0 when none is)."""
    joint_scores = np.asarray(keypoints, dtype=np.float64)[:, 2]
    valid = joint_scores > in_vis_thre
    keypoint_score = joint_scores[valid].sum() / valid.sum() if valid.any() else 0.0
    return float(keypoint_score * box_score)


def _load_coco(annotation_file):
    """(pycocotools COCO, original image ids or None) of a file or an already loaded COCO.

    A file is normalised as the reader normalises it
    (:func:`mrpose_tf.data.coco.normalise_ground_truth`: ``area`` and ``num_keypoints``
    filled, string image ids mapped to the integers the records carry).
    """
    from pycocotools.coco import COCO

    from mrpose_tf.data.coco import normalise_ground_truth
    from mrpose_tf.files import load_json

    if not isinstance(annotation_file, str):
        return annotation_file, None  # already a pycocotools COCO object
    data, original_ids = normalise_ground_truth(load_json(annotation_file), annotation_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, original_ids


def _keypoint_category_id(coco):
    """The first category with keypoints: the category of predictions that name none."""
    cats = [c for c in coco.loadCats(coco.getCatIds()) if c.get("keypoints")]
    return cats[0]["id"] if cats else 1


def _check_prediction(i, p, num_joints):
    for field in ("image_id", "keypoints", "box_score", "area"):
        if field not in p:
            raise ValueError(f"person prediction {i} has no {field!r} field "
                             f"(needs image_id, keypoints, box_score, area)")
    if not isinstance(p["image_id"], (int, np.integer)) or isinstance(p["image_id"], bool):
        raise ValueError(f"person prediction {i}: image_id {p['image_id']!r} is neither an "
                         f"integer nor an image id of the annotation file")
    kpts = np.asarray(p["keypoints"], dtype=np.float64)
    if kpts.shape != (num_joints, 3):
        raise ValueError(f"person prediction {i} (image {p['image_id']}): keypoints must be "
                         f"({num_joints}, 3), got shape {kpts.shape}")
    return kpts


def coco_keypoint_results(person_predictions, in_vis_thre=0.2, oks_thre=0.9, sigmas=None,
                          category_id=1):
    """Rescore, OKS-NMS per image and format as COCO keypoint results.

    Args:
      person_predictions: list of dicts with image_id, keypoints (K, 3: x, y, joint score),
        box_score, area and optionally category_id (the person's category: a keypoint set
        may span several, as AP-10K's species).
      in_vis_thre: joint score above which a joint counts in the rescoring.
      oks_thre: OKS-NMS threshold.
      sigmas: OKS sigmas (COCO's when None).
      category_id: category of the predictions without one.

    Returns:
      list of {image_id, category_id, keypoints (flat x, y, score), score}, (image, category)
      groups in order of first appearance, people best first within a group (the OKS-NMS
      runs per image and category, as pycocotools matches them).
    """
    if not person_predictions:
        raise ValueError("no person predictions to evaluate (the results list is empty)")
    num_joints = len(np.asarray(person_predictions[0]["keypoints"]))
    groups = collections.OrderedDict()
    for i, p in enumerate(person_predictions):
        kpts = _check_prediction(i, p, num_joints)
        person = {"keypoints": kpts, "area": float(p["area"]),
                  "score": rescore(kpts, float(p["box_score"]), in_vis_thre)}
        key = (int(p["image_id"]), int(p.get("category_id", category_id)))
        groups.setdefault(key, []).append(person)
    results = []
    for (image_id, category), people in groups.items():
        keep = oks_nms(np.stack([q["keypoints"] for q in people]),
                       [q["score"] for q in people], [q["area"] for q in people],
                       oks_thre, sigmas)
        for q in (people[k] for k in keep):
            results.append({"image_id": image_id, "category_id": category,
                            "keypoints": [float(v) for v in q["keypoints"].reshape(-1)],
                            "score": q["score"]})
    return results


def evaluate_coco(person_predictions, annotation_file, in_vis_thre=0.2, oks_thre=0.9,
                  sigmas=None, results_file=None, verbose=False):
    """COCO keypoint AP/AR of person predictions, as the SimpleBaseline evaluation.

    Args:
      person_predictions: list of dicts with image_id, keypoints (K, 3: x, y, joint score),
        box_score, area (e.g. scale_x * scale_y * 200^2) and optionally category_id (default:
        the file's first keypoint category). Image ids are the records' integers; for a file
        whose ids are not integers, its own ids ('frame_0001') are accepted too.
      annotation_file: COCO keypoints annotation json (or a loaded pycocotools ``COCO``),
        read as the reader reads it (:func:`mrpose_tf.data.coco.normalise_ground_truth`).
      in_vis_thre: joint-score threshold of the rescoring (0.2).
      oks_thre: OKS-NMS threshold (0.9).
      sigmas: per-keypoint OKS sigmas, for the NMS and for COCOeval; COCO's when None.
      results_file: where to write the results JSON (optional), with the file's own image
        ids.
      verbose: print pycocotools' summary table.

    Returns:
      OrderedDict of the 10 COCOeval stats: 'AP', 'AP .5', 'AP .75', 'AP (M)', 'AP (L)',
      'AR', 'AR .5', 'AR .75', 'AR (M)', 'AR (L)'.

    Raises:
      ValueError: no predictions, a malformed prediction, or an image id that is not in the
      ground truth.
    """
    from pycocotools.cocoeval import COCOeval

    coco, original_ids = _load_coco(annotation_file)
    if original_ids:
        to_integer = {original: n for n, original in original_ids.items()}
        person_predictions = [dict(p, image_id=to_integer[p["image_id"]])
                              if isinstance(p.get("image_id"), str) and p["image_id"] in to_integer
                              else p for p in person_predictions]
    results = coco_keypoint_results(person_predictions, in_vis_thre, oks_thre, sigmas,
                                    _keypoint_category_id(coco))
    known = set(coco.getImgIds())
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise ValueError(f"predictions for image ids {unknown[:10]} that are not in "
                         f"{annotation_file if isinstance(annotation_file, str) else 'the GT'}")
    if results_file:
        written = [dict(r, image_id=original_ids[r["image_id"]]) for r in results] \
            if original_ids else results
        with open(results_file, "w", encoding="utf-8") as f:
            json.dump(written, f)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        detections = coco.loadRes(results)
        evaluator = COCOeval(coco, detections, "keypoints")
        evaluator.params.useSegm = None
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if verbose:
        print(log.getvalue(), end="")
    return collections.OrderedDict(zip(STATS_NAMES, (float(s) for s in evaluator.stats)))
