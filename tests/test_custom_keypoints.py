"""A COCO-format set of 17 keypoints that are not COCO's order: every stage uses its own set.

The COCO sample with its keypoints listed in reverse order: the same people, but the flip
pairs and the skeleton have other indices than COCO's, so a stage that fell back to COCO's
set by the joint count would swap the wrong channels. (The export and the deployment kit
with such a set: tests/test_export.py and tests/test_tflite_infer.py.)
"""
import json
import os

import numpy as np
import pytest

from mrpose_tf.config import base_config
from mrpose_tf.keypoints import COCO, load_keypoint_set
from tests.conftest import shared_data_path

# Its module fixtures are built once: keep these tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("custom_keypoints")

ORDER = tuple(range(16, -1, -1))  # new index i holds COCO keypoint ORDER[i]


def _reversed_coco_sample(directory):
    source = shared_data_path("coco_sample")
    with open(os.path.join(source, "test_coco.json")) as f:
        data = json.load(f)
    position = {old: new for new, old in enumerate(ORDER)}
    for category in data["categories"]:
        category["name"] = "reversed_person"
        category["keypoints"] = [category["keypoints"][old] for old in ORDER]
        category["skeleton"] = [[position[a - 1] + 1, position[b - 1] + 1]
                                for a, b in category["skeleton"]]
    for annotation in data["annotations"]:
        triplets = np.asarray(annotation["keypoints"]).reshape(17, 3)
        annotation["keypoints"] = triplets[list(ORDER)].reshape(-1).tolist()
    path = os.path.join(directory, "reversed.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path, source


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Two training steps on the reversed set; the run directory and its data."""
    from mrpose_tf.training import Trainer, make_strategy
    from mrpose_tf.training.inputs import training_data_from_config

    root = tmp_path_factory.mktemp("reversed")
    annotations, images = _reversed_coco_sample(str(root))
    config = base_config()
    config.dataset.name = "reversed_person"
    config.dataset.root = str(root)
    config.dataset.train_annotations = config.dataset.val_annotations = annotations
    config.dataset.train_images = config.dataset.val_images = images
    config.model.input_size, config.model.heatmap_size = (64, 64), (16, 16)
    config.model.backbone_weights = None
    config.test.use_gt_boxes, config.test.batch_size = True, 8
    config.train.update(batch_size=4, max_steps=2, log_every_steps=1)
    data = training_data_from_config(config)
    workdir = str(root / "run")
    trainer = Trainer(config, workdir, make_strategy("one_device"), data.steps_per_epoch,
                      log=lambda line: None, keypoints=data.keypoints)
    assert trainer.fit(data.train_fn)["step"] == 2
    return workdir, config, data


def test_the_run_keeps_the_sets_own_pairs_and_skeleton(trained_run):
    workdir, _, data = trained_run
    spec = load_keypoint_set(workdir)
    assert spec == data.keypoints and spec.name == "reversed_person"
    expected_pairs = {tuple(sorted((16 - a, 16 - b))) for a, b in COCO.flip_pairs}
    assert set(spec.flip_pairs) == expected_pairs != set(COCO.flip_pairs)
    assert {tuple(sorted(p)) for p in spec.skeleton} == {
        tuple(sorted((16 - a, 16 - b))) for a, b in COCO.skeleton}


def test_predictor_and_evaluation_take_the_runs_set(trained_run, monkeypatch):
    from mrpose_tf.checkpoints import run_keypoint_set
    from mrpose_tf.data.pipeline import read_split
    from mrpose_tf.evaluation import runner
    from mrpose_tf.predictor import Predictor

    workdir, config, data = trained_run
    spec = data.keypoints
    predictor = Predictor.from_checkpoint(workdir)
    assert predictor.keypoints == spec and predictor.flip_pairs == spec.flip_pairs
    # The trained run's checkpoint comes back as plain Keras layers (no trainer forms).
    assert all(type(layer).__module__.startswith("keras.") for layer in predictor.model.layers)
    # Evaluation: the flip test of every batch swaps the run's pairs.
    seen = []
    original = runner.predict_heatmaps
    monkeypatch.setattr(runner, "predict_heatmaps",
                        lambda model, images, pairs, *args: seen.append(pairs)
                        or original(model, images, pairs, *args))
    records, _ = read_split(config, "val")
    metrics = runner.evaluate_model(predictor.model, config, records,
                                    run_keypoint_set(workdir, config))
    assert seen and all(pairs == spec.flip_pairs for pairs in seen)
    assert 0.0 <= metrics["AP"] <= 1.0


def test_a_run_without_keypoints_json_falls_back_to_its_config_not_to_coco(trained_run,
                                                                          tmp_path, caplog):
    import shutil

    from mrpose_tf.checkpoints import read_run_config, run_keypoint_set

    workdir, _, data = trained_run
    older = str(tmp_path / "older_run")
    shutil.copytree(workdir, older)
    os.remove(os.path.join(older, "keypoints.json"))
    config = read_run_config(older)
    with caplog.at_level("WARNING"):
        assert run_keypoint_set(older, config) == data.keypoints  # from the annotation file
    assert "no keypoints.json" in caplog.text
    with config.unlocked():
        config.dataset.root = str(tmp_path / "moved")
        config.dataset.val_annotations = "gone.json"
    with pytest.raises(ValueError, match="keypoint set of dataset 'reversed_person' is unknown"):
        run_keypoint_set(older, config)
