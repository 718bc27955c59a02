"""OKS-NMS and COCO evaluation against hand-worked cases and pycocotools used directly."""
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import mrpose_tf
from mrpose_tf.evaluation.coco import STATS_NAMES, coco_keypoint_results, oks_iou
from tests.conftest import shared_data_path

SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                   .89, .89]) / 10.0


@pytest.fixture(scope="module")
def annotation_file():
    return shared_data_path("coco_sample", "test_coco.json")


@pytest.fixture(scope="module")
def gt_people(annotation_file):
    with open(annotation_file) as f:
        data = json.load(f)
    return [a for a in data["annotations"] if a["category_id"] == 1 and a["num_keypoints"] > 0]


# --- OKS ------------------------------------------------------------------------------------

def test_oks_iou_hand_worked():
    kept = np.zeros((17, 3))
    kept[:, 0] = np.arange(17) * 10.0
    kept[:, 2] = 0.9
    other = kept.copy()
    other[:, 0] += 1.0                      # every joint 1 px to the right
    # e_j = 1 / (2 sigma_j)^2 / ((100 + 300) / 2) / 2
    expected = np.mean(np.exp(-1.0 / (2 * SIGMAS) ** 2 / 200.0 / 2))
    np.testing.assert_allclose(oks_iou(kept, other[None], 100.0, [300.0]), [expected],
                               rtol=1e-12)
    # Joint-score filter: only the other person's joints with score > 0.5 count.
    other[:5, 2] = 0.1
    other[5:, 0] += 2.0
    expected_filtered = np.mean(np.exp(-9.0 / (2 * SIGMAS[5:]) ** 2 / 200.0 / 2))
    np.testing.assert_allclose(oks_iou(kept, other[None], 100.0, [300.0], in_vis_thre=0.5),
                               [expected_filtered], rtol=1e-12)
    other[:, 2] = 0.0
    np.testing.assert_array_equal(oks_iou(kept, other[None], 100.0, [300.0], in_vis_thre=0.5),
                                  [0.0])


def test_oks_nms_keeps_best_and_drops_duplicates():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 100, (17, 2)), np.ones((17, 1))], axis=1)
    a_dup = a.copy()
    a_dup[:, :2] += 0.5                     # near duplicate: OKS ~ 0.99
    far = a.copy()
    far[:, :2] += 60.0
    mid = a.copy()
    mid[:, :2] += 4.0                       # OKS with a ~ 0.7: kept at 0.9, not at 0.5
    kpts = np.stack([a_dup, far, a, mid])
    scores = [0.8, 0.3, 0.9, 0.5]
    areas = [5000.0] * 4
    assert oks_iou(a, a_dup[None], 5000, [5000])[0] > 0.9
    assert 0.5 < oks_iou(a, mid[None], 5000, [5000])[0] < 0.9
    assert mrpose_tf.oks_nms(kpts, scores, areas, 0.9) == [2, 3, 1]
    assert mrpose_tf.oks_nms(kpts, scores, areas, 0.5) == [2, 1]
    assert mrpose_tf.oks_nms(kpts, scores, areas, 1.0) == [2, 0, 3, 1]
    with pytest.raises(ValueError, match="must match"):
        mrpose_tf.oks_nms(kpts, scores[:2], areas, 0.9)


# --- An independent implementation of the reference pipeline, on pycocotools directly ------

def _reference_oks(g, d, a_g, a_d):
    variances = (SIGMAS * 2) ** 2
    ious = np.zeros(len(d))
    for n in range(len(d)):
        e = ((d[n, 0::3] - g[0::3]) ** 2 + (d[n, 1::3] - g[1::3]) ** 2) / variances / (
            (a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        ious[n] = np.sum(np.exp(-e)) / e.shape[0]
    return ious


def _reference_evaluate(preds, annotation_file, tmp_path, in_vis_thre=0.2, oks_thre=0.9):
    images = {}
    for p in preds:
        box_score = p["box_score"]
        kpt_score, valid = 0.0, 0
        for j in range(len(p["keypoints"])):
            if p["keypoints"][j][2] > in_vis_thre:
                kpt_score += p["keypoints"][j][2]
                valid += 1
        if valid:
            kpt_score /= valid
        images.setdefault(p["image_id"], []).append(
            dict(p, score=kpt_score * box_score, flat=np.asarray(p["keypoints"]).reshape(-1)))
    results = []
    for image_id, people in images.items():
        scores = np.array([q["score"] for q in people])
        flat = np.array([q["flat"] for q in people])
        areas = np.array([q["area"] for q in people])
        order = scores.argsort()[::-1]
        keep = []
        while order.size > 0:
            i = order[0]
            keep.append(i)
            ovr = _reference_oks(flat[i], flat[order[1:]], areas[i], areas[order[1:]])
            order = order[np.where(ovr <= oks_thre)[0] + 1]
        for k in keep:
            results.append({"image_id": image_id, "category_id": 1,
                            "keypoints": list(people[k]["flat"]), "score": people[k]["score"]})
    res_file = os.path.join(tmp_path, "reference_results.json")
    with open(res_file, "w") as f:
        json.dump(results, f)
    gt = COCO(annotation_file)
    evaluator = COCOeval(gt, gt.loadRes(res_file), "keypoints")
    evaluator.params.useSegm = None
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def _noisy_predictions(gt_people, seed):
    """GT people with noisy joints, extra duplicates and far-off false positives."""
    rng = np.random.default_rng(seed)
    preds = []
    for ann in gt_people:
        gt = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
        for copy in range(rng.integers(1, 4)):
            xy = gt[:, :2] + rng.normal(0, 2 + 6 * copy, (17, 2))
            scores = rng.uniform(0, 1, 17)
            preds.append({"image_id": ann["image_id"],
                          "keypoints": np.concatenate([xy, scores[:, None]], 1),
                          "box_score": float(rng.uniform(0.2, 1.0)),
                          "area": float(ann["area"] * rng.uniform(0.8, 1.2))})
        if rng.uniform() < 0.6:             # a near duplicate, for the OKS-NMS to remove
            dup = dict(preds[-1], box_score=float(rng.uniform(0.2, 1.0)))
            dup["keypoints"] = preds[-1]["keypoints"] + np.append(rng.normal(0, 0.5, (17, 2)),
                                                                  np.zeros((17, 1)), 1)
            preds.append(dup)
        if rng.uniform() < 0.5:
            xy = rng.uniform(0, 400, (17, 2))
            preds.append({"image_id": ann["image_id"],
                          "keypoints": np.concatenate([xy, rng.uniform(0, 0.3, (17, 1))], 1),
                          "box_score": float(rng.uniform(0, 1)), "area": 3000.0})
    order = rng.permutation(len(preds))
    return [preds[i] for i in order]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_coco_equals_reference_pipeline(gt_people, annotation_file, tmp_path, seed):
    preds = _noisy_predictions(gt_people, seed)
    results_file = os.path.join(tmp_path, "results.json")
    stats = mrpose_tf.evaluate_coco(preds, annotation_file, results_file=results_file)
    expected = _reference_evaluate(preds, annotation_file, tmp_path)
    assert list(stats) == list(STATS_NAMES)
    np.testing.assert_allclose(list(stats.values()), expected, atol=1e-9, rtol=0)
    assert 0.0 < stats["AP"] < 1.0
    assert len(coco_keypoint_results(preds)) < len(preds)  # the NMS removed duplicates
    with open(results_file) as f:
        written = json.load(f)
    assert {r["image_id"] for r in written} <= {a["image_id"] for a in gt_people}
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in written)


def test_perfect_predictions_give_ap_one(gt_people, annotation_file):
    preds = []
    for ann in gt_people:
        kpts = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
        kpts[:, 2] = 1.0
        preds.append({"image_id": ann["image_id"], "keypoints": kpts, "box_score": 1.0,
                      "area": ann["area"]})
    stats = mrpose_tf.evaluate_coco(preds, annotation_file)
    assert stats["AP"] == pytest.approx(1.0, abs=1e-12)
    assert stats["AR"] == pytest.approx(1.0, abs=1e-12)


def test_evaluate_coco_bad_inputs_give_clear_errors(gt_people, annotation_file):
    with pytest.raises(ValueError, match="empty"):
        mrpose_tf.evaluate_coco([], annotation_file)
    good = {"image_id": gt_people[0]["image_id"], "keypoints": np.ones((17, 3)),
            "box_score": 1.0, "area": 100.0}
    with pytest.raises(ValueError, match=r"image ids \[123456789\]"):
        mrpose_tf.evaluate_coco([good, dict(good, image_id=123456789)], annotation_file)
    with pytest.raises(ValueError, match=r"person prediction 1 .*keypoints must be \(17, 3\)"):
        mrpose_tf.evaluate_coco([good, dict(good, keypoints=np.ones((16, 3)))], annotation_file)
    with pytest.raises(ValueError, match="no 'area' field"):
        mrpose_tf.evaluate_coco([{k: v for k, v in good.items() if k != "area"}],
                                annotation_file)
