"""Other keypoint datasets end to end: two training steps, evaluation, export, deployment kit.

Each of AP-10K (17 animal keypoints, two species), CrowdPose (14), JHMDB (15, no area or
num_keypoints), AI Challenger (14) and the DeepPoseKit zebra (9, 'forelegL1'/'forelegR1'
names) runs with its own keypoint names, flip pairs and OKS sigmas, written down by hand
below from the files' keypoint lists.

What these runs check is each set's way through the trainer, the run directory, the
evaluation, the export and the kit. The network is SimpleBaseline's head over a two-layer
stand-in backbone: ResNet-50's ~170 layers, traced for training and converted to TFLite
once per set, would cost about a minute of CPU per set (its path with a custom keypoint set:
tests/test_custom_keypoints.py). MRPOSE_TEST_RESNET=1 runs the five on ResNet-50.
"""
import json
import logging
import os

import numpy as np
import pytest

from mrpose_tf.config import base_config
from tests.conftest import load_kit, shared_data_path

SETS = {
    # name: (annotation file, people read for training, for evaluation, flip pairs by name)
    "ap10k": ("test_ap10k.json", 2, 2, [
        ("left_eye", "right_eye"), ("left_shoulder", "right_shoulder"),
        ("left_elbow", "right_elbow"), ("left_front_paw", "right_front_paw"),
        ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_back_paw", "right_back_paw")]),
    # One of the 5 people has no labelled keypoint: evaluated, not trained on.
    "crowdpose": ("test_crowdpose.json", 4, 5, [
        ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")]),
    "jhmdb": ("test_jhmdb_sub1.json", 3, 3, [
        ("right_shoulder", "left_shoulder"), ("right_hip", "left_hip"),
        ("right_elbow", "left_elbow"), ("right_knee", "left_knee"),
        ("right_wrist", "left_wrist"), ("right_ankle", "left_ankle")]),
    "aic": ("test_aic.json", 9, 9, [
        ("Right Shoulder", "Left Shoulder"), ("Right Elbow", "Left Elbow"),
        ("Right Wrist", "Left Wrist"), ("Right Hip", "Left Hip"), ("Right Knee", "Left Knee"),
        ("Right Ankle", "Left Ankle")]),
    "zebra": ("test_zebra.json", 2, 2, [("forelegL1", "forelegR1"),
                                        ("hindlegL1", "hindlegR1")]),
}
# CrowdPose's own OKS sigmas (its evaluation code): COCO's for the limbs, .079 for head, neck.
CROWDPOSE_SIGMAS = (.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089,
                    .079, .079)
COCO_SIGMA = {"left_eye": .025, "right_eye": .025, "nose": .026, "left_shoulder": .079,
              "right_shoulder": .079, "left_elbow": .072, "right_elbow": .072,
              "left_wrist": .062, "right_wrist": .062, "left_hip": .107, "right_hip": .107,
              "left_knee": .087, "right_knee": .087, "left_ankle": .089, "right_ankle": .089}


def _config(name, root, num_joints):
    config = base_config()
    config.dataset.name = name
    config.dataset.root = root
    config.dataset.train_annotations = config.dataset.val_annotations = SETS[name][0]
    config.dataset.train_images = config.dataset.val_images = "."
    config.model.num_joints = num_joints
    config.model.input_size, config.model.heatmap_size = (64, 64), (16, 16)
    config.model.backbone_weights = None
    config.test.use_gt_boxes, config.test.batch_size = True, 4
    config.train.update(batch_size=1, max_steps=2, log_every_steps=1)
    if name == "crowdpose":
        config.dataset.oks_sigmas = CROWDPOSE_SIGMAS
    return config


def _expected_sigmas(name, names):
    if name == "crowdpose":
        return CROWDPOSE_SIGMAS
    plain = ["_".join(n.lower().split()) for n in names]  # 'Right Shoulder' -> right_shoulder
    return tuple(COCO_SIGMA.get(n, 0.05) for n in plain)


@pytest.mark.parametrize("name", sorted(SETS))
def test_train_evaluate_export_and_kit_with_the_sets_own_keypoints(name, tmp_path, caplog,
                                                                   small_network):
    from mrpose_tf.evaluation.runner import evaluate_model
    from mrpose_tf.export import export_model
    from mrpose_tf.export.tflite import litert_interpreter, run_tflite
    from mrpose_tf.keypoints import load_keypoint_set
    from mrpose_tf.predictor import Predictor
    from mrpose_tf.training import Trainer, make_strategy
    from mrpose_tf.training.inputs import training_data_from_config

    root = shared_data_path("keypoint_sets", name)
    file_name, num_train, num_val, pairs_by_name = SETS[name]
    with open(os.path.join(root, file_name)) as f:
        data = json.load(f)
    names = tuple(data["categories"][0]["keypoints"])
    config = _config(name, root, len(names))
    with caplog.at_level(logging.WARNING, logger="mrpose_tf"):
        training = training_data_from_config(config)
    spec = training.keypoints
    assert spec.names == names
    assert {(names[a], names[b]) for a, b in spec.flip_pairs} == set(pairs_by_name)
    np.testing.assert_allclose(spec.sigmas, _expected_sigmas(name, names), rtol=0, atol=1e-12)
    if name != "crowdpose":  # defaulted sigmas are named in a warning
        assert "no OKS sigmas in the file" in caplog.text
    assert len(training.val_records) == num_val
    assert training.steps_per_epoch == num_train  # batches of 1

    workdir = str(tmp_path / "run")
    trainer = Trainer(config, workdir, make_strategy("one_device"), training.steps_per_epoch,
                      log=lambda line: None, keypoints=spec)
    assert trainer.fit(training.train_fn)["step"] == 2
    assert load_keypoint_set(workdir) == spec

    # Evaluation of the run's checkpoint, with the run's keypoint set (flip test on).
    predictor = Predictor.from_checkpoint(workdir)
    assert predictor.keypoints == spec
    metrics = evaluate_model(predictor.model, config, training.val_records, spec,
                             output_dir=str(tmp_path / "eval"))
    assert 0.0 <= metrics["AP"] <= 1.0
    with open(tmp_path / "eval" / "metrics.json") as f:
        summary = json.load(f)
    assert (summary["num_people"], summary["skipped_images"]) == (num_val, 0)
    with open(tmp_path / "eval" / "keypoints_results.json") as f:
        results = json.load(f)
    assert {r["category_id"] for r in results} == {a["category_id"] for a in data["annotations"]}
    assert all(len(r["keypoints"]) == 3 * len(names) for r in results)

    # Export (TFLite fp32) and the deployment kit on one of the set's images, with a box
    # that starts left of the image (a negative x on the command line).
    paths = export_model(predictor.model, config, spec, str(tmp_path / "export"),
                         ("tflite_fp32",))
    assert load_keypoint_set(str(tmp_path / "export")) == spec
    image = data["images"][0]
    boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == image["id"]][:1]
    boxes.append([-20.0, 10.0, image["width"] / 2, image["height"] / 2])
    out_json = tmp_path / "kit.json"
    argv = ["--model", paths["tflite_fp32"], "--image", os.path.join(root, image["file_name"]),
            "--json", str(out_json)]
    for box in boxes:
        argv += ["--boxes", ",".join(f"{v:g}" for v in box)]
    kit = load_kit()
    kit.main(argv)
    with open(out_json) as f:
        answer = json.load(f)
    interpreter = litert_interpreter(paths["tflite_fp32"])
    reference = Predictor(lambda crops: run_tflite(interpreter, crops), (64, 64), spec,
                          input_preprocessing=config.model.input_preprocessing)
    keypoints, scores = reference(kit.read_image_rgb(os.path.join(root, image["file_name"])),
                                  boxes)
    assert np.asarray(answer["keypoints"]).shape == (2, len(names), 2)
    np.testing.assert_allclose(answer["keypoints"], keypoints, atol=1e-3)
    np.testing.assert_allclose(answer["scores"], scores, rtol=1e-3, atol=1e-6)
    deployed = kit.TFLitePose(paths["tflite_fp32"])
    assert deployed.names == list(names)
    assert deployed.flip_pairs == [list(p) for p in spec.flip_pairs]
