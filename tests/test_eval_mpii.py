"""MPII PCKh on hand-made ground-truth files in the official gt_valid.mat layout."""
import numpy as np
import pytest
from scipy.io import savemat

import mrpose_tf

JOINTS = ["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head",
          "rwri", "relb", "rsho", "lsho", "lelb", "lwri"]
J = {name: i for i, name in enumerate(JOINTS)}
N = 4
MISSING = [("head", 3), ("lwri", 2), ("lwri", 3)]
# x offsets (px) of the predictions from the ground truth, per joint and person. Every head
# box has a 50 px diagonal: head size 30, so PCKh@0.5 allows 15 px and row 11 of the curve
# (threshold 0.11) allows 3.3 px.
OFFSETS = {
    "head": [0, 14, 16, 99], "lsho": [3.5] * 4, "rsho": [20, 0, 0, 0],
    "lelb": [16, 16, 0, 0], "relb": [3.2] * 4, "lwri": [0, 16, 99, 99], "rwri": [16] * 4,
    "lhip": [0] * 4, "rhip": [0] * 4, "lkne": [0, 0, 0, 16], "rkne": [0] * 4,
    "lank": [16] * 4, "rank": [14.9, 0, 0, 0], "pelv": [100] * 4, "thor": [100] * 4,
    "neck": [0] * 4,
}


def _write_gt(path, positions_1based, missing, head_corners):
    savemat(path, {
        "dataset_joints": np.array([JOINTS], dtype=object),         # 1 x 16 cell array
        "jnt_missing": missing.astype(np.float64),                  # 16 x N
        "pos_gt_src": np.transpose(positions_1based, [1, 2, 0]),    # 16 x 2 x N
        "headboxes_src": head_corners,                              # 2 x 2 x N
    })


@pytest.fixture()
def gt_case(tmp_path):
    rng = np.random.default_rng(0)
    positions = rng.uniform(50, 400, size=(N, 16, 2))
    missing = np.zeros((16, N))
    for name, person in MISSING:
        missing[J[name], person] = 1
    top_left = rng.uniform(0, 300, size=(2, N))
    head = np.stack([top_left, top_left + np.array([[30.0], [40.0]])])  # diagonal 50
    path = str(tmp_path / "gt_valid.mat")
    _write_gt(path, positions, missing, head)
    return path, positions


def test_perfect_predictions_give_pckh_100(gt_case):
    path, positions = gt_case
    result = mrpose_tf.evaluate_mpii(positions - 1.0, path)   # 0-based predictions
    assert list(result) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle",
                            "Mean", "Mean@0.1"]
    for name, value in result.items():
        assert value == pytest.approx(100.0), name


def test_hand_computed_pckh(gt_case):
    path, positions = gt_case
    preds = positions - 1.0
    for name, offsets in OFFSETS.items():
        preds[:, J[name], 0] += offsets
    result = mrpose_tf.evaluate_mpii(preds, path)
    # Correct / visible per joint at 0.5: head 2/3, lsho 4/4, rsho 3/4, lelb 2/4, relb 4/4,
    # lwri 1/2, rwri 0/4, hips 4/4, lkne 3/4, rkne 4/4, lank 0/4, rank 4/4.
    expected = {"Head": 200 / 3, "Shoulder": (100 + 75) / 2, "Elbow": (50 + 100) / 2,
                "Wrist": (50 + 0) / 2, "Hip": 100.0, "Knee": (75 + 100) / 2,
                "Ankle": (0 + 100) / 2}
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name
    # Mean over the 14 joints other than pelvis/thorax, weighted by visible counts (53):
    # 39 correct joints in all (neck 4/4 included).
    assert result["Mean"] == pytest.approx(100 * 39 / 53, abs=1e-9)
    # The reference's Mean@0.1 is row 11 of its 0.01-step curve, i.e. threshold 0.11
    # (3.3 px): rank 3, rkne 4, hips 8, lkne 3, neck 4, head 1, relb 4 (3.2 px),
    # rsho 3, lelb 2, lwri 1 = 33 correct.
    assert result["Mean@0.1"] == pytest.approx(100 * 33 / 53, abs=1e-9)


def test_pckh_scales_with_the_head_box(tmp_path, gt_case):
    """Doubling the whole scene (people and head boxes) keeps every PCKh."""
    path, positions = gt_case
    preds = positions - 1.0
    for name, offsets in OFFSETS.items():
        preds[:, J[name], 0] += offsets
    base = mrpose_tf.evaluate_mpii(preds, path)
    from scipy.io import loadmat
    gt = loadmat(path)
    doubled = str(tmp_path / "doubled.mat")
    _write_gt(doubled, positions * 2, gt["jnt_missing"], gt["headboxes_src"] * 2)
    scaled = mrpose_tf.evaluate_mpii((preds + 1.0) * 2 - 1.0, doubled)
    for name in base:
        assert scaled[name] == pytest.approx(base[name], abs=1e-9), name


def test_evaluate_mpii_bad_inputs(gt_case, tmp_path):
    path, positions = gt_case
    with pytest.raises(ValueError, match="do not match"):
        mrpose_tf.evaluate_mpii(positions[:3], path)
    bad = str(tmp_path / "bad.mat")
    savemat(bad, {"jnt_missing": np.zeros((16, 1))})
    with pytest.raises(ValueError, match="lacks"):
        mrpose_tf.evaluate_mpii(positions[:1], bad)


def test_a_joint_type_nobody_has_is_absent_and_left_out_of_the_means(tmp_path, gt_case):
    """Both ankles missing for every person: the reference's Mean would be NaN."""
    from scipy.io import loadmat

    from mrpose_tf.evaluation.runner import format_metrics_table

    path, positions = gt_case
    gt = loadmat(path)
    missing = gt["jnt_missing"].copy()
    missing[[J["lank"], J["rank"]]] = 1
    no_ankles = str(tmp_path / "no_ankles.mat")
    _write_gt(no_ankles, positions, missing, gt["headboxes_src"])
    preds = positions - 1.0
    for name, offsets in OFFSETS.items():
        preds[:, J[name], 0] += offsets
    result = mrpose_tf.evaluate_mpii(preds, no_ankles)
    assert result["Ankle"] is None
    # test_hand_computed_pckh's counts without the 8 ankles (4 of them correct at 0.5, 3 of
    # them at 0.11): 35 of 45 and 30 of 45.
    assert result["Mean"] == pytest.approx(100 * 35 / 45, abs=1e-9)
    assert result["Mean@0.1"] == pytest.approx(100 * 30 / 45, abs=1e-9)
    assert result["Head"] == pytest.approx(200 / 3, abs=1e-9)
    assert format_metrics_table(result).splitlines()[2].split(" | ")[7] == "-"  # Ankle
    # One ankle labelled: its group is that ankle alone (rank: 4 of 4 within 15 px).
    missing[J["rank"]] = 0
    _write_gt(no_ankles, positions, missing, gt["headboxes_src"])
    assert mrpose_tf.evaluate_mpii(preds, no_ankles)["Ankle"] == pytest.approx(100.0)
