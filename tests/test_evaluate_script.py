"""scripts/evaluate.py and the in-process evaluation runner on the real COCO sample."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrpose_tf.config import paper_config
from mrpose_tf.data.pipeline import read_split
from mrpose_tf.evaluation import evaluate_model
from mrpose_tf.geometry import affine_points, get_affine_transform
from mrpose_tf.checkpoints import load_model_from_checkpoint
from mrpose_tf.models import build_model
from tests.conftest import REPO_ROOT, shared_data_path

# Its module fixtures are built once: keep these tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("evaluate_script")

INPUT_SIZE = (64, 64)
HEATMAP_SIZE = (16, 16)


def _config(root, detections="test_coco_det_AP_H_56.json", use_gt_boxes=False):
    c = paper_config("coco", "simple_baseline", "resnet50", (256, 192))
    c.model.input_size, c.model.heatmap_size = INPUT_SIZE, HEATMAP_SIZE
    c.model.backbone_weights = None
    c.dataset.root = root
    c.dataset.val_annotations, c.dataset.val_images = "test_coco.json", "."
    c.test.detections, c.test.use_gt_boxes = detections, use_gt_boxes
    c.test.batch_size = 16
    return c


@pytest.fixture(scope="module")
def coco_root():
    return os.path.abspath(shared_data_path("coco_sample"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, coco_root):
    """A training-run directory as the trainer writes it: config.json + checkpoints/ckpt-1
    (model, Adam state, step, epoch) of a random tiny model."""
    import keras

    from mrpose_tf.training.checkpointing import RunState

    run = tmp_path_factory.mktemp("run")
    model = build_model("simple_baseline", "resnet50", 17, INPUT_SIZE)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    state = RunState(str(run), tf.distribute.get_strategy(), model, optimizer)
    state.step.assign(1)
    state.save()
    with open(run / "config.json", "w") as f:
        json.dump(_config(coco_root).to_dict(), f)
    return run, model


def test_evaluate_script_writes_results_that_pycocotools_accepts(run_dir, coco_root):
    run, _ = run_dir
    out = run / "eval_out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "evaluate.py"),
         f"--checkpoint={run}", f"--output_dir={out}", "--flip_test", "--strategy=one_device",
         "--error_analysis"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| Arch | AP | AP .5 | AP .75 | AP (M) | AP (L) | AR |" in proc.stdout
    with open(out / "metrics.json") as f:
        summary = json.load(f)
    with open(out / "keypoints_results.json") as f:
        results = json.load(f)
    with open(os.path.join(coco_root, "test_coco_det_AP_H_56.json")) as f:
        detections = json.load(f)
    assert summary["num_records"] == len(detections) == summary["num_people"]
    assert 0 < len(results) <= len(detections)
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)
    # pycocotools accepts the file and reproduces the reported numbers.
    gt = COCO(os.path.join(coco_root, "test_coco.json"))
    evaluator = COCOeval(gt, gt.loadRes(str(out / "keypoints_results.json")), "keypoints")
    evaluator.params.useSegm = None
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    np.testing.assert_allclose(list(summary["metrics"].values()), evaluator.stats, atol=1e-12)
    # --error_analysis: on the 14 ground-truth people (the detections have no keypoints).
    with open(out / "errors.json") as f:
        errors = json.load(f)
    assert len(errors["per_joint"]) == 17 and errors["labelled"] > 100
    assert errors["resolution_ceiling"]["AP .5"] == 1.0
    assert "left/right swaps" in proc.stdout


class _OracleModel:
    """Returns, batch after batch, Gaussian heatmaps at the ground-truth joints of the records
    (in record order, as the evaluation pipeline yields them)."""

    def __init__(self, records, heatmap_size=HEATMAP_SIZE):
        heatmaps = []
        h, w = heatmap_size
        v, u = np.mgrid[0:h, 0:w]
        for r in records:
            to_heatmap = get_affine_transform(r.center, r.scale, 0.0, heatmap_size)
            joints = affine_points(r.joints, to_heatmap)
            maps = np.exp(-((u[..., None] - joints[:, 0]) ** 2 + (v[..., None] - joints[:, 1]) ** 2)
                          / (2 * 1.0 ** 2)) * r.visibility
            heatmaps.append(maps.astype(np.float32))
        self.heatmaps = np.stack(heatmaps)
        self.position = 0

    def __call__(self, crops):
        out = self.heatmaps[self.position:self.position + len(crops)]
        self.position += len(crops)
        return out


def test_evaluate_model_in_process_oracle_scores_high_and_random_scores_low(run_dir, coco_root):
    _, model = run_dir
    config = _config(coco_root, use_gt_boxes=True)
    records, keypoints = read_split(config, "val")
    oracle = _OracleModel(records)
    metrics = evaluate_model(oracle, config, records, keypoints, flip_test=False, log=print)
    assert oracle.position == len(records) == 14
    # Quarter-pixel decoding on a 16x16 heatmap of big people costs a little OKS only.
    assert metrics["AP"] > 0.8 and metrics["AR"] > 0.8
    random_metrics = evaluate_model(model, config, records, keypoints, flip_test=False)
    assert random_metrics["AP"] < 0.05


def _write_detections(path, detections):
    with open(path, "w") as f:
        json.dump(detections, f)
    return str(path)


def test_bad_detection_files_give_clear_errors(run_dir, coco_root, tmp_path):
    _, model = run_dir
    unknown = _write_detections(tmp_path / "unknown.json", [
        {"image_id": 785, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9},
        {"image_id": 999999, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9}])
    with pytest.raises(ValueError, match="999999"):
        evaluate_model(model, _config(coco_root, detections=unknown))
    empty = _write_detections(tmp_path / "empty.json", [])
    with pytest.raises(ValueError, match="no detections"):
        evaluate_model(model, _config(coco_root, detections=empty))


def test_zero_area_boxes_and_undecodable_images_are_skipped_and_counted(run_dir, coco_root,
                                                                        tmp_path):
    _, model = run_dir
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    broken = root / "000000040083.jpg"
    broken.write_bytes(broken.read_bytes()[:2000])           # truncated JPEG
    detections = _write_detections(root / "dets.json", [
        {"image_id": 785, "category_id": 1, "bbox": [280.0, 45.0, 220.0, 345.0], "score": 0.99},
        {"image_id": 785, "category_id": 1, "bbox": [100.0, 100.0, 0.0, 0.0], "score": 0.8},
        {"image_id": 40083, "category_id": 1, "bbox": [50.0, 50.0, 100.0, 200.0], "score": 0.9}])
    out = tmp_path / "out"
    metrics = evaluate_model(model, _config(str(root), detections=detections), output_dir=str(out))
    with open(out / "metrics.json") as f:
        summary = json.load(f)
    assert summary["skipped_boxes"] == 1 and summary["skipped_images"] == 1
    assert summary["num_people"] == 1 and summary["num_records"] == 3
    assert set(metrics) >= {"AP", "AR"}


def test_checkpoint_of_another_architecture_is_a_clear_error(run_dir, coco_root):
    run, model = run_dir
    config = _config(coco_root)
    loaded, _ = load_model_from_checkpoint(str(run), config)
    x = np.random.default_rng(0).normal(size=(1,) + INPUT_SIZE + (3,)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_on_batch(x), model.predict_on_batch(x))
    config.model.arch = "mrheatnet1"
    with pytest.raises(ValueError, match="another architecture"):
        load_model_from_checkpoint(str(run), config)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model_from_checkpoint(str(run / "nope"), config)


def test_evaluate_model_runs_mpii_pckh_in_record_order(tmp_path):
    """The MPII path: records -> crops -> oracle heatmaps -> PCKh against a gt .mat built from
    the same annotations (1-based, official layout); a shuffled oracle scores far lower."""
    from scipy.io import savemat

    root = os.path.abspath(shared_data_path("mpii_sample"))
    config = paper_config("mpii", "simple_baseline", "resnet50", (256, 256))
    config.model.input_size, config.model.heatmap_size = (128, 128), (32, 32)
    config.dataset.root, config.dataset.val_images = root, "."
    config.dataset.val_annotations = "test_mpii.json"
    config.dataset.mpii_gt_file = str(tmp_path / "gt_valid.mat")
    records, keypoints = read_split(config, "val")
    joints = np.stack([r.joints for r in records]) + 1.0           # 1-based, (N, 16, 2)
    head = joints[:, [8, 9]]                                         # upper neck, head top
    corners = np.stack([head.min(axis=1) - 10, head.max(axis=1) + 10])  # (2, N, 2)
    savemat(config.dataset.mpii_gt_file, {
        "dataset_joints": np.array([["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv",
                                     "thor", "neck", "head", "rwri", "relb", "rsho", "lsho",
                                     "lelb", "lwri"]], dtype=object),
        "jnt_missing": 1.0 - np.stack([r.visibility for r in records]).T,
        "pos_gt_src": np.transpose(joints, [1, 2, 0]),
        "headboxes_src": np.transpose(corners, [0, 2, 1])})
    oracle = _OracleModel(records, (32, 32))
    shuffled = _OracleModel(records[::-1], (32, 32))
    metrics = evaluate_model(oracle, config, records, keypoints, flip_test=False,
                             output_dir=str(tmp_path / "out"))
    assert list(metrics)[-2:] == ["Mean", "Mean@0.1"]
    assert metrics["Mean"] > 90.0
    assert evaluate_model(shuffled, config, records, keypoints, flip_test=False)["Mean"] < 50.0
    assert os.path.isfile(tmp_path / "out" / "mpii_predictions.npy")


def test_predictor_from_checkpoint_matches_the_model(run_dir, coco_root):
    import cv2

    from mrpose_tf import box_to_center_scale, decode_heatmaps, keypoints, preprocess
    from mrpose_tf.predictor import Predictor, crop_person, predict_heatmaps

    run, model = run_dir
    predictor = Predictor.from_checkpoint(str(run))
    assert predictor.input_size == INPUT_SIZE and predictor.flip_test
    image = cv2.cvtColor(cv2.imread(os.path.join(coco_root, "000000000785.jpg")),
                         cv2.COLOR_BGR2RGB)
    boxes = [[280.79, 44.73, 218.7, 346.68], [10.0, 20.0, 100.0, 50.0]]
    kpts, scores = predictor(image, boxes)
    assert kpts.shape == (2, 17, 2) and scores.shape == (2, 17)
    # Same as running the pieces by hand on the original model.
    center, scale = box_to_center_scale(np.asarray(boxes), INPUT_SIZE[1] / INPUT_SIZE[0])
    crops = np.stack([crop_person(image, c, s, INPUT_SIZE) for c, s in zip(center, scale)])
    heatmaps = predict_heatmaps(model, preprocess(crops), keypoints.COCO.flip_pairs)
    expected, expected_scores = decode_heatmaps(heatmaps, center, scale)
    np.testing.assert_allclose(kpts, expected, atol=1e-6)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)



def test_demo_draws_skeletons_and_heatmap_grids(run_dir, coco_root, tmp_path):
    import cv2

    run, _ = run_dir
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(os.path.join(coco_root, "000000000785.jpg"), images)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "demo.py"), f"--checkpoint={run}",
         f"--images_dir={images}", f"--output_dir={out}", "--heatmaps", "--kpt_thre=-1",
         f"--boxes={os.path.join(coco_root, 'test_coco_det_AP_H_56.json')}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 unreadable images" in proc.stdout
    # Image 785 has one detection above the 0.5 box threshold: one person, one grid.
    assert sorted(os.listdir(out)) == ["000000000785_person0_heatmaps.png",
                                       "000000000785_pose.png"]
    original = cv2.imread(os.path.join(coco_root, "000000000785.jpg"))
    drawn = cv2.imread(str(out / "000000000785_pose.png"))
    assert drawn.shape == original.shape
    assert np.mean(np.any(drawn != original, axis=-1)) > 0.001   # the skeleton is drawn
    grid = cv2.imread(str(out / "000000000785_person0_heatmaps.png"))
    assert grid.shape[0] > INPUT_SIZE[0] * 3 and grid.shape[1] > INPUT_SIZE[1] * 6


def test_keypoint_errors_hand_worked():
    from mrpose_tf.evaluation.errors import keypoint_errors

    joints = np.array([[[50, 50], [40, 60], [60, 60]], [[10, 10], [20, 20], [30, 20]]], float)
    visibility = np.array([[1, 1, 1], [1, 1, 0]])
    predicted = np.array([[[52, 50], [60, 61], [60, 66]],     # 0.02, swap (0.2 own, 0.01 mirror), 0.06
                          [[10, 14], [30, 20], [0, 0]]], float)  # 0.08, 0.2 (mirror unlabelled)
    errors = keypoint_errors(predicted, joints, visibility, [100, 50], [(1, 2)], ["a", "l", "r"])
    assert errors["labelled"] == 5
    assert errors["PCK@0.1"] == pytest.approx(3 / 5)
    assert errors["PCK@0.05"] == pytest.approx(1 / 5) == errors["PCK@0.025"]
    assert errors["swap_rate"] == pytest.approx(1 / 5)
    assert errors["per_joint"]["l"] == {"labelled": 2, "swap_rate": 0.5,
                                        "median_error": pytest.approx((np.hypot(20, 1) / 100 + 0.2) / 2)}
    assert errors["per_joint"]["r"]["median_error"] == pytest.approx(0.06)
    with pytest.raises(ValueError, match="shapes disagree"):
        keypoint_errors(predicted[:1], joints, visibility, [100, 50], [(1, 2)])


def test_analyze_errors_of_an_oracle_and_of_a_left_right_swapped_oracle(coco_root):
    from mrpose_tf.evaluation.errors import analyze_errors
    from mrpose_tf.geometry import flip_permutation

    config = _config(coco_root, use_gt_boxes=True)
    records, keypoints = read_split(config, "val")
    perfect = analyze_errors(_OracleModel(records), config, records, keypoints, flip_test=False)
    assert perfect["PCK@0.1"] == 1.0 and perfect["swap_rate"] == 0.0
    mirror = flip_permutation(17, keypoints.flip_pairs)
    oracle = _OracleModel(records)
    swapped = analyze_errors(lambda crops: oracle(crops)[..., mirror], config, records,
                             keypoints, flip_test=False)
    # Independently: labelled joints with a labelled partner more than 0.1 box sides away
    # (decoding moves a prediction by ~0.01 box sides: borderline cases may go either way).
    joints = np.stack([r.joints for r in records])
    labelled = np.stack([r.visibility for r in records]) > 0
    sides = np.array([max(r.bbox[2], r.bbox[3]) for r in records])
    apart = np.linalg.norm(joints - joints[:, mirror], axis=-1) / sides[:, None]
    has_partner = labelled & labelled[:, mirror] & (mirror != np.arange(17))
    expected = (has_partner & (apart > 0.1)).sum() / labelled.sum()
    borderline = (has_partner & (np.abs(apart - 0.1) < 0.02)).sum() / labelled.sum()
    assert expected > 0.2
    assert abs(swapped["swap_rate"] - expected) <= borderline + 1e-9
