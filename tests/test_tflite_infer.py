"""export/tflite_infer.py: its numpy math equals mrpose_tf's, and it runs without TensorFlow."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mrpose_tf.geometry import box_to_center_scale, get_affine_transform
from mrpose_tf.codec import decode_heatmaps
from tests.conftest import REPO_ROOT, load_kit
from tests.export_fixtures import (BLOCKED_RUNNER, coco_sample_people, custom_keypoints,
                                   exported_small_model)

# The exported model is built once per process: keep these tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("export")

SCRIPT = os.path.join(REPO_ROOT, "export", "tflite_infer.py")


def test_numpy_crop_math_equals_mrpose_tf_geometry():
    kit = load_kit()
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(0, 500, (20, 2)), rng.uniform(5, 300, (20, 2))], 1)
    for size in [(256, 192), (64, 48), (256, 256)]:
        centers, scales = kit.box_to_center_scale(boxes, size[1] / size[0])
        ref_centers, ref_scales = box_to_center_scale(boxes, size[1] / size[0])
        np.testing.assert_allclose(centers, ref_centers, rtol=1e-4)
        np.testing.assert_allclose(scales, ref_scales, rtol=1e-4)
        for c, s in zip(ref_centers, ref_scales):
            for inv in (False, True):
                np.testing.assert_allclose(kit.crop_matrix(c, s, size, inv),
                                           get_affine_transform(c, s, 0.0, size, inv),
                                           rtol=1e-4, atol=1e-4)


def test_numpy_decode_equals_decode_heatmaps():
    kit = load_kit()
    rng = np.random.default_rng(1)
    heatmaps = rng.normal(size=(6, 16, 12, 5)).astype(np.float32)
    heatmaps[0, ..., 0] = -1.0                   # max <= 0: coordinates 0
    heatmaps[1, 0, 5, 1] = 50.0                  # peak on the border: no quarter step
    heatmaps[2, 7, 6, 2], heatmaps[2, 7, 7, 2] = 50.0, 10.0   # step toward the right
    centers = rng.uniform(50, 400, (6, 2))
    scales = rng.uniform(0.5, 2.0, (6, 2))
    coords, scores = kit.decode(heatmaps, centers, scales)
    ref_coords, ref_scores = decode_heatmaps(heatmaps, centers, scales)
    np.testing.assert_allclose(coords, ref_coords, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)


def test_tflite_infer_runs_without_tensorflow_and_matches_in_process(tmp_path, coco_sample_dir):
    from mrpose_tf.export.tflite import litert_interpreter, run_tflite
    from mrpose_tf.keypoints import COCO
    from mrpose_tf.predictor import Predictor

    _, config, paths = exported_small_model()
    image, image_path, boxes = coco_sample_people()[3]
    out_json = tmp_path / "result.json"
    command = [sys.executable, "-c", BLOCKED_RUNNER, SCRIPT, "--model", paths["tflite_fp32"],
               "--image", image_path, "--json", str(out_json), "--output",
               str(tmp_path / "drawn.jpg")]
    command += [arg for box in boxes for arg in ("--boxes", ",".join(map(str, box)))]
    subprocess.run(command, check=True, cwd=str(tmp_path))
    with open(out_json) as f:
        result = json.load(f)
    interpreter = litert_interpreter(paths["tflite_fp32"])

    def predictor(keypoints):
        return Predictor(lambda crops: run_tflite(interpreter, crops),
                         tuple(config.model.input_size), keypoints, flip_test=True,
                         input_preprocessing=config.model.input_preprocessing)

    # The exported set's flip pairs (keypoints.json beside the model), not COCO's.
    expected, expected_scores = predictor(custom_keypoints())(image, boxes)
    assert np.asarray(result["keypoints"]).shape == (len(boxes), 17, 2)
    np.testing.assert_allclose(result["keypoints"], expected, atol=1e-3)
    np.testing.assert_allclose(result["scores"], expected_scores, rtol=1e-3)
    _, coco_scores = predictor(COCO)(image, boxes)
    assert np.abs(np.asarray(result["scores"]) - coco_scores).max() > 0.1 * coco_scores.max()
    assert (tmp_path / "drawn.jpg").stat().st_size > 0
    kit = load_kit().TFLitePose(paths["tflite_fp32"])
    assert kit.flip_pairs == [list(p) for p in custom_keypoints().flip_pairs]
    assert kit.skeleton == [list(p) for p in custom_keypoints().skeleton]


def test_blocked_runner_really_blocks_tensorflow(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import tensorflow\n")
    run = subprocess.run([sys.executable, "-c", BLOCKED_RUNNER, str(probe)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "blocked in this test: tensorflow" in run.stderr


def test_tflite_infer_rejects_bad_boxes():
    kit = load_kit()
    with pytest.raises(ValueError, match="width, height > 0"):
        kit.TFLitePose.__call__(type("Stub", (), {})(), np.zeros((8, 8, 3), np.uint8),
                                [[0, 0, 0, 5]])


def test_tflite_infer_needs_a_keypoint_set_for_the_flip_test(tmp_path):
    _, _, paths = exported_small_model()
    model = tmp_path / "model.tflite"  # alone in its folder, as an older export copied by hand
    model.write_bytes(open(paths["tflite_fp32"], "rb").read())
    kit = load_kit()
    with pytest.raises(ValueError, match="keypoints.json"):
        kit.TFLitePose(str(model))
    assert kit.TFLitePose(str(model), info={"flip_test": False}).flip_pairs is None
    older = kit.TFLitePose(str(model), info={"flip_pairs": [[1, 2]]})  # export_info of old
    assert older.flip_pairs == [[1, 2]] and older.skeleton == []
