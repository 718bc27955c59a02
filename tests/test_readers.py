"""COCO / MPII readers on the real samples, and their handling of bad input."""
import json
import os
import shutil

import numpy as np
import pytest

from mrpose_tf.data.coco import read_coco
from mrpose_tf.data.mpii import read_mpii
from mrpose_tf.keypoints import COCO

ASPECT = 192 / 256


def coco_files(coco_sample_dir):
    return os.path.join(coco_sample_dir, "test_coco.json"), coco_sample_dir


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def test_coco_record_counts_and_hand_checked_person(coco_sample_dir):
    ann, images = coco_files(coco_sample_dir)
    train, spec = read_coco(ann, images, train=True, aspect_ratio=ASPECT)
    test, _ = read_coco(ann, images, train=False, aspect_ratio=ASPECT)
    # 14 people; 1202706 and 508900 have no labelled keypoint: dropped for training only.
    assert len(train) == 12 and len(test) == 14
    assert (spec.names, spec.flip_pairs, spec.sigmas) == (COCO.names, COCO.flip_pairs, COCO.sigmas)
    person = test[0]  # annotation 442619, image 785 (640 x 425), bbox [280.79, 44.73, 218.7, 346.68]
    # Clipped box: w = 217.7, h = 345.68 (w - 1, h - 1 inside the image); centre = x + w/2.
    # w < 0.75 h -> w = 0.75 * 345.68 = 259.26; scale = (259.26, 345.68) / 200 * 1.25.
    assert person.image_id == 785
    assert person.image_path == os.path.join(images, "000000000785.jpg")
    np.testing.assert_allclose(person.center, [389.64, 217.57], atol=1e-3)
    np.testing.assert_allclose(person.scale, [1.620375, 2.1605], atol=1e-5)
    np.testing.assert_allclose(person.bbox, [280.79, 44.73, 217.7, 345.68], atol=1e-3)
    raw = json.load(open(ann))["annotations"][0]["keypoints"]
    np.testing.assert_allclose(person.joints, np.reshape(raw, (17, 3))[:, :2])
    np.testing.assert_array_equal(person.visibility, np.minimum(1, np.reshape(raw, (17, 3))[:, 2]))
    assert person.box_score == 1.0 and person.area == pytest.approx(27789.11055)


def test_coco_detections_threshold_and_category(coco_sample_dir, tmp_path):
    ann, images = coco_files(coco_sample_dir)
    det_file = os.path.join(coco_sample_dir, "test_coco_det_AP_H_56.json")
    dets = json.load(open(det_file))
    records, _ = read_coco(ann, images, train=False, aspect_ratio=ASPECT, detections=det_file)
    assert len(records) == len(dets) == 118
    kept, _ = read_coco(ann, images, train=False, aspect_ratio=ASPECT, detections=det_file,
                        image_thre=0.5)
    assert len(kept) == sum(d["score"] >= 0.5 for d in dets) < 118
    assert all(r.box_score >= 0.5 for r in kept)
    # A non-person detection is ignored.
    other = write_json(tmp_path / "det.json", dets[:3] + [dict(dets[0], category_id=2)])
    assert len(read_coco(ann, images, train=False, aspect_ratio=ASPECT, detections=other)[0]) == 3


def test_coco_detection_errors_name_file_and_id(coco_sample_dir, tmp_path):
    ann, images = coco_files(coco_sample_dir)
    bad = write_json(tmp_path / "det.json", [{"image_id": 12345, "category_id": 1,
                                              "bbox": [1, 2, 3, 4], "score": 0.9}])
    with pytest.raises(ValueError, match=r"det\.json.*12345"):
        read_coco(ann, images, train=False, aspect_ratio=ASPECT, detections=bad)
    empty = write_json(tmp_path / "empty.json", [])
    with pytest.raises(ValueError, match=r"empty\.json holds no detections"):
        read_coco(ann, images, train=False, aspect_ratio=ASPECT, detections=empty)


def test_coco_box_cleaning_drops_outside_and_zero_area(coco_sample_dir, tmp_path):
    ann, images = coco_files(coco_sample_dir)
    data = json.load(open(ann))
    data["annotations"][0]["bbox"] = [700.0, 10.0, 50.0, 50.0]   # right of the 640 px image
    data["annotations"][1]["area"] = 0.0                          # zero area
    data["annotations"][2]["iscrowd"] = 1                         # crowd
    # The reference clips the corner but keeps the size: x2 = max(0, x) + w - 1 -> (0, 0, 99, 79).
    data["annotations"][4]["bbox"] = [-40.0, -30.0, 100.0, 80.0]
    path = write_json(tmp_path / "ann.json", data)
    records, _ = read_coco(path, images, train=False, aspect_ratio=ASPECT)
    ids = [r.bbox.tolist() for r in records]
    assert len(records) == 11
    assert [0.0, 0.0, 99.0, 79.0] in ids


def test_coco_custom_keypoint_category(coco_sample_dir, tmp_path):
    ann, images = coco_files(coco_sample_dir)
    data = json.load(open(ann))
    names = ["head", "left_paw", "right_paw", "tail"]
    data["categories"] = [{"id": 7, "name": "cat", "keypoints": names, "skeleton": [[1, 2], [1, 3]]}]
    for a in data["annotations"]:
        a["category_id"] = 7
        a["keypoints"] = a["keypoints"][:12]
    path = write_json(tmp_path / "cats.json", data)
    records, spec = read_coco(path, images, train=True, aspect_ratio=ASPECT)
    assert spec.names == tuple(names) and spec.flip_pairs == ((1, 2),)
    assert spec.skeleton == ((0, 1), (0, 2)) and len(spec.sigmas) == 4
    assert records and all(r.joints.shape == (4, 2) for r in records)
    _, spec = read_coco(path, images, train=True, aspect_ratio=ASPECT, flip_pairs=[[0, 3]])
    assert spec.flip_pairs == ((0, 3),)


def test_bad_annotation_files_name_the_path(coco_sample_dir, tmp_path):
    ann, images = coco_files(coco_sample_dir)
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(missing, images, train=True, aspect_ratio=ASPECT)
    with pytest.raises(FileNotFoundError, match="no_images"):
        read_coco(ann, str(tmp_path / "no_images"), train=True, aspect_ratio=ASPECT)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        read_coco(str(broken), images, train=True, aspect_ratio=ASPECT)
    data = json.load(open(ann))
    del data["annotations"][3]["bbox"]
    path = write_json(tmp_path / "nobox.json", data)
    with pytest.raises(ValueError, match=r"nobox\.json: annotations\[3\] \(id 1202706\) has no "
                                         r"field 'bbox'"):
        read_coco(path, images, train=False, aspect_ratio=ASPECT)
    data = json.load(open(ann))
    data["annotations"][0]["keypoints"] = [1, 2, 2]
    path = write_json(tmp_path / "short.json", data)
    with pytest.raises(ValueError, match=r"short\.json: annotations\[0\].*'keypoints' has 3"):
        read_coco(path, images, train=False, aspect_ratio=ASPECT)


def test_mpii_records_and_hand_checked_person(mpii_sample_dir):
    ann = os.path.join(mpii_sample_dir, "test_mpii.json")
    records, spec = read_mpii(ann, mpii_sample_dir)
    assert len(records) == 5 and spec.num_joints == 16
    first = records[0]  # 005808361.jpg: center (966, 340), scale 4.718488, joint 0 (804, 711)
    # centre y += 15 * 4.718488 = 70.77732; scale * 1.25 = 5.89811; then -1 (0-based).
    np.testing.assert_allclose(first.center, [965.0, 409.77732], atol=1e-4)
    np.testing.assert_allclose(first.scale, [5.89811, 5.89811], atol=1e-5)
    np.testing.assert_allclose(first.joints[0], [803.0, 710.0])
    assert first.image_path == os.path.join(mpii_sample_dir, "005808361.jpg")
    assert first.visibility.shape == (16,) and first.image_id == 0


def test_mpii_bad_entries_name_file_and_field(mpii_sample_dir, tmp_path):
    data = json.load(open(os.path.join(mpii_sample_dir, "test_mpii.json")))
    del data[2]["center"]
    path = write_json(tmp_path / "m.json", data)
    with pytest.raises(ValueError, match=r"m\.json: entry \[2\] has no field 'center'"):
        read_mpii(path, mpii_sample_dir)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_mpii(str(tmp_path / "absent.json"), mpii_sample_dir)


def test_unlabelled_person_dropped_in_training_kept_for_gt_testing(coco_sample_dir, tmp_path):
    shutil.copy(os.path.join(coco_sample_dir, "000000000785.jpg"), tmp_path)
    data = json.load(open(os.path.join(coco_sample_dir, "test_coco.json")))
    data["images"] = data["images"][:1]
    ann = dict(data["annotations"][0], keypoints=[0] * 51, num_keypoints=0)
    data["annotations"] = [data["annotations"][0], ann]
    path = write_json(tmp_path / "a.json", data)
    assert len(read_coco(path, str(tmp_path), train=True, aspect_ratio=ASPECT)[0]) == 1
    kept = read_coco(path, str(tmp_path), train=False, aspect_ratio=ASPECT)[0]
    assert len(kept) == 2 and kept[1].visibility.sum() == 0
