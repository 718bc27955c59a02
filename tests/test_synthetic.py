"""The synthetic keypoint dataset: reproducible, valid COCO, correct left/right and visibility."""
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mrpose_tf.data import synthetic
from mrpose_tf.keypoints import COCO_KEYPOINTS

# Its module fixtures are built once: keep these tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("synthetic")

J = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
SIZE = (240, 320)


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    root = tmp_path_factory.mktemp("easy")
    return synthetic.render_dataset(str(root), 40, "easy", seed=0, image_size=SIZE)


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    root = tmp_path_factory.mktemp("standard")
    return synthetic.render_dataset(str(root), 40, "standard", seed=0, image_size=SIZE)


def _annotations(path):
    with open(path) as f:
        data = json.load(f)
    return data, [(a, np.array(a["keypoints"]).reshape(-1, 3)) for a in data["annotations"]]


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return out


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    for name, seed, n in (("a", 3, 6), ("b", 3, 6), ("c", 4, 6), ("d", 3, 3)):
        synthetic.render_dataset(str(tmp_path / name), n, "standard", seed=seed, image_size=SIZE)
    a, b, c, d = (_files(tmp_path / name) for name in "abcd")
    assert len(a) == 7 and a == b
    assert a["train.json"] != c["train.json"]
    assert all(a[k] != c[k] for k in a if k.endswith(".jpg"))
    # Each image has its own random stream: the first 3 of 6 are the 3 of a 3-image render.
    for k in ("images/train/000001.jpg", "images/train/000003.jpg"):
        assert a[k] == d[k]


def test_json_loads_in_pycocotools_with_valid_keypoints_and_boxes(easy, standard):
    for path in (easy, standard):
        coco = COCO(path)
        assert coco.getCatIds(catNms=["person"]) == [1]
        category = coco.loadCats(1)[0]
        assert category["keypoints"] == list(COCO_KEYPOINTS)
        # COCO's 1-based skeleton, as in the official annotation files.
        assert category["skeleton"][:5] == [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13]]
        assert len(coco.getImgIds()) == 40
        per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
        assert min(per_image) >= 1 and max(per_image) <= 4
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.loadImgs(ann["image_id"])[0]
            kp = np.array(ann["keypoints"]).reshape(17, 3)
            labelled = kp[:, 2] > 0
            assert ann["num_keypoints"] == labelled.sum() > 0
            assert ann["iscrowd"] == 0 and ann["area"] > 0
            assert np.all(kp[~labelled] == 0)
            x, y = kp[labelled, 0], kp[labelled, 1]
            assert np.all((x >= 0) & (x < image["width"]) & (y >= 0) & (y < image["height"]))
            bx, by, bw, bh = ann["bbox"]
            assert np.all((x >= bx) & (x <= bx + bw) & (y >= by) & (y <= by + bh)), ann["id"]
            assert bx >= 0 and by >= 0 and bx + bw <= image["width"] and by + bh <= image["height"]


def test_left_joints_are_the_persons_left(easy, standard):
    """COCO's 'left' is the person's: on the image's right when the figure faces the camera."""
    checked = {"front": 0, "back": 0}
    for path in (easy, standard):
        _, anns = _annotations(path)
        for ann, kp in anns:
            if ann["facing"] not in checked:
                continue
            sign = 1 if ann["facing"] == "front" else -1
            for part in ("shoulder", "hip"):
                left, right = kp[J[f"left_{part}"]], kp[J[f"right_{part}"]]
                if left[2] > 0 and right[2] > 0:
                    assert sign * (left[0] - right[0]) > 0, (path, ann["id"], part)
                    checked[ann["facing"]] += 1
    assert checked["front"] >= 20 and checked["back"] >= 10, checked


def test_easy_limb_colours_are_warm_on_the_left_and_cool_on_the_right(easy):
    """The pixel under each visible limb joint has its side's colour (labels match drawing)."""
    data, anns = _annotations(easy)
    root = os.path.dirname(easy)
    files = {im["id"]: im["file_name"] for im in data["images"]}
    palette = synthetic.EASY_LIMB_COLOURS
    own_side, total = 0, 0
    for ann, kp in anns:
        image = cv2.imread(os.path.join(root, "images", "train", files[ann["image_id"]]))
        rgb = image[..., ::-1].astype(np.float64)
        for side, other in (("left", "right"), ("right", "left")):
            for joint, segment in (("wrist", "forearm"), ("ankle", "shin")):
                x, y, v = kp[J[f"{side}_{joint}"]]
                if v != 2:
                    continue
                pixel = rgb[int(y), int(x)]
                near_own = np.linalg.norm(pixel - palette[f"{side}_{segment}"])
                near_other = np.linalg.norm(pixel - palette[f"{other}_{segment}"])
                own_side += near_own < near_other
                total += 1
    assert total >= 100
    assert own_side / total > 0.95, (own_side, total)


def test_face_is_hidden_on_figures_facing_away(easy, standard):
    nose = {"front": [], "back": []}
    for path in (easy, standard):
        _, anns = _annotations(path)
        for ann, kp in anns:
            if ann["facing"] in nose and kp[J["nose"], 2] > 0:
                nose[ann["facing"]].append(kp[J["nose"], 2] == 2)
    assert len(nose["front"]) >= 20 and len(nose["back"]) >= 10
    assert np.mean(nose["front"]) > 0.7 and np.mean(nose["back"]) < 0.2, nose
    v = np.concatenate([kp[:, 2] for path in (easy, standard) for _, kp in _annotations(path)[1]])
    # Both labelled-but-hidden and out-of-image keypoints occur.
    assert 0.05 < np.mean(v == 1) < 0.5 and np.mean(v == 0) > 0.005


def test_standard_backgrounds_have_more_texture_than_easy(easy, standard):
    def edge_energy(path):
        data, _ = _annotations(path)
        root = os.path.dirname(path)
        energies = []
        for im in data["images"][:15]:
            grey = cv2.imread(os.path.join(root, "images", "train", im["file_name"]),
                              cv2.IMREAD_GRAYSCALE).astype(np.float64)
            energies.append(np.mean(np.abs(cv2.Laplacian(grey, cv2.CV_64F))))
        return np.mean(energies)
    assert edge_energy(standard) > 2.0 * edge_energy(easy)


def test_ensure_renders_once_and_writes_detections(tmp_path):
    root = str(tmp_path / "synthetic")
    synthetic.main(["--output_dir", root, "--num_train", "4", "--num_val", "6", "--seed", "2"])
    paths = synthetic.ensure_synthetic_dataset(root, 4, 6, "easy", seed=2)
    stamp = os.stat(paths["train_annotations"]).st_mtime_ns
    assert synthetic.ensure_synthetic_dataset(root, 4, 6, "easy", seed=2) == paths
    assert os.stat(paths["train_annotations"]).st_mtime_ns == stamp  # not rendered again
    assert sorted(os.listdir(paths["val_images"])) == [f"{i:06d}.jpg" for i in range(1, 7)]

    gt = COCO(paths["val_annotations"])
    detections = gt.loadRes(paths["val_detections"])  # valid COCO detection results
    for ann in gt.loadAnns(gt.getAnnIds()):
        boxes = [d["bbox"] for d in detections.loadAnns(detections.getAnnIds(ann["image_id"]))]
        best = max(_iou(ann["bbox"], b) for b in boxes)
        assert best > 0.5, ann["id"]
    scores = [d["score"] for d in detections.loadAnns(detections.getAnnIds())]
    assert len(scores) >= len(gt.getAnnIds())

    synthetic.ensure_synthetic_dataset(root, 4, 3, "easy", seed=2)  # new parameters: re-render
    assert len(COCO(paths["val_annotations"]).getImgIds()) == 3
    assert sorted(os.listdir(paths["val_images"])) == [f"{i:06d}.jpg" for i in range(1, 4)]


def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="difficulty"):
        synthetic.render_dataset(str(tmp_path), 2, "hard")
    with pytest.raises(ValueError, match="num_images"):
        synthetic.render_dataset(str(tmp_path), 0)
