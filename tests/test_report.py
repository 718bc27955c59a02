"""A run's report: PCK, the mean-pose baseline, rendering, the learning curve, the demo."""
import json
import os

import ml_collections
import numpy as np
import pytest

from mrpose_tf.data.synthetic import prepare_from_config
from mrpose_tf.evaluation.pck import mean_pose, pck, place_mean_pose
from mrpose_tf.training import read_metrics
from mrpose_tf.visualization import draw_people


def test_pck_counts_labelled_keypoints_within_a_tenth_of_the_longer_box_side():
    # Person 0: box 10 x 20 -> threshold 2. Errors 1 (correct), 3 (wrong); joint 2 unlabelled.
    # Person 1: box 40 x 30 -> threshold 4. Errors 5 (wrong), exactly 4 (wrong: PCK counts
    # errors strictly below the threshold), far (wrong).
    joints = np.array([[[5, 5], [5, 10], [0, 0]],
                       [[20, 20], [30, 30], [25, 25]]], float)
    predicted = np.array([[[6, 5], [5, 13], [99, 99]],
                          [[23, 24], [30, 34], [0, 0]]], float)
    visibility = np.array([[1, 2, 0], [2, 2, 1]])
    boxes = np.array([[0, 0, 10, 20], [10, 10, 40, 30]], float)
    assert pck(predicted, joints, visibility, boxes) == pytest.approx(1 / 5)
    # A score column is ignored; a looser threshold (0.2: 4 and 8 px) takes all but the far one.
    scored = np.concatenate([predicted, np.ones((2, 3, 1))], axis=-1)
    assert pck(scored, joints, visibility, boxes, threshold=0.2) == pytest.approx(4 / 5)


def test_mean_pose_averages_box_normalised_labelled_keypoints():
    joints = np.array([[[5, 5], [10, 20], [3, 3]],
                       [[20, 15], [0, 0], [0, 0]]], float)
    visibility = np.array([[1, 2, 0], [2, 0, 0]])
    boxes = np.array([[0, 0, 10, 20], [10, 10, 20, 10]], float)
    # joint 0: (0.5, 0.25) and (0.5, 0.5); joint 1: (1, 1) only; joint 2 never labelled.
    expected = np.array([[0.5, 0.375], [1.0, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(mean_pose(joints, visibility, boxes), expected)
    placed = place_mean_pose(expected, [[100, 200, 50, 40]])
    np.testing.assert_allclose(placed, [[[125, 215], [150, 240], [125, 220]]])


def test_mean_pose_baseline_is_perfect_when_every_person_has_the_same_pose():
    rng = np.random.default_rng(0)
    pose = rng.uniform(0, 1, (17, 2))
    boxes = np.column_stack([rng.uniform(0, 100, (6, 2)), rng.uniform(20, 80, (6, 2))])
    joints = place_mean_pose(pose, boxes)
    visibility = np.ones((6, 17))
    assert pck(place_mean_pose(mean_pose(joints, visibility, boxes), boxes), joints, visibility,
               boxes) == 1.0


def test_pck_rejects_empty_boxes_naming_the_person():
    with pytest.raises(ValueError, match="person 1"):
        pck(np.zeros((2, 1, 2)), np.zeros((2, 1, 2)), np.ones((2, 1)),
            [[0, 0, 5, 5], [0, 0, 0, 5]])


def _synthetic_config(root):
    config = ml_collections.ConfigDict()
    config.dataset = ml_collections.ConfigDict(dict(
        name="synthetic", root=str(root), synthetic=ml_collections.ConfigDict(dict(
            num_train=2, num_val=2, difficulty="easy", seed=3, image_size=(96, 128)))))
    return config


def test_prepare_from_config_renders_the_configured_synthetic_set_once(tmp_path):
    config = _synthetic_config(tmp_path / "synthetic")
    paths = prepare_from_config(config)
    assert sorted(os.listdir(paths["val_images"])) == ["000001.jpg", "000002.jpg"]
    stamp = os.path.getmtime(paths["train_annotations"])
    assert prepare_from_config(config) == paths
    assert os.path.getmtime(paths["train_annotations"]) == stamp  # not rendered again
    config.dataset.name = "coco"
    assert prepare_from_config(config) is None


def test_draw_people_draws_the_skeletons_on_the_validation_images(tmp_path):
    import cv2

    from mrpose_tf.data.coco import read_coco

    paths = prepare_from_config(_synthetic_config(tmp_path / "synthetic"))
    records, spec = read_coco(paths["val_annotations"], paths["val_images"], train=False,
                              aspect_ratio=0.75)
    points = np.concatenate([np.stack([r.joints for r in records]),
                             np.stack([r.visibility for r in records])[..., None]], -1)
    picture = draw_people(str(tmp_path / "demo.png"), points, records, spec, num_images=2)
    assert picture.shape == (2 + 96 + 2, 2 + 2 * (128 + 2), 3)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "demo.png"))[..., ::-1], picture)
    first = cv2.imread(os.path.join(paths["val_images"], "000001.jpg"))[..., ::-1]
    tile = picture[2:98, 2:130].astype(int)
    labelled = [(int(round(x)), int(round(y))) for r in records if r.image_id == 1
                for (x, y), v in zip(r.joints, r.visibility) if v > 0]
    assert labelled
    changed = [np.abs(tile[y, x] - first[y, x]).sum() > 30 for x, y in labelled]
    assert np.mean(changed) > 0.8  # a keypoint dot covers (nearly) every labelled point


def test_read_metrics_takes_the_later_line_of_a_repeated_step(tmp_path):
    lines = [{"split": "train", "step": 50, "loss": 0.5},
             {"split": "train", "step": 100, "loss": 0.3},
             {"split": "val", "step": 100, "AP": 0.1},
             {"split": "train", "step": 100, "loss": 0.25},   # a resumed run's
             {"split": "val", "step": 200, "AP": 0.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    curve = read_metrics(str(tmp_path))
    assert curve["train"] == [{"step": 50, "loss": 0.5}, {"step": 100, "loss": 0.25}]
    assert curve["val"] == [{"step": 100, "AP": 0.1}, {"step": 200, "AP": 0.4}]
    assert read_metrics(str(tmp_path / "none")) == {"train": [], "val": []}
    (tmp_path / "metrics.jsonl").write_text('{"split": "train"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_metrics(str(tmp_path))


@pytest.mark.parametrize("name", ["quickstart", "synthetic_long"])
def test_synthetic_configs_are_consistent(name):
    from mrpose_tf.data.synthetic import DIFFICULTIES
    from mrpose_tf.export.exporter import parse_formats
    from mrpose_tf.models import ARCHITECTURES

    from mrpose_tf.config import load_config

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py"))
    height, width = config.model.input_size
    assert height % 32 == 0 and width % 32 == 0
    assert tuple(config.model.heatmap_size) == (height // 4, width // 4)
    assert config.model.arch in ARCHITECTURES and config.model.backbone_weights is None
    assert config.dataset.name == "synthetic" and config.test.use_gt_boxes
    assert config.dataset.synthetic.difficulty in DIFFICULTIES
    assert set(parse_formats(config.finish.export_formats)) == {
        "saved_model", "tflite_fp32", "tflite_int8"}
    if config.train.lr_schedule == "step":  # the rate drops before the run ends
        assert max(config.train.lr_steps) < config.train.epochs
    else:  # a warm-up shorter than the run, a decay that ends at 0 on the last step
        from mrpose_tf.training import learning_rate_schedule

        schedule = learning_rate_schedule(config.train, steps_per_epoch=100)
        assert float(schedule(config.train.epochs * 100)) == pytest.approx(0.0, abs=1e-9)


def test_learning_curve_plots_the_runs_points_and_writes_a_png(tmp_path):
    import cv2

    from mrpose_tf.plots import plot_learning_curve

    curve = {"train": [{"step": s, "loss": 0.1 / s} for s in (10, 20, 40)],
             "val": [{"step": 20, "AP": 0.25, "PCK": 0.5}, {"step": 40, "AP": 0.75, "PCK": 0.9}]}
    path = tmp_path / "curve.png"
    figure = plot_learning_curve(curve, str(path), title="run")
    loss_axes, val_axes = figure.axes
    np.testing.assert_allclose(loss_axes.lines[0].get_xydata(), [[10, 0.01], [20, 0.005],
                                                                 [40, 0.0025]])
    assert loss_axes.get_yscale() == "log"  # every loss is positive
    ap, pck = val_axes.lines
    np.testing.assert_allclose(ap.get_xydata(), [[20, 0.25], [40, 0.75]])
    np.testing.assert_allclose(pck.get_xydata(), [[20, 0.5], [40, 0.9]])
    assert [line.get_label() for line in val_axes.lines] == ["AP (COCO OKS)", "heatmap PCK@0.05"]
    assert val_axes.get_ylim() == (0.0, 1.0)
    picture = cv2.imread(str(path))
    assert picture.shape == (600, 900, 3)  # 9 x 6 inches at 100 dpi


def test_learning_curve_draws_mpii_pckh_percent_as_a_fraction():
    from mrpose_tf.plots import plot_learning_curve

    figure = plot_learning_curve({"train": [], "val": [{"step": 5, "Mean": 87.5}]})
    (mean,) = figure.axes[1].lines
    np.testing.assert_allclose(mean.get_xydata(), [[5, 0.875]])


def test_learning_curve_of_a_run_without_validation_has_only_the_loss():
    from mrpose_tf.plots import plot_learning_curve

    figure = plot_learning_curve({"train": [{"step": 1, "loss": 0.0}, {"step": 2, "loss": 1.0}],
                                  "val": []})
    loss_axes, val_axes = figure.axes
    assert len(loss_axes.lines) == 1 and not val_axes.lines
    assert loss_axes.get_yscale() == "linear"  # a zero loss has no logarithm
